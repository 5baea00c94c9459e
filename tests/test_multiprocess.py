"""Two service processes sharing Redis: the limits hold across them, each email leaves once."""

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from otp_service.delivery.queue import GROUP
from otp_service.redisio import RedisKeys
from tests.support import ServiceProcess, console_emails, redis_queue, service_env, unique_email

SEND = "/api/v1/auth/otp/send"


@pytest.fixture
def two_services(database_url: str, key_prefix: str, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    env = service_env(
        database_url,
        key_prefix,
        OTP_CONVERSION_MIN_SENDS="1000000",
        OTP_THROTTLE_RATES='{"otp_send": "100000/minute", "otp_verify": "100000/minute", "otp_send_subnet": "100000/minute", "otp_verify_subnet": "100000/minute"}',
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


async def drained(key_prefix: str, timeout: float = 30) -> None:
    """Until the delivery queue of `key_prefix` holds nothing, read or not: no job is left that
    any worker could send (again)."""
    async with redis_queue(key_prefix) as queue, asyncio.timeout(timeout):
        while (stats := await queue.stats()).waiting or stats.pending:
            await asyncio.sleep(0.05)


async def test_limits_hold_across_two_processes(two_services: list[ServiceProcess], key_prefix: str) -> None:
    # 200 requests in flight, 50 connections, no keep-alive: the requests still race across both
    # processes, without 200 sockets at once (a fresh clone under load saw connection resets).
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
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
    # The cap is 30, of which OTP_GLOBAL_RESERVE (10%) is kept for remembered sources, and `one`
    # took a slot.
    assert statuses.count(202) == 26
    assert {r.json()["code"] for r in results if r.status_code == 503} == {"global_limit"}
    accepted = {one} | {e for e, r in zip(distinct, results, strict=True) if r.status_code == 202}
    await drained(key_prefix)
    assert sorted(_emails(two_services)) == sorted(accepted)


def _sent_times(services: list[ServiceProcess]) -> list[float]:
    """Times of provider calls, from the `delivery.sent` log lines of every process."""
    from datetime import datetime

    stamps = []
    for s in services:
        for line in s.err.read_text().splitlines():
            if '"delivery.sent"' in line:
                ts = json.loads(line)["ts"]
                stamps.append(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp())
    return sorted(stamps)


async def test_send_rate_holds_across_two_processes(
    database_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = service_env(
        database_url, key_prefix, OTP_SEND_RATE="10",
        OTP_CONVERSION_MIN_SENDS="1000000", OTP_THROTTLE_RATES='{"otp_send": "100000/minute", "otp_verify": "100000/minute", "otp_send_subnet": "100000/minute", "otp_verify_subnet": "100000/minute"}',
    )  # fmt: skip
    services = [ServiceProcess(env, tmp_path, f"rate{i}") for i in range(2)]
    try:
        for s in services:
            s.wait_ready()
        async with httpx.AsyncClient(timeout=10) as http:
            emails = [unique_email() for _ in range(40)]
            results = await asyncio.gather(
                *(http.post(services[i % 2].url + SEND, json={"email": e}) for i, e in enumerate(emails))
            )
        assert [r.status_code for r in results] == [202] * 40
        deadline = time.monotonic() + 20
        while len(_sent_times(services)) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        for s in services:
            s.stop()
    stamps = _sent_times(services)
    assert len(stamps) == 40
    assert sorted(_emails(services)) == sorted(emails)
    assert stamps[-1] - stamps[0] >= 2.9  # 10 at once (the burst), then 10 per second
    per_process = [
        sum('"delivery.sent"' in line for line in s.err.read_text().splitlines()) for s in services
    ]
    assert all(n > 0 for n in per_process), per_process  # both workers took part
    # Log lines are written just after the call: allow 50 ms of scheduling skew per window edge.
    for i, t0 in enumerate(stamps):
        for window in (1.0, 2.0):
            in_window = sum(1 for t in stamps[i:] if t - t0 < window - 0.05)
            assert in_window <= 10 * (window + 1), (window, in_window)


async def test_sigkilled_process_jobs_are_reclaimed_and_sent_exactly_once(
    database_url: str, key_prefix: str, tmp_path: Path, redis: Redis
) -> None:
    env = service_env(
        database_url, key_prefix, OTP_SEND_RATE="2", OTP_JOB_VISIBILITY_TIMEOUT="1",
        OTP_CONVERSION_MIN_SENDS="1000000", OTP_THROTTLE_RATES='{"otp_send": "100000/minute", "otp_verify": "100000/minute", "otp_send_subnet": "100000/minute", "otp_verify_subnet": "100000/minute"}',
    )  # fmt: skip
    victim, survivor = ServiceProcess(env, tmp_path, "victim"), ServiceProcess(env, tmp_path, "survivor")
    try:
        victim.wait_ready()
        survivor.wait_ready()
        emails = [unique_email() for _ in range(12)]
        async with httpx.AsyncClient(timeout=10) as http:
            for e in emails:
                assert (await http.post(victim.url + SEND, json={"email": e})).status_code == 202
        async with asyncio.timeout(30):  # both workers hold jobs, waiting for send-rate tokens
            while (
                sum(c["pending"] > 0 for c in await redis.xinfo_consumers(RedisKeys(key_prefix).jobs, GROUP))
                < 2
            ):
                await asyncio.sleep(0.05)
        victim.proc.kill()  # SIGKILL: no shutdown, its jobs stay pending in the group
        victim.proc.wait()
        # Every job sent and acknowledged, none left pending: nothing can be sent twice from here.
        await drained(key_prefix)
    finally:
        victim.stop()
        survivor.stop()
    sent = _emails([victim, survivor])
    assert sorted(sent) == sorted(emails)  # every accepted code arrived, none twice
    assert len(_emails([victim])) < len(emails)  # the victim died holding work
    assert '"delivery.reclaimed"' in survivor.err.read_text()  # ...which the survivor took over
