"""A Redis that says "not now" answers 503, never 500: each case against a real redis-server
process of the test's own (tests/redis_servers.py), through the HTTP API."""

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otp_service.assembly import WorkerOptions, open_infrastructure, running_worker
from otp_service.settings import Settings
from tests.redis_servers import RedisServer, redis_server
from tests.support import console_emails, unique_email

SEND = "/api/v1/auth/otp/send"
WIDE = {"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip


def on(make_settings: Callable[..., Settings], server: RedisServer, **overrides: Any) -> Settings:
    return make_settings(redis_url=server.url, conversion_min_sends=1_000_000, throttle_rates=WIDE,
                         dependency_timeout=2, **overrides)  # fmt: skip


async def assert_unavailable(app: Any, email: str) -> None:
    res = await app.http.post(SEND, json={"email": email})
    assert res.status_code == 503, res.text
    assert res.json()["code"] == "unavailable"
    assert int(res.headers["retry-after"]) > 0


async def test_a_full_redis_refuses_sends_and_delivers_what_it_accepted_once_freed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="otp_service")
    with redis_server(tmp_path / "full", "--maxmemory-policy", "noeviction") as redis:
        settings = on(make_settings, redis, worker_enabled=False)
        accepted = unique_email()
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": accepted})).status_code == 202
            redis.cli("CONFIG", "SET", "maxmemory", "1")  # full, under noeviction: every write is OOM
            await assert_unavailable(app, unique_email())  # the send script is refused whole
            async with (
                open_infrastructure(settings) as infra,
                running_worker(infra, WorkerOptions(concurrency=2)),
            ):
                await asyncio.sleep(1.5)
                assert console_emails(capsys.readouterr().out) == []  # the send-rate token is a write
                redis.cli("CONFIG", "SET", "maxmemory", "0")
                freed = time.monotonic()
                sent: list[str] = []
                while not sent:
                    assert time.monotonic() - freed < 5, "not emailed promptly once memory was freed"
                    await asyncio.sleep(0.05)
                    sent += [e.to for e in console_emails(capsys.readouterr().out)]
            assert sent == [accepted]
    messages = [r.getMessage() for r in caplog.records]
    assert "delivery.job_crashed" not in messages
    assert "http.unhandled_error" not in messages


async def test_a_replica_answers_503(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with (
        redis_server(tmp_path / "primary") as primary,
        redis_server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port)) as replica,
    ):
        async with open_app(on(make_settings, replica, worker_enabled=False)) as app:
            await assert_unavailable(app, unique_email())  # READONLY


async def test_a_long_script_answers_503_and_then_recovers(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with redis_server(tmp_path / "busy", "--busy-reply-threshold", "100") as redis:
        async with open_app(on(make_settings, redis, worker_enabled=False)) as app:
            # Another client's script runs for about two seconds; past 100 ms others get BUSY.
            long = subprocess.Popen(
                ["redis-cli", "-p", str(redis.port), "EVAL", "local i = 0 while i < 2e8 do i = i + 1 end return i", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                redis.wait_for(
                    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
                )
                await assert_unavailable(app, unique_email())
            finally:
                long.wait(timeout=30)
            assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202


async def test_a_redis_still_loading_answers_503(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with redis_server(tmp_path / "loading", "--dbfilename", "big.rdb") as redis:
        redis.cli("EVAL", "for i = 1, 100000 do redis.call('SET', 'k' .. i, 'v') end return 1", "0")
        redis.cli("SAVE")
        redis.kill()
        # Loading slowed to about 4 s (a debug setting of redis-server's): a large dataset.
        redis.args = (
            *redis.args,
            "--key-load-delay",
            "40",
            "--loading-process-events-interval-bytes",
            "1024",
        )
        redis.start(wait=False)
        redis.wait_for("LOADING Redis is loading the dataset in memory")
        async with open_app(on(make_settings, redis, worker_enabled=False)) as app:
            await assert_unavailable(app, unique_email())
            ready = await app.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"] == "down"
