"""`FastRoute`: an APIRoute that answers a well-formed JSON body without FastAPI's per-request
machinery, for the two routes that are the service's traffic (send and verify).

FastAPI's request handler (dependency solving, body parsing through its field machinery,
response validation) costs several times the route's own work on this service's hot path
(README, "Performance"). A FastRoute parses an `application/json` body of at most MAX_BODY
bytes with the route's own pydantic model, resolves the route's dependencies by calling them
with the request (each must take the request alone; FastAPI's dependency overrides are
honoured), calls the same endpoint and renders its result as FastAPI would. Any other request
(another content type, a larger body, a body the model refuses) goes to FastAPI's own handler
for the same endpoint, so malformed requests get FastAPI's validation and exactly its answers.
Errors raised by the endpoint take the app's one error path (api/problems.py) either way.
"""

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from otp_service.errors import ServiceError

MAX_BODY = 4096
"""A well-formed body is well under 400 bytes; a larger one takes FastAPI's own handler."""

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""FastAPI's JSONResponse rendering, built once (json.dumps with options builds one per call)."""


def _is_json(scope: MutableMapping[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.partition(b";")[0].strip().lower() == b"application/json")
    return False


class FastRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        if self.body_field is None:
            raise TypeError(f"{self.path}: a FastRoute takes a JSON body model")
        model: type[BaseModel] = self.body_field.field_info.annotation  # type: ignore[assignment]
        body_name = self.body_field.name
        dependencies: list[tuple[str, Callable[..., Any]]] = []
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
            dependencies.append((sub.name, call))
        endpoint = self.endpoint
        status_code = self.status_code or 200
        exclude_none = self.response_model_exclude_none

        async def handler(request: Request) -> Response:
            if not _is_json(request.scope):
                return await standard(request)
            raw = await request.body()  # cached on the request: FastAPI's handler reads it again
            if len(raw) > MAX_BODY:
                return await standard(request)
            try:
                body = model.model_validate_json(raw)
            except ValidationError:
                return await standard(request)
            overrides = request.app.dependency_overrides
            kwargs: dict[str, Any] = {body_name: body}
            for name, call in dependencies:
                kwargs[name] = await overrides.get(call, call)(request)
            try:
                result = await endpoint(**kwargs)
            except ServiceError as exc:
                # The app's one handler for domain errors renders it, as Starlette's exception
                # wrapper would after the raise had unwound FastAPI's per-request stacks.
                on_error: Callable[[Request, Exception], Awaitable[Response]]
                on_error = request.app.exception_handlers[ServiceError]
                return await on_error(request, exc)
            if isinstance(result, Response):
                return result
            content = result.model_dump(mode="json", exclude_none=exclude_none)
            return Response(_ENCODER.encode(content).encode(), status_code, media_type="application/json")

        return handler
