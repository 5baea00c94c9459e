"""GET /api/v1/auth/otp/sends/{send_id} (CONTRACT §3, issue 31) through the HTTP API, on Redis
and PostgreSQL and on the embedded default: each status reached through the real paths."""

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from otp_service.redisio import RedisKeys
from otp_service.settings import Settings
from tests.support import unique_email

SEND = "/api/v1/auth/otp/send"
SENDS = "/api/v1/auth/otp/sends"
REVIEWER = "app-review@example.org"
STORES = [{}, {"redis_url": None}]
WIDE = {"otp_send": "1000/minute", "otp_send_subnet": "1000/minute"}


@pytest.fixture(params=STORES, ids=["redis", "embedded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    chosen = dict(request.param)
    if chosen:  # the embedded store, with a database of its own
        chosen["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    return chosen


@pytest.fixture
async def app(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    """No worker: a send stays where send.lua put it."""
    settings = make_settings(
        test_recipients={REVIEWER: "123456"}, conversion_min_sends=1_000_000, throttle_rates=WIDE,
        worker_enabled=False, **store,
    )  # fmt: skip
    async with open_app(settings) as client:
        yield client


async def send(app: Any, email: str, headers: dict[str, str] | None = None) -> str:
    res = await app.http.post(SEND, json={"email": email}, headers=headers or {})
    assert res.status_code == 202, res.text
    send_id: str = res.json()["send_id"]
    return send_id


async def status_of(app: Any, send_id: str) -> str:
    res = await app.http.get(f"{SENDS}/{send_id}")
    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body) == {"status", "updated_at"}
    assert datetime.fromisoformat(body["updated_at"]).utcoffset() is not None  # RFC 3339, a zone
    status: str = body["status"]
    return status


async def test_each_send_gets_a_fresh_id_that_reads_queued(app: Any) -> None:
    email = unique_email()
    first = await send(app, email)
    second = await send(app, unique_email())
    assert first != second
    assert len(first) == 22  # secrets.token_urlsafe(16): 128 bits
    assert await status_of(app, first) == "queued"


async def test_an_idempotent_replay_answers_the_same_send_id(app: Any) -> None:
    email = unique_email()
    key = {"Idempotency-Key": "tap-1"}
    first = await app.http.post(SEND, json={"email": email}, headers=key)
    again = await app.http.post(SEND, json={"email": email}, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_a_test_recipient_shows_delivered(app: Any) -> None:
    assert await status_of(app, await send(app, REVIEWER)) == "delivered"


async def test_an_unknown_id_is_not_found(app: Any) -> None:
    res = await app.http.get(f"{SENDS}/AAAAAAAAAAAAAAAAAAAAAA")
    assert (res.status_code, res.json()["code"]) == (404, "not_found")
    res = await app.http.get(f"{SENDS}/{'x' * 300}")
    assert (res.status_code, res.json()["code"]) == (404, "not_found")


async def test_the_status_is_kept_for_the_code_lifetime_plus_an_hour(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], redis: Redis, key_prefix: str
) -> None:
    async with open_app(make_settings(worker_enabled=False)) as app:
        send_id = await send(app, unique_email())
    ttl = await redis.pttl(RedisKeys(key_prefix).send(send_id))
    assert 300_000 + 3_600_000 - 5_000 < ttl <= 300_000 + 3_600_000


async def test_the_otp_status_rate_applies(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    rates = {**WIDE, "otp_status": "2/minute"}
    async with open_app(make_settings(throttle_rates=rates, worker_enabled=False, **store)) as app:
        send_id = await send(app, unique_email())
        assert await status_of(app, send_id) == "queued"
        await status_of(app, send_id)
        res = await app.http.get(f"{SENDS}/{send_id}")
        assert (res.status_code, res.json()["code"]) == (429, "rate_limited")
        assert int(res.headers["retry-after"]) >= 1
