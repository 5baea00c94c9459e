"""Redis killed (SIGKILL) mid-traffic and started again, a real redis-server process of the
test's own: with the persistence the README prescribes for production (AOF, appendfsync
always), every job accepted before the kill is delivered exactly once after the restart; without
persistence the service recovers by itself (503s while Redis is down, never a 500; /readyz says
so; the worker carries on)."""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otp_service.assembly import WorkerOptions, open_infrastructure, running_worker
from otp_service.settings import Settings
from tests.redis_servers import redis_server
from tests.support import console_emails, unique_email

SEND = "/api/v1/auth/otp/send"
WIDE = {"otp_send": "10000/minute", "otp_verify": "10000/minute", "otp_send_subnet": "10000/minute",
        "otp_verify_subnet": "10000/minute"}  # fmt: skip


def settings_on(make_settings: Callable[..., Settings], url: str, **overrides: Any) -> Settings:
    return make_settings(redis_url=url, conversion_min_sends=1_000_000, throttle_rates=WIDE,
                         dependency_timeout=1, **overrides)  # fmt: skip


async def test_with_aof_always_every_accepted_send_survives_a_kill(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    with redis_server(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always") as redis:
        settings = settings_on(make_settings, redis.url, worker_enabled=False)
        accepted: list[str] = []
        async with open_app(settings) as app:

            async def send(email: str) -> None:
                res = await app.http.post(SEND, json={"email": email})
                if res.status_code == 202:
                    accepted.append(email)
                else:
                    assert res.status_code == 503, res.text

            # Traffic, and the kill in the middle of it: requests in flight as it lands.
            sending = asyncio.gather(*(send(unique_email()) for _ in range(300)))
            async with asyncio.timeout(10):
                while len(accepted) < 30:
                    await asyncio.sleep(0.005)
            redis.kill()  # with requests in flight (how many, the machine's load decides)
            await sending
            redis.start()
            async with (
                open_infrastructure(settings) as infra,
                running_worker(infra, WorkerOptions(concurrency=8)),
            ):
                sent: Counter[str] = Counter()
                async with asyncio.timeout(60):
                    while set(sent) < set(accepted):
                        await asyncio.sleep(0.1)
                        sent.update(e.to for e in console_emails(capsys.readouterr().out))
                # Every job acknowledged, none pending: none is left that could be delivered again.
                async with asyncio.timeout(60):
                    while (stats := await infra.stores.queue.stats()).waiting or stats.pending:
                        await asyncio.sleep(0.05)
                sent.update(e.to for e in console_emails(capsys.readouterr().out))
    # Every send answered 202 is delivered. A send whose answer the kill cut off (a 503 to the
    # client) may have been written all the same, and is delivered too: never twice.
    assert set(accepted) <= set(sent)
    assert max(sent.values()) == 1  # exactly once


async def test_without_persistence_the_service_recovers_by_itself(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="otp_service")
    with redis_server(tmp_path / "volatile") as redis:
        async with open_app(settings_on(make_settings, redis.url)) as app:  # worker in process
            first = unique_email()
            assert (await app.http.post(SEND, json={"email": first})).status_code == 202
            redis.kill()
            res = await app.http.post(SEND, json={"email": unique_email()})
            assert res.status_code == 503
            assert res.json()["code"] == "unavailable"
            ready = await app.http.get("/readyz")
            assert (ready.status_code, ready.json()["checks"]["redis"]) == (503, "down")
            redis.start()
            after = unique_email()
            started = time.monotonic()
            while (res := await app.http.post(SEND, json={"email": after})).status_code != 202:
                assert res.status_code == 503
                assert time.monotonic() - started < 10
                await asyncio.sleep(0.1)
            assert (await app.http.get("/readyz")).status_code == 200
            sent: list[str] = []
            async with asyncio.timeout(15):  # the worker carries on: the group is created again
                while after not in sent:
                    await asyncio.sleep(0.1)
                    sent += [e.to for e in console_emails(capsys.readouterr().out)]
    messages = [r.getMessage() for r in caplog.records]
    assert "http.unhandled_error" not in messages
