"""Bodies over the limit are 413 payload_too_large, refused as they arrive: 4 KiB on send and
verify, 64 KiB on the provider-event endpoints (nothing verified, nothing written)."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from otp_service.settings import Settings

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"


def padded(size: int, **fields: str) -> bytes:
    """A well-formed JSON object of exactly `size` bytes."""
    head = "{" + "".join(f'"{k}":"{v}",' for k, v in fields.items()) + '"pad":"'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


async def chunks(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@pytest.fixture
async def app(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    settings = make_settings(
        resend_webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        sns_topic_arns=["arn:aws:sns:us-east-1:1:t"],
    )
    async with open_app(settings) as client:
        yield client


@pytest.mark.parametrize("path", [SEND, VERIFY])
async def test_a_body_over_4_kib_is_413(app: Any, path: str) -> None:
    at_limit = await app.http.post(path, content=padded(4096, email="a@example.org", code="123456"),
                                   headers={"content-type": "application/json"})  # fmt: skip
    assert at_limit.status_code != 413
    for body in (padded(4097, email="a@example.org"), b"{" + b" " * 100_000 + b"}"):
        res = await app.http.post(path, content=body, headers={"content-type": "application/json"})
        assert (res.status_code, res.json()["code"]) == (413, "payload_too_large")
        assert res.headers["content-type"] == "application/problem+json"


async def test_a_chunked_body_without_a_length_is_cut_at_the_limit(app: Any) -> None:
    res = await app.http.post(SEND, content=chunks(padded(10_000, email="a@example.org")),
                              headers={"content-type": "application/json"})  # fmt: skip
    assert (res.status_code, res.json()["code"]) == (413, "payload_too_large")


async def test_oversized_sends_count_against_the_rate(app: Any) -> None:
    for _ in range(3):  # 3/minute
        res = await app.http.post(SEND, content=padded(5000), headers={"content-type": "application/json"})
        assert res.status_code == 413
    res = await app.http.post(SEND, json={"email": "a@example.org"})
    assert (res.status_code, res.json()["code"]) == (429, "rate_limited")


@pytest.mark.parametrize("path", ["/api/v1/auth/resend-events/", "/api/v1/auth/ses-events/"])
async def test_a_provider_event_over_64_kib_is_413_and_nothing_is_written(app: Any, path: str) -> None:
    headers = {
        "content-type": "application/json",
        "svix-id": "msg_1",
        "svix-timestamp": "1",
        "svix-signature": "v1,x",
    }
    count = text("SELECT count(*) FROM webhook_events")  # the database is shared across tests
    async with app.db.connect() as conn:
        before = (await conn.execute(count)).scalar_one()
    res = await app.http.post(path, content=padded(64 * 1024 + 1, Type="Notification"), headers=headers)
    assert (res.status_code, res.json()["code"]) == (413, "payload_too_large")
    async with app.db.connect() as conn:
        assert (await conn.execute(count)).scalar_one() == before
    small = await app.http.post(path, content=padded(60 * 1024, Type="Notification"), headers=headers)
    assert small.status_code == 400  # read whole and verified (and refused: no valid signature)
