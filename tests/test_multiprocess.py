"""Two service processes sharing Redis: the limits hold across them, each email leaves once."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, TEST_SECRET
from tests.support import ServiceProcess, clean_env, console_emails, unique_email

SEND = "/api/v1/auth/otp/send"


@pytest.fixture
def two_services(database_url: str, key_prefix: str, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    env = clean_env(
        OTP_DATABASE_URL=database_url,
        OTP_REDIS_URL=REDIS_URL,
        OTP_REDIS_KEY_PREFIX=key_prefix,
        OTP_SECRET_KEY=TEST_SECRET,
        OTP_THROTTLE_RATES='{"otp_send": "100000/minute", "otp_verify": "100000/minute"}',
        OTP_GLOBAL_DAILY_LIMITS='{"email": 30}',
        OTP_SEND_RATE="1000",
    )
    services = [ServiceProcess(env, tmp_path, f"svc{i}") for i in range(2)]
    try:
        for s in services:
            s.wait_ready()
        yield services
    finally:
        for s in services:
            s.stop()


def _emails(services: list[ServiceProcess]) -> list[str]:
    return [e.to for s in services for e in console_emails(s.out.read_text())]


async def _wait_for_emails(services: list[ServiceProcess], count: int, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        emails = _emails(services)
        if len(emails) >= count:
            await asyncio.sleep(0.5)  # anything beyond `count` would be a duplicate
            return _emails(services)
        await asyncio.sleep(0.1)
    return _emails(services)


async def test_limits_hold_across_two_processes(two_services: list[ServiceProcess]) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        one = unique_email()
        hammer = await asyncio.gather(
            *(http.post(two_services[i % 2].url + SEND, json={"email": one}) for i in range(200))
        )
        assert [r.status_code for r in hammer].count(202) == 1

        distinct = [unique_email() for _ in range(150)]
        results = await asyncio.gather(
            *(http.post(two_services[i % 2].url + SEND, json={"email": e}) for i, e in enumerate(distinct))
        )
    statuses = [r.status_code for r in results]
    assert statuses.count(202) == 29  # the cap is 30 and `one` took a slot
    assert {r.json()["code"] for r in results if r.status_code == 503} == {"global_limit"}
    accepted = {one} | {e for e, r in zip(distinct, results, strict=True) if r.status_code == 202}
    emails = await _wait_for_emails(two_services, 30)
    assert sorted(emails) == sorted(accepted)
