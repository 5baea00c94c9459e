"""The one error path: every error, whoever raised it, becomes RFC 9457 problem+json with a
stable `code`. Domain code raises `ServiceError`s; FastAPI's validation errors, Starlette's HTTP
errors and unexpected exceptions are rendered here too. No route renders a problem itself; what
a route answers for a body it cannot take is the route's own policy (api/routing.Refusal)."""

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from otp_service.api.routing import refusal_of
from otp_service.api.state import STATE_KEY, WebState
from otp_service.errors import PROBLEM_TYPE_BASE, ServiceError
from otp_service.logs import Tally, get_logger
from otp_service.metrics import REJECTIONS

REPLAYED_HEADER = "Idempotent-Replayed"
"""On an answer repeated for a send's Idempotency-Key."""

log = logging.getLogger("otp_service.api")


async def _counted(request: Request) -> Response | None:
    """Count a refused request as its route says (api/routing.Refusal): the 429 when that is over
    the caller's rate, else None (answer the refusal itself)."""
    count = refusal_of(request.scope).count
    if count is None:
        return None
    try:
        await count(request)
    except ServiceError as exc:
        return problem_response(exc, request)
    return None


async def _malformed(request: Request, detail: str | None, **extra: Any) -> Response:
    limited = await _counted(request)
    if limited is not None:
        return limited
    return problem_response(refusal_of(request.scope).problem(detail, **extra), request)


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


PROBLEM_MEDIA_TYPE = "application/problem+json"

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Built once: json.dumps with non-default options builds an encoder per call."""


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode()


def instance(request: Request) -> str:
    """The request's path as `request.url.path` gives it, without building and parsing a URL."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


_REJECTED: dict[tuple[str, str], Any] = {}
"""Label children by code and application, resolved once each."""

REFUSALS = Tally(get_logger("api"), "otp.refusals")
"""Every problem answered, by code: one log line per interval (the app's lifespan runs its timer)."""


def _app_of(request: Request) -> str:
    """The configured application a request named (CONTRACT §8), else '': an unknown id in a path
    never becomes a metric label."""
    app = request.scope.get("path_params", {}).get("app")
    if not app:
        return ""
    web = getattr(request.state, STATE_KEY, None)
    return app if isinstance(web, WebState) and app in web.apps else ""


def problem_response(exc: ServiceError, request: Request) -> Response:
    """A domain error as problem+json, counted by code (and application)."""
    shape = (exc.code, _app_of(request))
    counter = _REJECTED.get(shape)
    if counter is None:
        counter = _REJECTED[shape] = REJECTIONS.labels(*shape)
    counter.inc()
    REFUSALS.add(exc.code)
    headers = exc.headers()
    if exc.replayed:
        headers = {**headers, REPLAYED_HEADER: "true"}
    return ProblemResponse(exc.to_problem(instance(request)), exc.status, headers=headers)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return problem_response(exc, request)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    first = errors[0] if errors else None
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else None
    return await _malformed(request, detail, errors=_json_safe(errors))


def _method_table(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """Every route's path pattern and methods, from the app's route table, built once per app."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "method_table", None)
    if table is None:
        table = [
            (compile_path(route.path)[0], route.methods)
            for route in iter_route_contexts(app.routes)
            if route.path and route.methods
        ]
        app.state.method_table = table
    return table


def _allowed_methods(request: Request) -> str | None:
    """Starlette answers 405 with the methods of the first route on the path only; several
    routes share a path here (one per method), so list those of every route on the path."""
    path = get_route_path(request.scope)
    methods = {
        method
        for pattern, route_methods in _method_table(request.app)
        if pattern.match(path)
        for method in route_methods
        if method != "HEAD"  # Starlette's implicit HEAD beside every GET
    }
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # A body FastAPI could not decode (not UTF-8) is a malformed body: the contract's 422.
        return await _malformed(request, "body: not valid JSON text")
    if exc.status_code == 413:  # an oversized body counts as its route says (a send's does, §3)
        limited = await _counted(request)
        if limited is not None:
            return limited
    return _http_problem(request, exc)


def _http_problem(request: Request, exc: StarletteHTTPException) -> Response:
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": str(exc.detail),
        "status": exc.status_code,
        "detail": str(exc.detail),
        "code": code,
        "instance": instance(request),
    }
    return ProblemResponse(body, status_code=exc.status_code, headers=headers)


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.error("http.unhandled_error", exc_info=exc, extra={"path": instance(request)})
    # problem+json that says nothing about what went wrong
    return ProblemResponse(ServiceError("An unexpected error occurred").to_problem(instance(request)), 500)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
