"""Retention: delivery records, webhook events and audit entries hold addresses, so the worker
deletes those older than OTP_RETENTION_DAYS, in batches, at most once an hour across all workers
(a slot claimed in Redis with SET NX PX; the embedded default has one process and a twin in
memory). Suppressions are kept: remembering an address that bounced is their job.

A purge that fails half-way (the database went away) is not retried until the next slot: what it
left is deleted an hour later, and nothing is lost by waiting."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from otp_service.audit import repository as audit
from otp_service.background import Background
from otp_service.clock import Clock
from otp_service.db.guard import database_guard
from otp_service.delivery import repository as deliveries
from otp_service.metrics import RETENTION_DELETED
from otp_service.redisio import RedisClient, RedisKeys, redis_guard
from otp_service.supervise import Loop
from otp_service.webhooks import repository as webhook_events

log = logging.getLogger("otp_service.retention")

RUN_EVERY = 3600.0
"""Seconds: at most one purge per this period, across all workers."""
CHECK_EVERY = 60.0
"""Seconds between a worker's attempts to claim the slot (one SET NX: cheap)."""
BATCH = 1000
"""Rows per DELETE: short statements, no long lock on a large backlog."""

Purge = Callable[[AsyncConnection, datetime, int], Awaitable[int]]
TABLES: dict[str, Purge] = {
    "deliveries": deliveries.delete_older,
    "webhook_events": webhook_events.delete_older,
    "audit_log": audit.delete_older,
    "verify_failures": deliveries.delete_verify_failures_older,  # the admin stats' counts, by hour
}


class RetentionSlot(Protocol):
    async def claim(self, owner: str, seconds: float) -> bool:
        """True for exactly one caller per `seconds` (across every worker sharing the store)."""
        ...


class RedisRetentionSlot:
    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        self._redis = redis
        self._key = keys.retention_slot

    async def claim(self, owner: str, seconds: float) -> bool:
        async with redis_guard("retention.claim"):
            answer = await self._redis.execute("SET", self._key, owner, "NX", "PX", int(seconds * 1000))
        return answer is not None


class Retention(Background):
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        slot: RetentionSlot,
        days: int,
        owner: str,
        clock: Clock,
        batch: int = BATCH,
        check_every: float = CHECK_EVERY,
        run_every: float = RUN_EVERY,
    ) -> None:
        self._engine = engine
        self._slot = slot
        self._days = days
        self._owner = owner
        self._clock = clock
        self._batch = batch
        self._check_every = check_every
        self._run_every = run_every
        super().__init__()

    def loops(self) -> dict[str, Loop]:
        """Claim the slot every check, purge when claimed. stop() ends it at once when idle, or
        after the batch in progress (never mid-statement: a cancelled statement could leave its
        connection checked out past the engine's end)."""
        return {"retention": self.every(self._check_every, self.run_once, failed="retention.failed")}

    async def run_once(self) -> dict[str, int] | None:
        """Purge if this worker claims the hour's slot: rows deleted per table, or None."""
        if not await self._slot.claim(self._owner, self._run_every):
            return None
        return await self.purge()

    async def purge(self) -> dict[str, int]:
        cutoff = datetime.fromtimestamp(self._clock(), UTC) - timedelta(days=self._days)
        deleted: dict[str, int] = {}
        for table, delete_older in TABLES.items():
            if self.stopping:  # stopping: no batch for the tables not begun
                break
            total = 0
            while True:
                async with database_guard("retention.purge"), self._engine.begin() as conn:
                    n = await delete_older(conn, cutoff, self._batch)  # one transaction per batch
                total += n
                if n < self._batch or self.stopping:
                    break
                await asyncio.sleep(0)  # let the worker's deliveries in between batches
            deleted[table] = total
            RETENTION_DELETED.labels(table=table).inc(total)
        log.info("retention.purged", extra={"deleted": deleted, "days": self._days})
        return deleted
