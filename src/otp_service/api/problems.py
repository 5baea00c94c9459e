"""The one error path: every error, whoever raised it, becomes RFC 9457 problem+json with a
stable `code`. Domain code raises `ServiceError`s; FastAPI's validation errors, Starlette's HTTP
errors and unexpected exceptions are mapped here too. No route renders a problem itself."""

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from otp_service.errors import (
    PROBLEM_TYPE_BASE,
    InvalidRequest,
    ServiceError,
)
from otp_service.metrics import REJECTIONS

REPLAYED_HEADER = "Idempotent-Replayed"
"""On an answer repeated for a send's Idempotency-Key."""

log = logging.getLogger("otp_service.api")

RefusalCounter = Callable[[Request], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Malformed:
    """What a route's malformed body answers: its problem, and what counts it first (a send's
    malformed body counts against the caller's send rate and may be 429 instead, §3)."""

    problem: type[InvalidRequest] = InvalidRequest
    count: RefusalCounter | None = None


async def _counted(request: Request, route: Malformed) -> Response | None:
    """Count a refused request against the caller's rates when the route says so: the 429 when
    that is over the rate, else None (answer the refusal itself)."""
    if route.count is None:
        return None
    try:
        await route.count(request)
    except ServiceError as exc:
        return problem_response(exc, request)
    return None


async def _malformed(
    request: Request, routes: dict[str, Malformed], detail: str | None, **extra: Any
) -> Response:
    route = routes.get(instance(request), Malformed())
    limited = await _counted(request, route)
    return limited if limited is not None else problem_response(route.problem(detail, **extra), request)


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


_REJECTED: dict[str, Any] = {}
"""Label children by code, resolved once each."""


def problem_response(exc: ServiceError, request: Request) -> Response:
    """A domain error as problem+json, counted by code."""
    counter = _REJECTED.get(exc.code)
    if counter is None:
        counter = _REJECTED[exc.code] = REJECTIONS.labels(exc.code)
    counter.inc()
    headers = exc.headers()
    if exc.replayed:
        headers = {**headers, REPLAYED_HEADER: "true"}
    return ProblemResponse(exc.to_problem(instance(request)), exc.status, headers=headers)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return problem_response(exc, request)


def _validation_error(routes: dict[str, Malformed]) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        first = errors[0] if errors else None
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else None
        return await _malformed(request, routes, detail, errors=_json_safe(errors))

    return handler


def _allowed_methods(request: Request) -> str | None:
    """Starlette answers 405 with the methods of the first route on the path only; several
    routes share a path here (one per method), so list them all, from the OpenAPI paths."""
    app = request.app
    table: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            table.append((pattern, ", ".join(sorted(m.upper() for m in operations))))
        app.state.allowed_methods = table
    path = instance(request)
    return next((methods for pattern, methods in table if pattern.match(path)), None)


def _http_error(routes: dict[str, Malformed]) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # An undecodable body is a malformed body: the contract's 422.
            return await _malformed(request, routes, "body: not valid JSON text")
        if exc.status_code == 413:  # an oversized send counts against the caller's rates too (§3)
            limited = await _counted(request, routes.get(instance(request), Malformed()))
            if limited is not None:
                return limited
        return _http_problem(request, exc)

    return handler


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


def install_problem_handlers(app: FastAPI, malformed: dict[str, Malformed]) -> None:
    """The app's error handlers; `malformed` names, by path, the routes whose malformed bodies
    answer something more specific than `invalid_request`."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error(malformed))
    app.add_exception_handler(StarletteHTTPException, _http_error(malformed))
    app.add_exception_handler(Exception, _unhandled)


def problem_openapi(app: FastAPI) -> None:
    """Document every error response as application/problem+json with the Problem schema
    (FastAPI documents its own 422 as application/json)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            for status, response in operation.get("responses", {}).items():
                if not status.isdigit() or int(status) < 400:
                    continue
                content = response.setdefault("content", {})
                problem = content.pop("application/json", None) or {}
                entry = content.setdefault(PROBLEM_MEDIA_TYPE, {})
                entry["schema"] = problem_ref
                if "examples" not in entry and "example" in problem:
                    entry["example"] = problem["example"]
            if "422" not in operation.get("responses", {}) and operation.get("requestBody"):
                operation["responses"]["422"] = {
                    "description": "`invalid_request`",
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}},
                }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" not in components:
            from otp_service.api.schemas import Problem

            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
