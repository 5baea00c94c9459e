"""A local stand-in for Resend's `POST /emails` (bench only): answers 200 with a message id and
counts what it took; `GET /count` reads the count. Plain ASGI, so its own cost stays small."""

import itertools
import json
from typing import Any

_count = itertools.count(1)
_taken = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _taken
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "POST" and scope["path"] == "/emails":
        _taken = next(_count)
        body = json.dumps({"id": f"fake-{_taken}"}).encode()
    else:
        body = json.dumps({"count": _taken}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})
