"""Turn every error into RFC 9457 problem+json with a stable `code`."""

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from otp_service.errors import (
    PROBLEM_TYPE_BASE,
    InvalidEmail,
    InvalidRequest,
    ServiceError,
)
from otp_service.metrics import REJECTIONS

log = logging.getLogger("otp_service.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Routes whose malformed body has a more specific code than `invalid_request`.
_VALIDATION_CODES: dict[str, type[InvalidRequest]] = {"/api/v1/auth/otp/send": InvalidEmail}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def problem_response(exc: ServiceError, request: Request | None = None) -> ProblemResponse:
    instance = request.url.path if request is not None else None
    REJECTIONS.labels(exc.code).inc()
    return ProblemResponse(exc.to_problem(instance), status_code=exc.status, headers=exc.headers())


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


async def _service_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ServiceError)
    return problem_response(exc, request)


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    cls = _VALIDATION_CODES.get(request.url.path, InvalidRequest)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    first = errors[0] if errors else None
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else None
    return problem_response(cls(detail, errors=_json_safe(errors)), request)


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": str(exc.detail),
        "status": exc.status_code,
        "detail": str(exc.detail),
        "code": code,
        "instance": request.url.path,
    }
    return ProblemResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unhandled(request: Request, exc: Exception) -> ProblemResponse:
    log.error("http.unhandled_error", exc_info=exc, extra={"path": request.url.path})
    body = ServiceError("An unexpected error occurred").to_problem(request.url.path)
    return ProblemResponse(body, status_code=500)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
