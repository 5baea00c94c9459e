"""Per request, once: the request id and the client's identity, stored in the ASGI scope.

The request id is the caller's X-Request-ID when it looks like one, else a new one; it is on
every response and every log line of the request. The app (app.OtpApp) puts this middleware
outside Starlette's ServerErrorMiddleware, so the 500s it answers carry the id too.
"""

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otp_service.logs import app_var, request_id_var
from otp_service.metrics import SERVER_ERRORS
from otp_service.net import Network, Prefixes, resolve

CLIENT_KEY = "otp.client"

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


_PROCESS_ID = os.urandom(8).hex()
_sequence = itertools.count()


def request_id_for(incoming: bytes | None) -> str:
    """The caller's X-Request-ID when it looks like one, else a new one: unique, not secret, so a
    random per-process prefix and a counter (32 hex characters) instead of a syscall each."""
    if incoming is not None:
        text = incoming.decode("latin-1")
        if _SAFE_REQUEST_ID.match(text):
            return text
    return f"{_PROCESS_ID}{next(_sequence) & 0xFFFFFFFFFFFFFFFF:016x}"


class RequestContext:
    def __init__(self, app: ASGIApp, *, trusted_proxies: tuple[Network, ...], prefixes: Prefixes) -> None:
        self.app = app
        self._trusted = trusted_proxies
        self._prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        forwarded: list[bytes] = []  # every X-Forwarded-For line, in order: one list (§2a)
        incoming_id = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded.append(value)
            elif name == b"x-request-id" and incoming_id is None:
                incoming_id = value
        request_id = request_id_for(incoming_id)
        peer = scope["client"][0] if scope.get("client") else None
        hops = b",".join(forwarded).decode("latin-1") if forwarded else None
        scope[CLIENT_KEY] = resolve(peer, hops, self._trusted, self._prefixes)
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw_id)]
                if message["status"] >= 500:
                    SERVER_ERRORS.labels(str(message["status"])).inc()
            await send(message)

        token, app_token = request_id_var.set(request_id), app_var.set("")  # an application's route sets it
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            app_var.reset(app_token)
