"""The two hot routes, answered in plain ASGI in front of FastAPI's middleware and router.

Send and verify are the traffic (and the attack surface) of this service. Through FastAPI's
router, request handler and dependency solver a request cost ~300 µs of CPU before our code
ran (0.165 on this machine: a bare endpoint tops out at ~2,500 req/s on one core, the same
body parsed by the same pydantic model in plain ASGI at ~11,500; README "Performance").
So a well-formed request to either route is parsed here with the route's own pydantic model,
answered by the same function the FastAPI route calls (`answer_send`/`answer_verify`), and
never enters FastAPI's middleware stack (another ~10% of the remaining CPU, py-spy).

Anything else passes through to FastAPI untouched, including the body this class already
read (replayed): another method, a Content-Type other than application/json, a body over
4 KiB, a client that went away, and every body the model rejects. So malformed requests get
FastAPI's own validation and exactly the problem+json they always had, and the OpenAPI
document still describes both routes from their FastAPI declarations (api/otp.py). A test
sends the same requests both ways and compares the answers byte for byte.
"""

import logging
import os
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from otp_service.api.answers import Answer, json_bytes, problem_answer, unexpected_error_answer
from otp_service.api.schemas import SendIn, VerifyIn
from otp_service.errors import ServiceError
from otp_service.logs import request_id_var
from otp_service.metrics import REQUESTS
from otp_service.net import client_ip
from otp_service.otp.service import OtpService

log = logging.getLogger("otp_service.api")

SEND_PATH = "/api/v1/auth/otp/send"
VERIFY_PATH = "/api/v1/auth/otp/verify"
MAX_BODY = 4096
"""A well-formed body is well under 400 bytes; a larger one takes the general path."""

_SENDS = REQUESTS.labels("send")
_VERIFIES = REQUESTS.labels("verify")
_PENDING: dict[tuple[int, int], Answer] = {}


async def answer_send(otp: OtpService, body: SendIn, ip: str, path: str) -> Answer:
    try:
        accepted = await otp.send(body.email, ip)
    except ServiceError as exc:
        return problem_answer(exc, path)
    _SENDS.inc()
    # Every accepted (or suppressed) address gets these same bytes: built once.
    key = (accepted.expires_in, accepted.resend_after)
    if (answer := _PENDING.get(key)) is None:
        payload = {"status": "pending", "expires_in": key[0], "resend_after": key[1]}
        answer = _PENDING[key] = Answer(202, json_bytes(payload))
    return answer


async def answer_verify(otp: OtpService, body: VerifyIn, ip: str, path: str) -> Answer:
    try:
        verified = await otp.verify(body.email, body.code, ip)
    except ServiceError as exc:
        return problem_answer(exc, path)
    _VERIFIES.inc()
    out: dict[str, Any] = {"status": "approved", "email": verified.email}
    if verified.token is not None:
        out.update(token=verified.token, token_type="Bearer", expires_in=verified.token_expires_in)  # noqa: S106
    return Answer(200, json_bytes(out))


Handler = Callable[[OtpService, Any, str, str], Awaitable[Answer]]
_ROUTES: dict[str, tuple[type[BaseModel], Handler]] = {
    SEND_PATH: (SendIn, answer_send),
    VERIFY_PATH: (VerifyIn, answer_verify),
}


def _is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.partition(b";")[0].strip().lower() == b"application/json"


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed


class OtpApp(FastAPI):
    """FastAPI, with the request id for every request, and the two hot routes answered before
    its middleware stack and router.

    The request id is the caller's X-Request-ID when it looks like one, else a new one; it is
    on every response (the 500s that Starlette's ServerErrorMiddleware answers included,
    which a middleware inside that one could not reach) and on every log line of the request.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        content_type = forwarded_for = incoming_id = None
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"x-forwarded-for" and forwarded_for is None:
                forwarded_for = value
            elif name == b"x-request-id" and incoming_id is None:
                incoming_id = value
        request_id = request_id_for(incoming_id)
        token = request_id_var.set(request_id)
        try:
            route = _ROUTES.get(scope["path"])
            if route is None or scope["method"] != "POST" or not _is_json(content_type):
                await super().__call__(scope, receive, _with_request_id(send, request_id))
                return
            body, messages = await _read_body(route[0], receive)
            if body is None:
                await super().__call__(scope, _replay(messages, receive), _with_request_id(send, request_id))
                return
            answer = await self._answer(route[1], body, scope, forwarded_for)
            headers = [*answer.raw_headers, (b"x-request-id", request_id.encode())]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
        finally:
            request_id_var.reset(token)

    async def _answer(
        self, handler: Handler, body: BaseModel, scope: Scope, forwarded_for: bytes | None
    ) -> Answer:
        try:
            runtime = self.state.runtime
            peer = scope["client"][0] if scope.get("client") else None
            forwarded = forwarded_for.decode("latin-1") if forwarded_for is not None else None
            ip = client_ip(peer, forwarded, runtime.trusted_networks)
            return await handler(runtime.otp, body, ip, scope["path"])
        except Exception as exc:  # as ServerErrorMiddleware with api/problems.py would answer
            log.error("http.unhandled_error", exc_info=exc, extra={"path": scope["path"]})
            return unexpected_error_answer(scope["path"])


async def _read_body(model: type[BaseModel], receive: Receive) -> tuple[BaseModel | None, list[Message]]:
    """The body parsed by the route's model, or None (with what was read) to pass it on."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return None, messages
        if not message.get("more_body", False):
            break
    try:
        return model.model_validate_json(b"".join(m.get("body", b"") for m in messages)), messages
    except ValidationError:
        return None, messages


def _with_request_id(send: Send, request_id: str) -> Send:
    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
        await send(message)

    return send_with_id


_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


def request_id_for(incoming: bytes | None) -> str:
    """The caller's X-Request-ID when it looks like one, else a new random one."""
    if incoming is not None:
        text = incoming.decode("latin-1")
        if _SAFE_REQUEST_ID.match(text):
            return text
    return os.urandom(16).hex()
