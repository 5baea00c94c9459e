"""The two hot routes, answered in plain ASGI in front of FastAPI's router.

Send and verify are the traffic (and the attack surface) of this service. Through FastAPI's
router, request handler and dependency solver a request cost ~300 µs of CPU before our code
ran (0.165 on this machine: a bare endpoint tops out at ~2,500 req/s on one core, the same
body parsed by the same pydantic model in plain ASGI at ~11,500; README "Performance").
So a well-formed request to either route is parsed here with the route's own pydantic model,
answered by the same function the FastAPI route calls (`answer_send`/`answer_verify`), and
never reaches the router.

Anything else passes through to FastAPI untouched, including the body this class already
read (replayed): another method, a Content-Type other than application/json, a body over
4 KiB, a client that went away, and every body the model rejects. So malformed requests get
FastAPI's own validation and exactly the problem+json they always had, and the OpenAPI
document still describes both routes from their FastAPI declarations (api/otp.py). A test
sends the same requests both ways and compares the answers byte for byte.
"""

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otp_service.api.answers import Answer, json_bytes, problem_answer
from otp_service.api.schemas import SendIn, VerifyIn
from otp_service.errors import ServiceError
from otp_service.metrics import REQUESTS
from otp_service.net import client_ip
from otp_service.otp.service import OtpService

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


def _is_json(content_type: bytes) -> bool:
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed


class HotRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type = forwarded_for = None
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"x-forwarded-for" and forwarded_for is None:
                forwarded_for = value
        if content_type is None or not _is_json(content_type):
            await self.app(scope, receive, send)
            return

        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > MAX_BODY or not message.get("more_body", False):
                break
        model, handler = route
        body = None
        if size <= MAX_BODY and messages[-1]["type"] == "http.request" and not messages[-1].get("more_body"):
            raw = (
                messages[0].get("body", b"")
                if len(messages) == 1
                else b"".join(m.get("body", b"") for m in messages)
            )
            try:
                body = model.model_validate_json(raw)
            except ValidationError:
                body = None
        if body is None:
            await self.app(scope, _replay(messages, receive), send)
            return

        runtime = scope["app"].state.runtime
        peer = scope["client"][0] if scope.get("client") else None
        forwarded = forwarded_for.decode("latin-1") if forwarded_for is not None else None
        ip = client_ip(peer, forwarded, runtime.trusted_networks)
        answer = await handler(runtime.otp, body, ip, scope["path"])
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.raw_headers})
        await send({"type": "http.response.body", "body": answer.body})
