"""Retention: `otp-service worker` deletes delivery records, webhook events and audit entries older
than OTP_RETENTION_DAYS and keeps suppressions; in batches; at most once an hour across workers
(the slot in real Redis, and its in-memory twin); the same statements on SQLite."""

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.clock import system_clock
from otp_service.db.engine import create_engine
from otp_service.db.migrate import upgrade_engine
from otp_service.db.models import AuditEntry, Delivery, Suppression, WebhookEvent
from otp_service.redisio import EmbeddedRedis, PipelinedRedis, RedisKeys
from otp_service.retention import RedisRetentionSlot, Retention
from tests.conftest import REDIS_URL
from tests.support import service_env, unique_email
from tests.test_worker import worker_process

DAY = timedelta(days=1)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    db = create_engine(database_url)
    yield db
    await db.dispose()


async def seed(db: AsyncEngine, email: str, age: timedelta) -> None:
    """One delivery record, one webhook event, one audit entry and one suppression about
    `email`, each `age` old."""
    when = datetime.now(UTC) - age
    async with db.begin() as conn:
        await conn.execute(insert(Delivery).values(job_id=secrets.token_hex(8), email=email, outcome="sent",
                                                   provider="resend", created_at=when))  # fmt: skip
        await conn.execute(insert(WebhookEvent).values(provider="resend", event_id=secrets.token_hex(8),
                                                       event_type="email.delivered", outcome="recorded",
                                                       payload={"data": {"to": [email]}}, received_at=when))  # fmt: skip
        await conn.execute(insert(AuditEntry).values(key_fingerprint="f" * 16, action="suppression.put",
                                                     target=email, created_at=when))  # fmt: skip
        await conn.execute(insert(Suppression).values(email=email, reason="bounce", source="resend",
                                                      created_at=when, updated_at=when))  # fmt: skip


async def held(db: AsyncEngine, email: str) -> dict[str, int]:
    """How many rows about `email` each table holds."""
    counts = {}
    async with db.connect() as conn:
        for name, query in (
            ("deliveries", select(Delivery.id).where(Delivery.email == email)),
            ("webhook_events", select(WebhookEvent.id).where(WebhookEvent.payload["data"]["to"][0].as_string() == email)),
            ("audit_log", select(AuditEntry.id).where(AuditEntry.target == email)),
            ("suppressions", select(Suppression.id).where(Suppression.email == email)),
        ):  # fmt: skip
            counts[name] = len((await conn.execute(query)).all())
    return counts


ALL = {"deliveries": 1, "webhook_events": 1, "audit_log": 1, "suppressions": 1}
ONLY_SUPPRESSION = {"deliveries": 0, "webhook_events": 0, "audit_log": 0, "suppressions": 1}


async def test_the_worker_deletes_what_is_past_retention_and_keeps_suppressions(
    database_url: str, key_prefix: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    old, recent = unique_email(), unique_email()
    await seed(engine, old, 10 * DAY + timedelta(minutes=1))
    await seed(engine, recent, 10 * DAY - timedelta(minutes=1))
    assert await held(engine, old) == ALL
    env = service_env(database_url, key_prefix, OTP_RETENTION_DAYS="10")
    with worker_process(env, tmp_path) as worker:
        deadline = time.monotonic() + 30
        while await held(engine, old) != ONLY_SUPPRESSION:
            assert worker.poll() is None, (tmp_path / "worker.err").read_text()
            assert time.monotonic() < deadline, (tmp_path / "worker.err").read_text()
            await asyncio.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    assert await held(engine, recent) == ALL
    assert "retention.purged" in (tmp_path / "worker.err").read_text()


async def test_one_purge_an_hour_across_workers(key_prefix: str, engine: AsyncEngine) -> None:
    redis = PipelinedRedis.from_url(REDIS_URL, timeout=2)
    keys = RedisKeys(key_prefix)
    try:
        workers = [
            Retention(
                engine=engine,
                slot=RedisRetentionSlot(redis, keys),
                days=30,
                owner=f"w{i}",
                clock=system_clock,
                run_every=1.0,
            )
            for i in range(8)
        ]
        first = await asyncio.gather(*(w.run_once() for w in workers))
        assert sum(r is not None for r in first) == 1  # one worker purged; seven found the slot taken
        assert [r for r in await asyncio.gather(*(w.run_once() for w in workers)) if r is not None] == []
        ttl = await redis.execute("PTTL", keys.retention_slot)
        assert 0 < int(ttl) <= 1000
        await asyncio.sleep(1.05)  # the period over: the next claim wins again, once
        assert sum(r is not None for r in await asyncio.gather(*(w.run_once() for w in workers))) == 1
        default = Retention(engine=engine, slot=RedisRetentionSlot(redis, keys), days=30, owner="d",
                            clock=system_clock)  # fmt: skip
        await redis.execute("DEL", keys.retention_slot)
        assert await default.run_once() is not None
        assert 3_590_000 < int(await redis.execute("PTTL", keys.retention_slot)) <= 3_600_000
    finally:
        await redis.aclose()


def embedded_slot() -> RedisRetentionSlot:
    return RedisRetentionSlot(EmbeddedRedis(), RedisKeys("retention"))


async def test_a_backlog_goes_in_batches(engine: AsyncEngine) -> None:
    email = unique_email()
    for _ in range(5):
        await seed(engine, email, 40 * DAY)
        async with engine.begin() as conn:  # seed() adds one suppression per address
            await conn.execute(text("DELETE FROM suppressions WHERE email = :e"), {"e": email})
    deletes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement.split()[2])

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        retention = Retention(engine=engine, slot=embedded_slot(), days=30,
                              owner="w", clock=system_clock, batch=2)  # fmt: skip
        deleted = await retention.purge()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert deleted == {"deliveries": 5, "webhook_events": 5, "audit_log": 5, "verify_failures": 0}
    # 2 + 2 + 1 per table: never one statement for the whole backlog.
    assert deletes == ["deliveries"] * 3 + ["webhook_events"] * 3 + ["audit_log"] * 3 + ["verify_failures"]


async def test_the_same_statements_on_the_embedded_sqlite(tmp_path: Path) -> None:
    db = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}")
    try:
        await upgrade_engine(db)
        old, recent = unique_email(), unique_email()
        await seed(db, old, 31 * DAY)
        await seed(db, recent, 29 * DAY)
        retention = Retention(engine=db, slot=embedded_slot(), days=30, owner="w",
                              clock=system_clock, batch=1)  # fmt: skip
        assert await retention.run_once() == {
            "deliveries": 1,
            "webhook_events": 1,
            "audit_log": 1,
            "verify_failures": 0,
        }
        assert await retention.run_once() is None  # within the hour
        assert await held(db, old) == ONLY_SUPPRESSION
        assert await held(db, recent) == ALL
    finally:
        await db.dispose()


async def test_the_loop_outlives_a_database_outage(caplog: pytest.LogCaptureFixture) -> None:
    db = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", timeout=0.5)
    # A one-hour slot would keep the second claim out for an hour: here a period is 50 ms.
    retention = Retention(engine=db, slot=embedded_slot(), days=30, owner="w", clock=system_clock,
                          check_every=0.01, run_every=0.05)  # fmt: skip
    task = asyncio.create_task(retention.run())
    try:
        for _ in range(3):  # each period: a claim, a failed purge, and the loop goes on
            while sum("retention.failed" in r.getMessage() for r in caplog.records) < _ + 1:
                assert not task.done()
                await asyncio.sleep(0.01)
    finally:
        retention.stop()
        await asyncio.wait_for(task, timeout=5)
        await db.dispose()


async def test_a_stopped_purge_starts_no_further_batch(engine: AsyncEngine) -> None:
    for _ in range(3):
        await seed(engine, unique_email(), 40 * DAY)
    deletes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement.split()[2])

    retention = Retention(
        engine=engine, slot=embedded_slot(), days=30, owner="w", clock=system_clock, batch=1
    )
    retention.stop()  # as the worker stops: the batch in progress ends, nothing after it begins
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await retention.purge()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert deletes == []
