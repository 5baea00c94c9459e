"""The plain-ASGI hot path (api/hot.py) answers exactly as the FastAPI routes do, and hands
everything it does not take to them intact.

Which way a request went is observed through FastAPI's own dependency override of the OTP
routes' one dependency: the hot path never resolves it, the FastAPI routes always do.
"""

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import Request

from otp_service.api.deps import OtpCall, get_otp_call
from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
HOT = {"content-type": "application/json"}
VIA_FASTAPI = {"content-type": "application/vnd.otp+json"}  # JSON to FastAPI, not taken by the hot path


class Routed:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.via_fastapi = 0

        async def counted(request: Request) -> OtpCall:
            self.via_fastapi += 1
            return await get_otp_call(request)

        app.app.dependency_overrides[get_otp_call] = counted

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> tuple[Any, bool]:
        before = self.via_fastapi
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        res = await self.app.http.post(path, content=content, headers=headers)
        return res, self.via_fastapi == before


@pytest.fixture
async def routed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Routed]:
    rates = {"otp_send": "1000/minute", "otp_verify": "1000/minute"}
    async with open_app(make_settings(throttle_rates=rates)) as app:
        yield Routed(app)


def _comparable(res: Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in res.headers.items() if k != "x-request-id"}
    assert res.headers["x-request-id"]
    return res.status_code, res.content, headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (SEND, {"email": "someone@mailinator.com"}),  # disposable
        (SEND, {"email": "someone@gmial.com"}),  # typo
        (SEND, {"email": "not an address"}),  # invalid mailbox, well-formed body
        (VERIFY, {"email": "nobody@example.org", "code": "123456"}),  # no code: expired
        (VERIFY, {"email": "nobody@example.org", "code": "12"}),  # wrong length: not counted
        (VERIFY, {"email": "not an address", "code": "123456"}),
    ],
)
async def test_both_ways_give_the_same_bytes(routed: Routed, path: str, body: Any) -> None:
    hot, took_hot = await routed.post(path, body, HOT)
    slow, took_hot_2 = await routed.post(path, body, VIA_FASTAPI)
    assert (took_hot, took_hot_2) == (True, False)
    assert _comparable(hot) == _comparable(slow)
    assert hot.headers["content-type"] == "application/problem+json"


async def test_accepted_cooldown_and_verified_are_the_same_both_ways(
    routed: Routed, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = []
    for headers in (HOT, VIA_FASTAPI):
        email = unique_email()
        accepted, _ = await routed.post(SEND, {"email": email}, headers)
        cooldown, _ = await routed.post(SEND, {"email": email}, headers)
        await drain(routed.app.app.state.runtime)
        [sent] = console_emails(capsys.readouterr().out)
        wrong, _ = await routed.post(VERIFY, {"email": email, "code": "000000"}, headers)
        verified, took_hot = await routed.post(VERIFY, {"email": email, "code": sent.code}, headers)
        assert took_hot is (headers is HOT)
        assert verified.json() == {"status": "approved", "email": email}
        answers.append([_comparable(r) for r in (accepted, cooldown, wrong)] + [verified.status_code])
    assert answers[0] == answers[1]
    assert answers[0][0][0] == 202
    assert answers[0][1][0] == 429
    assert answers[0][1][2]["retry-after"] == "60"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"email": ', HOT),  # not JSON
        (b"\xff\xfe", HOT),  # not UTF-8
        (b"", HOT),  # empty
        (b'{"email": 42}', HOT),  # wrong type
        (b'{"email": "a@example.org"}', {"content-type": "text/plain"}),
        (b'{"email": "a@example.org"}', {}),  # no content type
        (json.dumps({"email": "x" * 400 + "@example.org"}).encode(), HOT),  # too long for the model
    ],
)
async def test_what_the_model_refuses_gets_fastapis_own_answer(
    routed: Routed, body: bytes, headers: dict[str, str]
) -> None:
    res, _ = await routed.post(SEND, body, headers)
    if headers is HOT:  # the hot path passed it on: the same bytes as FastAPI's answer
        assert _comparable(res) == _comparable((await routed.post(SEND, body, VIA_FASTAPI))[0])
    assert res.status_code == 422
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["code"] == "invalid_email"


async def test_a_large_body_is_replayed_to_fastapi_whole(routed: Routed) -> None:
    email = unique_email()
    padded = b'{"email": "' + email.encode() + b'"' + b" " * 5000 + b"}"
    res, took_hot = await routed.post(SEND, padded, HOT)
    assert (res.status_code, took_hot) == (202, False)
    again, took_hot = await routed.post(SEND, {"email": email}, HOT)
    assert (again.status_code, again.json()["code"], took_hot) == (429, "cooldown", True)


async def test_a_body_in_several_chunks_is_joined(routed: Routed) -> None:
    app = routed.app.app
    chunks = [b'{"ema', b'il": "', unique_email().encode(), b'"}']
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": SEND, "raw_path": SEND.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"otp.test"), (b"content-type", b"application/json; charset=utf-8")],
        "client": ("203.0.113.9", 5000), "server": ("otp.test", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 202
    assert routed.via_fastapi == 0
    assert json.loads(sent[1]["body"]) == {"status": "pending", "expires_in": 300, "resend_after": 60}


async def test_other_methods_and_paths_are_not_taken(routed: Routed) -> None:
    res = await routed.app.http.get(SEND)
    assert res.status_code == 405
    assert res.headers["content-type"] == "application/problem+json"
    res = await routed.app.http.post(SEND + "/", json={"email": unique_email()})
    assert res.status_code in (307, 404)


async def test_the_request_id_is_echoed_or_made(routed: Routed) -> None:
    res, took_hot = await routed.post(SEND, {"email": "x@mailinator.com"}, {**HOT, "x-request-id": "abc-123"})
    assert took_hot
    assert res.headers["x-request-id"] == "abc-123"
    res, _ = await routed.post(SEND, {"email": "x@mailinator.com"}, {**HOT, "x-request-id": "bad id!"})
    assert res.headers["x-request-id"] != "bad id!"
    assert len(res.headers["x-request-id"]) == 32


class _Broken:
    async def send(self, raw_email: str, client_ip: str) -> Any:
        raise RuntimeError("a bug")


async def test_an_unexpected_error_is_the_same_problem_500_both_ways(
    routed: Routed, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault injected behind both ways: the hot path's own error boundary answers as
    Starlette's ServerErrorMiddleware with the app's handler does."""
    runtime = routed.app.app.state.runtime
    runtime.otp, real = _Broken(), runtime.otp
    try:
        hot, took_hot = await routed.post(SEND, {"email": unique_email()}, HOT)
        # Starlette re-raises after answering; this client takes the answer instead.
        transport = httpx.ASGITransport(
            app=routed.app.app, raise_app_exceptions=False, client=("203.0.113.7", 1)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://otp.test") as http:
            slow = await http.post(SEND, content=b'{"email": "a@example.org"}', headers=VIA_FASTAPI)
    finally:
        runtime.otp = real
    assert took_hot
    assert _comparable(hot) == _comparable(slow)
    assert hot.status_code == 500
    assert hot.json()["code"] == "internal_error"
    assert "a bug" not in hot.text
    assert sum(r.message == "http.unhandled_error" for r in caplog.records) == 2
