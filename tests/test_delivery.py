"""Delivery: SES against a real moto_server, Resend at the HTTP boundary, failover, retries,
the service-wide send rate, and the worker's reclaim of a dead consumer's job."""

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from aiobotocore.session import get_session
from redis.asyncio import Redis

from otp_service.assembly import WorkerOptions, open_infrastructure, running_worker
from otp_service.delivery.providers.base import OutgoingEmail, PermanentError, RetryableError
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.providers.ses import SesProvider
from otp_service.delivery.sender import Deliverer, DeliveryFailed, acquire
from otp_service.delivery.templates import HEADERS
from otp_service.limits.send_rate import RedisSendRate
from otp_service.redisio import PipelinedRedis, RedisKeys
from otp_service.settings import Settings
from tests.conftest import REDIS_URL
from tests.support import console_emails, embedded_send_rate, redis_queue, unique_email

SENDER = "OTP Service <noreply@example.com>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A real moto_server process speaking the SES v2 wire protocol on loopback."""
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    port = _free_port()
    proc = subprocess.Popen(
        ["moto_server", "-p", str(port), "-H", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/moto-api/data.json", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
async def ses_client(moto_url: str) -> AsyncIterator[Any]:
    async with get_session().create_client("sesv2", region_name="us-east-1", endpoint_url=moto_url) as client:
        with contextlib.suppress(Exception):
            await client.create_email_identity(EmailIdentity="example.com")
        yield client


def moto_messages(moto_url: str, to: str | None = None) -> list[dict[str, Any]]:
    data = httpx.get(moto_url + "/moto-api/data.json").json()
    messages: list[dict[str, Any]] = data.get("ses", {}).get("Message", [])
    if to is not None:
        messages = [m for m in messages if to in m["destinations"]["ToAddresses"]]
    return messages


def email_to(to: str, key: str = "otp-1-0") -> OutgoingEmail:
    return OutgoingEmail(
        to=to, sender=SENDER, subject="OTP Service verification code / 验证码",
        text="Your verification code is: 424242\n", html="<p>424242</p>", idempotency_key=key,
        headers=HEADERS,
    )  # fmt: skip


# --- SES -----------------------------------------------------------------------------------


async def test_ses_sends_both_parts_in_utf8(ses_client: Any, moto_url: str) -> None:
    to = unique_email()
    message_id = await SesProvider(ses_client, configuration_set=None).send(email_to(to))
    [msg] = moto_messages(moto_url, to)
    assert msg["id"] == message_id
    assert msg["subject"] == "OTP Service verification code / 验证码"
    assert msg["source"] == SENDER
    assert "424242" in msg["body"]


async def test_ses_request_carries_the_auto_submitted_header(ses_client: Any, moto_url: str) -> None:
    """What goes on the wire to SES (botocore's before-send event, then moto answers)."""
    bodies: list[bytes] = []

    def capture(request: Any, **_: Any) -> None:
        bodies.append(request.body)

    ses_client.meta.events.register("before-send.sesv2.SendEmail", capture)
    await SesProvider(ses_client, configuration_set=None).send(email_to(unique_email()))
    [body] = bodies
    sent = json.loads(body)
    assert sent["Content"]["Simple"]["Headers"] == [{"Name": "Auto-Submitted", "Value": "auto-generated"}]


async def test_ses_unverified_sender_is_permanent(ses_client: Any) -> None:
    email = OutgoingEmail(to=unique_email(), sender="x@unverified.invalid", subject="s", text="t", html="h",
                          idempotency_key="k")  # fmt: skip
    with pytest.raises(PermanentError, match="MessageRejected"):
        await SesProvider(ses_client, configuration_set=None).send(email)


async def test_ses_endpoint_down_is_retryable() -> None:
    from aiobotocore.config import AioConfig

    config = AioConfig(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
    async with get_session().create_client(
        "sesv2", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{_free_port()}", config=config
    ) as client:
        with pytest.raises(RetryableError, match="network error"):
            await SesProvider(client, configuration_set=None).send(email_to(unique_email()))


# --- failover and retries ------------------------------------------------------------------


class ScriptedResend:
    """An httpx transport answering Resend requests from a script of responses."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]

    def provider(self) -> ResendProvider:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        return ResendProvider(http, api_url="https://api.resend.test", api_key="re_test", timeout=5)


def ok(message_id: str = "re-1") -> httpx.Response:
    return httpx.Response(200, json={"id": message_id})


def err(status: int, name: str = "", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": status, "name": name, "message": name}, headers=headers)


def deliverer(primary: Any, fallback: Any = None, rate: int = 1000) -> Deliverer:
    return Deliverer(
        settings=Settings(), primary=primary, fallback=fallback, send_rate=embedded_send_rate(rate)
    )


async def test_server_error_then_success_reuses_the_idempotency_key() -> None:
    resend = ScriptedResend(err(500, "internal_server_error"), ok("re-42"))
    sent = await deliverer(resend.provider()).send_template(
        "email_otp", "a@example.org", "123456", idempotency_key="otp-99-0", deadline=time.time() + 30
    )
    assert (sent.provider, sent.message_id) == ("resend", "re-42")
    assert [r.headers["idempotency-key"] for r in resend.requests] == ["otp-99-0", "otp-99-0"]


async def test_quota_exhausted_fails_over_to_ses(ses_client: Any, moto_url: str) -> None:
    resend = ScriptedResend(err(429, "daily_quota_exceeded"))
    to = unique_email()
    sent = await deliverer(resend.provider(), SesProvider(ses_client, configuration_set=None)).send_template(
        "email_otp", to, "654321", idempotency_key="otp-7-0", deadline=time.time() + 30
    )
    assert sent.provider == "ses"
    assert len(resend.requests) == 1
    [msg] = moto_messages(moto_url, to)
    assert "654321" in msg["body"]


async def test_rate_limited_waits_retry_after_on_the_same_provider() -> None:
    resend = ScriptedResend(err(429, "rate_limit_exceeded", **{"retry-after": "1"}), ok())
    fallback = ConsoleProvider(io.StringIO())
    started = time.monotonic()
    sent = await deliverer(resend.provider(), fallback).send_template(
        "email_otp", "a@example.org", "123456", idempotency_key="k", deadline=time.time() + 30
    )
    assert sent.provider == "resend"
    assert time.monotonic() - started >= 1.0
    assert len(resend.requests) == 2


async def test_refused_message_is_not_retried_nor_failed_over() -> None:
    resend = ScriptedResend(err(422, "validation_error"))
    out = io.StringIO()
    with pytest.raises(DeliveryFailed) as info:
        await deliverer(resend.provider(), ConsoleProvider(out)).send_template(
            "email_otp", "a@example.org", "123456", idempotency_key="k", deadline=time.time() + 30
        )
    assert info.value.permanent
    assert len(resend.requests) == 1
    assert out.getvalue() == ""


async def test_gives_up_when_the_code_would_expire() -> None:
    resend = ScriptedResend(err(503))
    with pytest.raises(DeliveryFailed) as info:
        await deliverer(resend.provider()).send_template(
            "email_otp", "a@example.org", "123456", idempotency_key="k", deadline=time.time() + 1.5
        )
    assert not info.value.permanent
    assert len(resend.requests) >= 2


# --- the service-wide send rate ----------------------------------------------------------


async def test_send_rate_is_shared_and_never_exceeded(key_prefix: str) -> None:
    """40 provider calls at 10/s through two independent limiters (as two processes would be)."""
    keys = RedisKeys(key_prefix)
    stamps: list[float] = []

    class Recording(RedisSendRate):
        """Records the time each token was granted at (the `now` the bucket decided with):
        stamping after the await would add event-loop scheduling delay to the measurement."""

        async def try_take(self) -> int:
            now = time.time()
            self._clock = lambda: now  # read before the first await inside try_take
            wait = await super().try_take()
            if wait == 0:
                stamps.append(now)
            return wait

    clients = [PipelinedRedis.from_url(REDIS_URL, timeout=2) for _ in range(2)]
    limiters = [Recording(client, keys, rate=10) for client in clients]

    async def call(limiter: RedisSendRate) -> None:
        await acquire(limiter)

    started = time.monotonic()
    try:
        await asyncio.gather(*(call(limiters[i % 2]) for i in range(40)))
    finally:
        for client in clients:
            await client.aclose()
    elapsed = time.monotonic() - started
    assert elapsed >= 3.0  # 10 at once (the burst), then 10 per second
    stamps.sort()
    for i, t0 in enumerate(stamps):
        for window in (0.5, 1.0, 2.0):
            in_window = sum(1 for t in stamps[i:] if t - t0 < window)
            assert in_window <= 10 * (window + 1), (window, in_window)


# --- the worker ----------------------------------------------------------------------------


async def test_job_of_a_dead_consumer_is_reclaimed_and_sent_exactly_once(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], redis: Redis, key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = make_settings(
        worker_enabled=False,
        conversion_min_sends=1_000_000,
        throttle_rates={
            "otp_send": "100/minute",
            "otp_verify": "100/minute",
            "otp_send_subnet": "100/minute",
            "otp_verify_subnet": "100/minute",
        },
    )
    email = unique_email()
    async with open_app(settings) as app, redis_queue(key_prefix) as queue:
        assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
        await queue.ensure_ready()
        # A consumer takes the job and dies before acknowledging it.
        [taken] = await queue.read("dead-consumer", 10, block_ms=100)
        outcomes: list[Any] = []
        async with (
            open_infrastructure(settings) as infra,
            running_worker(
                infra, WorkerOptions(concurrency=4, visibility_timeout=0.3, on_outcome=outcomes.append)
            ),
        ):
            # Sent, and acknowledged: nothing is left pending that a reclaim could send twice.
            async with asyncio.timeout(10):
                while not outcomes or (stats := await queue.stats()).waiting or stats.pending:
                    await asyncio.sleep(0.05)
        assert [(o.job_id, o.status) for o in outcomes] == [(taken.id, "sent")]
        assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]
        stats = await queue.stats()
        assert (stats.waiting, stats.pending) == (0, 0)


# --- end to end through the API ------------------------------------------------------------


async def test_ses_end_to_end_code_arrives_once_within_a_second_and_verifies(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], moto_url: str, ses_client: Any
) -> None:
    settings = make_settings(email_provider="ses", ses_endpoint_url=moto_url)
    email = unique_email()
    async with open_app(settings) as app:
        started = time.monotonic()
        assert (await app.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code == 202
        while not moto_messages(moto_url, email):
            assert time.monotonic() - started < 1.0, "the email did not arrive within a second"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        [msg] = moto_messages(moto_url, email)
        code = re.findall(r">(\d{6})<", msg["body"])[0]
        res = await app.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": code})
        assert res.json() == {"status": "approved", "email": email}


async def test_resend_end_to_end_with_failover_to_ses(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], moto_url: str, ses_client: Any
) -> None:
    settings = make_settings(
        email_provider="resend", email_fallback_provider="ses", resend_api_key="re_test",
        resend_api_url="https://api.resend.test", ses_endpoint_url=moto_url,
    )  # fmt: skip
    first, second = unique_email(), unique_email()
    with respx.mock(assert_all_called=True, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()  # the test's own client to the app
        route = mock.post("https://api.resend.test/emails")
        route.side_effect = [ok("re-ok"), err(500, "internal_server_error"), err(500), err(500), err(500)]
        async with open_app(settings) as app:
            for email in (first, second):
                assert (
                    await app.http.post("/api/v1/auth/otp/send", json={"email": email})
                ).status_code == 202
                started = time.monotonic()
                while True:
                    stats = (await app.web.usage.live()).queue
                    if stats.waiting == 0 and stats.pending == 0:
                        break
                    assert time.monotonic() - started < 1.0
                    await asyncio.sleep(0.02)
        sent_via_resend = [r.request for r in route.calls if r.response.status_code == 200]
    assert len(sent_via_resend) == 1
    assert b"Your verification code is: " in sent_via_resend[0].content
    assert first in sent_via_resend[0].content.decode()
    assert moto_messages(moto_url, first) == []
    assert len(moto_messages(moto_url, second)) == 1


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_a_job_handled_twice_records_one_delivery(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """A reclaimed job that was already recorded (its first consumer died after the insert)
    does not write a second row, on both databases: one INSERT .. ON CONFLICT DO NOTHING."""
    from sqlalchemy import func, select

    from otp_service.db.engine import create_engine, create_sessionmaker, session_scope
    from otp_service.db.migrate import upgrade_engine
    from otp_service.db.models import Delivery
    from otp_service.delivery.repository import DeliveryOutcome, DeliveryRecord, record_outcomes

    url = database_url if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    engine = create_engine(url)
    try:
        if backend == "sqlite":
            await upgrade_engine(engine)
        sessions = create_sessionmaker(engine)
        job_id = f"job-{secrets.token_hex(4)}"
        for message_id in ("first", "second"):
            async with session_scope(sessions) as session:
                await record_outcomes(
                    session,
                    [DeliveryRecord(job_id, "a@example.org", DeliveryOutcome.SENT, "console", message_id)],
                )
        async with sessions() as session:
            rows = (
                await session.execute(select(Delivery.provider_message_id).where(Delivery.job_id == job_id))
            ).all()
            assert [r[0] for r in rows] == ["first"]
            assert await session.scalar(select(func.count()).where(Delivery.job_id == job_id)) == 1
    finally:
        await engine.dispose()


async def test_a_worker_forgets_consumers_gone_for_good(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], redis: Redis, key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A process that read, acknowledged and went away leaves its consumer name in the group;
    a running worker drops it (and keeps one that still holds a job)."""
    caplog.set_level(logging.INFO, logger="otp_service.delivery")
    settings = make_settings(worker_enabled=False)
    async with open_app(settings) as app, redis_queue(key_prefix) as queue:
        for _ in range(2):
            assert (
                await app.http.post("/api/v1/auth/otp/send", json={"email": unique_email()})
            ).status_code == 202
        await queue.ensure_ready()
        [done] = await queue.read("gone-process", 1, block_ms=100)
        await queue.ack(done.id)
        assert len(await queue.read("stalled-process", 1, block_ms=100)) == 1  # held, never acked
        await asyncio.sleep(0.3)
        async with (
            open_infrastructure(settings) as infra,
            running_worker(infra, WorkerOptions(concurrency=1, visibility_timeout=60, forget_idle_after=0.2)),
        ):
            async with asyncio.timeout(5):
                while not any(r.getMessage() == "delivery.consumers_forgotten" for r in caplog.records):
                    await asyncio.sleep(0.05)
        names = {c["name"] for c in await redis.xinfo_consumers(RedisKeys(key_prefix).jobs, "delivery")}
        names = {n.decode() if isinstance(n, bytes) else n for n in names}
        assert "gone-process" not in names
        assert "stalled-process" in names
        [record] = [r for r in caplog.records if r.getMessage() == "delivery.consumers_forgotten"]
        assert record.consumers == ["gone-process"]  # type: ignore[attr-defined]
