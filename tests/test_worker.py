"""The delivery worker: supervised (a crash while handling a job, or in the loop itself, does not
stop delivery), superseded codes never emailed, liveness visible, and `otp-service worker` as a
process of its own beside web processes that run none."""

import asyncio
import contextlib
import io
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from otp_service.assembly import WorkerOptions, open_infrastructure, running_worker
from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.delivery.pace import FIRST_WAIT, SendPace
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.queue import Job, JobQueue, QueueStats
from otp_service.delivery.repository import DeliveryOutcome
from otp_service.delivery.sender import Deliverer, DeliveryFailed, acquire
from otp_service.delivery.worker import DeliveryWorker
from otp_service.metrics import LOOP_LAST_SUCCESS, LOOP_RESTARTS
from otp_service.sealing import Sealer
from otp_service.settings import Settings
from tests.conftest import METRICS_AUTH
from tests.support import (
    ProviderFake,
    ServiceProcess,
    console_emails,
    drain,
    embedded_send_rate,
    service_env,
    unique_email,
)

SEND = "/api/v1/auth/otp/send"
KEY = "admin-key-0123456789-0123456789-01"
WIDE = {
    "otp_send": "1000/minute",
    "otp_verify": "1000/minute",
    "otp_send_subnet": "1000/minute",
    "otp_verify_subnet": "1000/minute",
}


def resend_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(
        **{"email_provider": "resend", "resend_api_key": "re_test", "resend_api_url": "https://api.resend.test",
           "conversion_min_sends": 1_000_000, "throttle_rates": WIDE, **overrides},
    )  # fmt: skip


async def test_a_crash_while_handling_a_job_is_retried_through_the_stream(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otp_service.delivery")
    settings = resend_settings(make_settings, job_visibility_timeout=0.6)
    email, later = unique_email(), unique_email()
    with respx.mock(assert_all_called=True, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()  # the test's own client to the app
        route = mock.post("https://api.resend.test/emails")
        # A bug, not a provider error: the first call raises something no handler expects.
        route.side_effect = [RuntimeError("a bug"), httpx.Response(200, json={"id": "re-1"}),
                             httpx.Response(200, json={"id": "re-2"})]  # fmt: skip
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            await drain(app, timeout=10)
            worker_task = [t for t in asyncio.all_tasks() if t.get_name().startswith("delivery-worker-")]
            assert len(worker_task) == 1
            assert not worker_task[0].done()  # the loop still runs
            assert (await app.http.post(SEND, json={"email": later})).status_code == 202
            await drain(app, timeout=10)
            metrics = (await app.http.get("/metrics", headers=METRICS_AUTH)).text
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("delivery.job_crashed") == 1
    assert "delivery.reclaimed" in messages  # the same job, handed out again
    sent_to = [call.request.content.decode() for call in route.calls[1:]]
    assert email in sent_to[0]
    assert later in sent_to[1]
    assert 'otp_worker_crashes_total{where="job"}' in metrics


def test_a_suppressed_send_waits_one_of_the_recent_sends_durations() -> None:
    """delivery/pace.py: before any send, a draw from FIRST_WAIT; then only durations of the
    last `recent` sends (the older forgotten), each drawn in turn."""
    pace = SendPace(recent=3)
    assert FIRST_WAIT[0] <= pace.draw() <= FIRST_WAIT[1]
    for seconds in (5.0, 0.2, 0.4, 0.6):
        pace.took(seconds)
    assert {pace.draw() for _ in range(200)} == {0.2, 0.4, 0.6}


class AlwaysCurrent:
    """Every job's code is still live."""

    async def is_current(self, address_id: str, code_hash: str) -> bool:
        return True


def one_job_worker(infra: Any, deliverer: Deliverer, codes: Any = None) -> DeliveryWorker:
    """A worker on the infrastructure's stores, for calling `process` on one job directly;
    `deliverer` by default through a console provider of its own."""
    return DeliveryWorker(
        queue=infra.stores.queue, sealer=infra.jobs, codes=codes or AlwaysCurrent(), engine=infra.engine,
        deliverer=deliverer, registry=infra.stores.workers, concurrency=1, visibility_timeout=30, db_timeout=2,
    )  # fmt: skip


def console_deliverer(settings: Settings, out: io.StringIO) -> Deliverer:
    return Deliverer(
        settings=settings, primary=ConsoleProvider(out), fallback=None, send_rate=embedded_send_rate(100)
    )


class FlakyQueue:
    """A queue whose first read raises what no handler expects: a crash of the loop itself."""

    def __init__(self, inner: JobQueue) -> None:
        self.inner = inner
        self.crashed = False

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("a bug in the loop")
        return await self.inner.read(consumer, count, block_ms)

    async def ensure_ready(self) -> None:
        await self.inner.ensure_ready()

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Job]:
        return await self.inner.reclaim(consumer, min_idle_ms, count)

    async def touch(self, consumer: str, job_ids: Sequence[str]) -> None:
        await self.inner.touch(consumer, job_ids)

    async def forget_idle_consumers(self, min_idle_ms: int) -> list[str]:
        return await self.inner.forget_idle_consumers(min_idle_ms)

    async def ack(self, job_id: str) -> None:
        await self.inner.ack(job_id)

    async def stats(self) -> QueueStats:
        return await self.inner.stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_crash_of_the_loop_restarts_it(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = make_settings(worker_enabled=False, conversion_min_sends=1_000_000, throttle_rates=WIDE)
    email = unique_email()
    async with open_app(settings) as app, open_infrastructure(settings) as infra:
        assert (await app.http.post(SEND, json={"email": email})).status_code == 202
        flaky = FlakyQueue(infra.stores.queue)
        restarts = LOOP_RESTARTS.labels("delivery")
        before = restarts._value.get()
        async with running_worker(infra, WorkerOptions(queue=flaky)):
            await drain(app, timeout=10)
            assert restarts._value.get() == before + 1
    assert flaky.crashed
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [email]
    assert "delivery.crashed" in [r.getMessage() for r in caplog.records]


async def test_a_replaced_code_is_never_emailed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Two sends with the cooldown at 0 while the worker is behind: only the second code goes."""
    caplog.set_level(logging.INFO, logger="otp_service.delivery")
    settings = make_settings(
        worker_enabled=False, rate_limit_ttl=0, conversion_min_sends=1_000_000, throttle_rates=WIDE
    )
    email = unique_email()
    async with open_app(settings) as app:
        for _ in range(2):
            assert (await app.http.post(SEND, json={"email": email})).status_code == 202
        async with (
            open_infrastructure(settings) as infra,
            running_worker(infra, WorkerOptions(concurrency=1)),
        ):
            await drain(app, timeout=10)
        [sent] = console_emails(capsys.readouterr().out)
        assert sent.to == email
        # The email carries the live code: it verifies.
        res = await app.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": sent.code})
        assert res.status_code == 200
    assert [r.getMessage() for r in caplog.records].count("delivery.superseded") == 1


async def test_a_replaced_code_is_never_emailed_while_the_provider_is_slow(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """The worker running: one slow provider call holds it (concurrency 1) while the address
    gets two codes; the first is dropped, the second sent."""
    settings = resend_settings(make_settings, rate_limit_ttl=0, worker_concurrency=1)
    blocker, email = unique_email(), unique_email()
    release, holding = asyncio.Event(), asyncio.Event()

    async def provider(request: httpx.Request) -> httpx.Response:
        if blocker in request.content.decode():
            holding.set()
            await release.wait()
        return httpx.Response(200, json={"id": "re-x"})

    with respx.mock(using="httpx") as mock:
        mock.route(host="otp.test").pass_through()  # the test's own client to the app
        route = mock.post("https://api.resend.test/emails").mock(side_effect=provider)
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": blocker})).status_code == 202
            await asyncio.wait_for(holding.wait(), 5)
            for _ in range(2):
                assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            release.set()
            await drain(app, timeout=10)
        bodies = [c.request.content.decode() for c in route.calls if email in c.request.content.decode()]
    assert len(bodies) == 1


async def test_a_code_replaced_while_its_first_attempt_failed_is_never_emailed(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The provider answers 503; the address sends again meanwhile; the provider recovers. The
    first job's retry must not email the replaced code (the check runs before every attempt)."""
    caplog.set_level(logging.INFO, logger="otp_service.delivery")
    email = unique_email()
    async with ProviderFake(failing=True) as provider:
        settings = resend_settings(make_settings, resend_api_url=provider.url, rate_limit_ttl=0)
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            await asyncio.wait_for(provider.failed.wait(), 5)  # the first code's first attempt failed
            assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            provider.recover()
            await drain(app, timeout=15)
    assert len(provider.sent_to(email)) == 1
    assert [r.getMessage() for r in caplog.records].count("delivery.superseded") == 1


async def test_a_code_store_down_until_expiry_records_the_job_expired(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The code store cannot say whether the code is live before it expires: `expired`, not
    `superseded` (nothing replaced it)."""
    from otp_service.errors import Unavailable

    class DownCodes:
        async def is_current(self, address_id: str, code_hash: str) -> bool:
            raise Unavailable("down")

    settings = resend_settings(make_settings)
    sealer = JobSealer(Sealer(settings.secret))
    content = JobContent(email=unique_email(), code="123456", code_hash="h" * 64, address_id="a", locale="en")
    async with open_infrastructure(settings) as infra:
        worker = one_job_worker(infra, console_deliverer(settings, io.StringIO()), DownCodes())
        job = Job("1-0", sealer.seal(content), int((time.time() + 1.5) * 1000))
        try:
            outcome = await worker.process(job)
        finally:
            await worker.aclose()
    assert outcome.status is DeliveryOutcome.EXPIRED


async def test_the_send_rate_wait_ends_at_the_codes_expiry() -> None:
    limiter = embedded_send_rate(1)
    assert await limiter.try_take() == 0  # the one token of the second
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as info:
        await acquire(limiter, deadline=time.time() + 0.3)
    assert not info.value.permanent
    assert time.monotonic() - started < 0.2  # it did not wait for a token it could not use


async def test_workers_alive_on_metrics_and_usage(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    async with open_app(make_settings(worker_enabled=False, admin_api_keys=[KEY])) as app:
        assert "otp_workers_alive 0" in (await app.http.get("/metrics", headers=METRICS_AUTH)).text
        assert (await app.http.get("/api/v1/admin/usage", headers=auth)).json()["workers_alive"] == 0
        async with open_app(make_settings(admin_api_keys=[KEY])):  # a process that runs a worker
            async with asyncio.timeout(5):
                while (
                    "otp_workers_alive 1" not in (await app.http.get("/metrics", headers=METRICS_AUTH)).text
                ):
                    await asyncio.sleep(0.05)
            usage = (await app.http.get("/api/v1/admin/usage", headers=auth)).json()
            assert usage["workers_alive"] == 1
            metrics = (await app.http.get("/metrics", headers=METRICS_AUTH)).text
            assert "otp_queue_oldest_job_age_seconds" in metrics


@contextlib.contextmanager
def worker_process(env: dict[str, str], workdir: Path, *args: str) -> Any:
    out, err = (workdir / "worker.out").open("w"), (workdir / "worker.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "otp_service", "worker", *args], env=env, cwd=workdir,
                            stdout=out, stderr=err)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()


async def test_web_processes_without_a_worker_and_a_worker_process(
    database_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = service_env(database_url, key_prefix, OTP_WORKER_ENABLED="false",
                      OTP_CONVERSION_MIN_SENDS="1000000", OTP_THROTTLE_RATES='{"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute", "otp_verify_subnet": "1000/minute"}')  # fmt: skip
    emails = [unique_email() for _ in range(3)]
    with ServiceProcess(env, tmp_path, "web") as web:
        async with httpx.AsyncClient(base_url=web.url) as http:
            for email in emails:
                assert (await http.post(SEND, json={"email": email})).status_code == 202
            await asyncio.sleep(0.5)
            assert console_emails(web.out.read_text()) == []  # the web process sends nothing
            with worker_process(env, tmp_path, "--concurrency", "2") as worker:
                deadline = time.monotonic() + 20
                while len(console_emails((tmp_path / "worker.out").read_text())) < 3:
                    assert worker.poll() is None, (tmp_path / "worker.err").read_text()
                    assert time.monotonic() < deadline, (tmp_path / "worker.err").read_text()
                    await asyncio.sleep(0.1)
                metrics = (await http.get("/metrics")).text
                assert "otp_workers_alive 1" in metrics
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=15) == 0
    sent = sorted(e.to for e in console_emails((tmp_path / "worker.out").read_text()))
    assert sent == sorted(emails)
    assert "worker.started" in (tmp_path / "worker.err").read_text()


def test_the_worker_command_needs_redis(tmp_path: Path) -> None:
    from tests.support import clean_env

    out = subprocess.run([sys.executable, "-m", "otp_service", "worker"], env=clean_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert "OTP_REDIS_URL" in out.stderr


async def test_the_ledger_batches_concurrent_statements_and_answers_each_caller(database_url: str) -> None:
    import secrets

    from sqlalchemy import event, func, select, text

    from otp_service.db.engine import create_engine
    from otp_service.db.models import Delivery
    from otp_service.delivery.ledger import Ledger
    from otp_service.delivery.repository import DeliveryOutcome, DeliveryRecord

    engine = create_engine(database_url)
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    tag = secrets.token_hex(4)
    emails = [f"ledger-{tag}-{i}@example.org" for i in range(60)]
    suppressed = set(emails[::3])
    ledger = Ledger(engine, timeout=5)
    try:
        async with engine.begin() as conn:
            for email in suppressed:
                await conn.execute(
                    text("INSERT INTO suppressions (email, reason, source) VALUES (:e, 'bounce', 'test')"),
                    {"e": email},
                )
        statements.clear()
        answers = await asyncio.gather(*(ledger.suppressed(e) for e in emails))
        assert answers == [e in suppressed for e in emails]
        await asyncio.gather(*(
            ledger.record(DeliveryRecord(f"job-{tag}-{i}", e, DeliveryOutcome.SENT, "console", None)) for i, e in enumerate(emails)
        ))  # fmt: skip
        assert len(statements) <= 4  # 120 calls in a handful of statements
        async with engine.connect() as conn:
            count = await conn.scalar(select(func.count()).where(Delivery.job_id.like(f"job-{tag}-%")))
        assert count == 60
    finally:
        await ledger.close()
        await engine.dispose()


async def test_a_failed_ledger_statement_fails_its_batch_and_the_next_reconnects(database_url: str) -> None:
    from otp_service.db.engine import create_engine
    from otp_service.delivery.ledger import Ledger

    engine = create_engine(database_url)
    ledger = Ledger(engine, timeout=5)
    try:
        assert await ledger.suppressed("nobody@example.org") is False
        # The server ends the ledger's connection (as a PostgreSQL restart or failover would).
        async with engine.connect() as admin:
            await admin.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        results = await asyncio.gather(*(ledger.suppressed(f"x{i}@example.org") for i in range(5)),
                                       return_exceptions=True)  # fmt: skip
        assert all(isinstance(r, Exception) for r in results), results
        assert await ledger.suppressed("nobody@example.org") is False  # a new connection
    finally:
        await ledger.close()
        await engine.dispose()


async def test_closing_the_ledger_waits_for_its_batches_and_opens_nothing_after(database_url: str) -> None:
    from otp_service.db.engine import create_engine
    from otp_service.delivery.ledger import Ledger

    engine = create_engine(database_url)
    ledger = Ledger(engine, timeout=5)
    try:
        calls = [asyncio.ensure_future(ledger.suppressed(f"c{i}@example.org")) for i in range(20)]
        await asyncio.sleep(0)  # the batch's flush is scheduled, not yet run
        await ledger.close()
        assert await asyncio.gather(*calls) == [False] * 20  # the batch in flight was answered
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]  # the connection closed, not left open
        with pytest.raises(ConnectionError):
            await ledger.suppressed("later@example.org")
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_the_renewal_loop_outlives_a_lost_consumer_group(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A Redis that keeps nothing restarts while a job is held: the group is gone (NOGROUP on
    the renewal's XCLAIM). The group is created again and every loop goes on."""
    from redis.asyncio import Redis

    from otp_service.redisio import RedisKeys
    from tests.conftest import REDIS_URL

    caplog.set_level(logging.INFO, logger="otp_service")
    settings = resend_settings(make_settings, job_visibility_timeout=0.6)
    release, holding = asyncio.Event(), asyncio.Event()
    held, later = unique_email(), unique_email()

    async def provider(request: httpx.Request) -> httpx.Response:
        if held in request.content.decode():
            holding.set()
            await release.wait()
        return httpx.Response(200, json={"id": "re-x"})

    renewal = LOOP_LAST_SUCCESS.labels("delivery_renewal")
    with respx.mock(using="httpx") as mock:
        mock.route(host="otp.test").pass_through()  # the test's own client to the app
        route = mock.post("https://api.resend.test/emails").mock(side_effect=provider)
        async with open_app(settings) as app:
            assert (await app.http.post(SEND, json={"email": held})).status_code == 202
            await asyncio.wait_for(holding.wait(), 5)
            redis = Redis.from_url(REDIS_URL)
            await redis.delete(RedisKeys(key_prefix).jobs)  # the stream and its group, gone
            await redis.aclose()
            await asyncio.sleep(0.5)  # renewal runs every 0.2 s: it meets NOGROUP
            since = renewal._value.get()
            await asyncio.sleep(0.5)
            assert renewal._value.get() > since  # still passing
            release.set()
            assert (await app.http.post(SEND, json={"email": later})).status_code == 202
            async with asyncio.timeout(10):
                while not any(later in c.request.content.decode() for c in route.calls):
                    await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert "queue.group_recreated" in messages
    assert not [m for m in messages if m.endswith(".crashed")]


async def test_a_re_sent_code_is_read_from_the_job_kept_beside_it(
    make_settings: Callable[..., Settings],
) -> None:
    """The live code kept beside its hash is the sealed job that sent it."""
    settings = resend_settings(make_settings)
    sealer = JobSealer(Sealer(settings.secret))
    email = unique_email()
    live = JobContent(email=email, code="654321", code_hash="l" * 64, address_id="a", locale="en")
    kept = sealer.seal(live)
    new = JobContent(email=email, code="111111", code_hash="n" * 64, address_id="a", locale="en")
    out = io.StringIO()

    class Current:
        async def is_current(self, address_id: str, code_hash: str) -> bool:
            return code_hash == "l" * 64

    async with open_infrastructure(settings) as infra:
        worker = one_job_worker(infra, console_deliverer(settings, out), Current())
        job = Job("1-0", sealer.seal(new), int((time.time() + 60) * 1000), reused_code=kept, lifetime_s=45)
        try:
            outcome = await worker.process(job)
        finally:
            await worker.aclose()
    assert outcome.status is DeliveryOutcome.SENT
    assert "Your verification code is: 654321" in out.getvalue()
    assert "111111" not in out.getvalue()
