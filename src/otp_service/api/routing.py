"""`FastRoute`: an APIRoute that answers a well-formed JSON body without FastAPI's per-request
machinery, for the two routes that are the service's traffic (send and verify).

FastAPI's per-request wrapper (a Request, two exit stacks, the exception wrapper, dependency
solving, body parsing through its field machinery, response validation, a Response object)
costs more than the route's own work on this service's hot path (README, "Performance"). The
router still matches the route as for any other; a FastRoute's `handle` then reads an
`application/json` POST body of at most MAX_BODY bytes, parses it with the route's own pydantic
model, resolves the route's dependencies by calling them with the request (each must take the
request alone; FastAPI's dependency overrides are honoured), calls the same endpoint and sends
its result as FastAPI would, byte for byte. Any other request (another method or content type,
a body the model refuses) goes to FastAPI's own handler for the same endpoint, the body
replayed, so malformed requests get FastAPI's validation and exactly its answers. A body over
MAX_BODY is 413 (LimitedRoute).
Errors raised by the endpoint take the app's one error path (api/problems.py) either way.
"""

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from otp_service.errors import InvalidRequest, ServiceError

MAX_BODY = 4096
"""Send and verify: a well-formed body is well under 400 bytes; a larger one is 413."""

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""FastAPI's JSONResponse rendering, built once (json.dumps with options builds one per call)."""

_JSON_TYPE = (b"content-type", b"application/json")


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.partition(b";")[0].strip().lower() == b"application/json")
    return False


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive`, with the messages already read from it handed out again first."""
    pending = iter(messages)

    async def replayed() -> Message:
        return next(pending, None) or await receive()

    return replayed


async def _read_small_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages read, and the whole body; None when it outgrows MAX_BODY or the client left
    (FastAPI then reads on from where this stopped)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


class BodyTooLarge(HTTPException):
    """413: the app's error handler renders it as `payload_too_large` (api/problems.py). A
    FastAPI HTTPException, so FastAPI's body reading passes it through unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"The request body is over {limit} bytes")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    total = 0

    async def counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


RefusalCounter = Callable[[Request], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A route's policy for a body it cannot take (malformed, not JSON, over its size): which
    problem a malformed body answers, and what counts the refusal first (a send's counts against
    the caller's send rate, and may then be 429 instead, §3). The error handler asks the route
    that was matched, so a mount, a root_path or a trailing slash changes nothing."""

    problem: type[InvalidRequest] = InvalidRequest
    count: RefusalCounter | None = None


_REFUSAL_ATTRIBUTE = "__otp_refusal__"
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def refuses(refusal: Refusal) -> Callable[[_Endpoint], _Endpoint]:
    """Declares an endpoint's Refusal, beside the endpoint (put it under the route decorator)."""

    def mark(endpoint: _Endpoint) -> _Endpoint:
        setattr(endpoint, _REFUSAL_ATTRIBUTE, refusal)
        return endpoint

    return mark


def refusal_of(scope: Scope) -> Refusal:
    """The matched route's Refusal (the default one for anything else)."""
    route = scope.get("route")
    refusal = getattr(route, "refusal", None)
    return refusal if isinstance(refusal, Refusal) else Refusal()


class LimitedRoute(APIRoute):
    """An APIRoute whose request body may not exceed `max_body` bytes: 413 payload_too_large,
    through the app's one error path, refused by its Content-Length before anything is read, or
    as the bytes arrive, before anything parses or verifies them. (Starlette's own body limit
    answers a plain-text 413 whenever Content-Length is over, whatever the app's handlers say.)"""

    max_body: ClassVar[int] = 64 * 1024

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.refusal: Refusal = getattr(endpoint, _REFUSAL_ATTRIBUTE, Refusal())

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body:
            raise BodyTooLarge(self.max_body)
        await super().handle(scope, _limited(receive, self.max_body), send)


class FastRoute(LimitedRoute):
    max_body = MAX_BODY

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.body_field is None:
            raise TypeError(f"{self.path}: a FastRoute takes a JSON body model")
        self._model: type[BaseModel] = self.body_field.field_info.annotation  # type: ignore[assignment]
        self._body_name = self.body_field.name
        self._dependencies: list[tuple[str, Callable[..., Any]]] = []
        for sub in self.dependant.dependencies:
            call = sub.call
            if sub.name is None or call is None or not inspect.iscoroutinefunction(call):
                raise TypeError(f"{self.path}: a FastRoute's dependencies are async functions of a parameter")
            if (
                sub.dependencies
                or sub.query_params
                or sub.header_params
                or sub.body_params
                or not sub.request_param_name
            ):
                raise TypeError(f"{self.path}: a FastRoute's dependencies take the request alone")
            self._dependencies.append((sub.name, call))
        # Header parameters of the endpoint itself, passed as the raw value (or None): the
        # endpoint's domain code validates them, so both paths behave alike.
        self._headers = [(p.name, p.alias.lower().encode("latin-1")) for p in self.dependant.header_params]
        if any(p.field_info.metadata for p in self.dependant.header_params):
            raise TypeError(f"{self.path}: a FastRoute's header parameters carry no constraints")
        self._status = self.status_code or 200
        # Path parameters (an application's id, CONTRACT §8), passed as the router matched them.
        self._path_params = [p.name for p in self.dependant.path_params]
        if any(p.field_info.annotation is not str for p in self.dependant.path_params):
            raise TypeError(f"{self.path}: a FastRoute's path parameters are strings")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST" or not _is_json(scope):
            await super().handle(scope, receive, send)
            return
        messages, raw = await _read_small_body(receive)
        if raw is None:  # over MAX_BODY (LimitedRoute refuses it) or the client left
            await super().handle(scope, _replay(messages, receive), send)
            return
        try:
            body = self._model.model_validate_json(raw)
        except ValidationError:
            await super().handle(scope, _replay(messages, receive), send)
            return
        request = Request(scope, receive, send)
        overrides = scope["app"].dependency_overrides
        kwargs: dict[str, Any] = {self._body_name: body}
        for name, header in self._headers:  # a repeated header: the first, as FastAPI reads it
            value = next((v for k, v in scope["headers"] if k == header), None)
            kwargs[name] = None if value is None else value.decode("latin-1")
        for name in self._path_params:
            kwargs[name] = scope["path_params"][name]
        try:
            for name, call in self._dependencies:
                kwargs[name] = await overrides.get(call, call)(request)
            result = await self.endpoint(**kwargs)
        except ServiceError as exc:
            # The app's one handler for domain errors renders it, as Starlette's exception
            # wrapper would.
            on_error: Callable[[Request, Exception], Awaitable[Response]]
            on_error = scope["app"].exception_handlers[ServiceError]
            await (await on_error(request, exc))(scope, receive, send)
            return
        if isinstance(result, Response):
            await result(scope, receive, send)
            return
        content = result.model_dump(mode="json", exclude_none=self.response_model_exclude_none)
        payload = _ENCODER.encode(content).encode()
        headers = [(b"content-length", str(len(payload)).encode()), _JSON_TYPE]
        await send({"type": "http.response.start", "status": self._status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
