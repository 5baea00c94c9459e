"""Resend through httpx.MockTransport: the real provider code, faked at the HTTP boundary."""

import json
from collections.abc import Callable

import httpx
import pytest

from otp_service.delivery.providers.base import (
    OutgoingEmail,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.templates import HEADERS

EMAIL = OutgoingEmail(
    to="user@example.org",
    sender="Acme <noreply@acme.example>",
    subject="Acme verification code / 验证码",
    text="Your verification code is: 123456\n",
    html="<p>123456</p>",
    idempotency_key="otp-1700000000000-0",
    headers=HEADERS,
)


def provider(handler: Callable[[httpx.Request], httpx.Response]) -> ResendProvider:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ResendProvider(http, api_url="https://api.resend.test/", api_key="re_test", timeout=5)


async def test_success_sends_the_documented_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"})

    assert await provider(handler).send(EMAIL) == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"
    [req] = seen
    assert req.method == "POST"
    assert str(req.url) == "https://api.resend.test/emails"
    assert req.headers["authorization"] == "Bearer re_test"
    assert req.headers["idempotency-key"] == "otp-1700000000000-0"
    body = json.loads(req.content)
    assert body == {
        "from": EMAIL.sender,
        "to": [EMAIL.to],
        "subject": EMAIL.subject,
        "text": EMAIL.text,
        "html": EMAIL.html,
        "headers": {"Auto-Submitted": "auto-generated"},
    }


def _error(status: int, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": status, "name": name, "message": name}, headers=headers)


async def test_rate_limit_429_honours_retry_after() -> None:
    p = provider(lambda r: _error(429, "rate_limit_exceeded", {"retry-after": "2"}))
    with pytest.raises(RateLimitedError) as info:
        await p.send(EMAIL)
    assert info.value.retry_after == 2.0


@pytest.mark.parametrize(
    ("status", "name"),
    [(429, "daily_quota_exceeded"), (429, "monthly_quota_exceeded"), (401, "missing_api_key"),
     (403, "invalid_api_key"), (500, "internal_server_error"), (503, "")],
)  # fmt: skip
async def test_account_and_server_errors_are_retryable_not_rate_limits(status: int, name: str) -> None:
    with pytest.raises(RetryableError) as info:
        await provider(lambda r: _error(status, name)).send(EMAIL)
    assert not isinstance(info.value, RateLimitedError)


@pytest.mark.parametrize(("status", "name"), [(422, "validation_error"), (400, "validation_error")])
async def test_refused_message_is_permanent(status: int, name: str) -> None:
    with pytest.raises(PermanentError):
        await provider(lambda r: _error(status, name)).send(EMAIL)


@pytest.mark.parametrize(
    "response",
    [httpx.Response(200, text="not json"), httpx.Response(200, json={"nope": 1}), httpx.Response(200, json=[1]),
     httpx.Response(502, text="<html>bad gateway</html>")],
)  # fmt: skip
async def test_garbage_is_retryable(response: httpx.Response) -> None:
    with pytest.raises(RetryableError):
        await provider(lambda r: response).send(EMAIL)


async def test_network_error_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RetryableError, match="network error"):
        await provider(handler).send(EMAIL)
