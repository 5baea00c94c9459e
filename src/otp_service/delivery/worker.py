"""The delivery worker: reads jobs, drops expired and suppressed ones, sends the rest, acks.

One runs inside every serving process (and `otp-service worker` runs one alone). Jobs of a
consumer that died are reclaimed after the visibility timeout; a live consumer touches the jobs
it holds so that a long retry is not mistaken for death.
"""

import asyncio
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.delivery.queue import Job, JobQueue
from otp_service.delivery.repository import record_outcome
from otp_service.delivery.sender import Deliverer, DeliveryFailed, backoff
from otp_service.errors import Unavailable
from otp_service.limits.base import Clock, system_clock
from otp_service.logs import get_logger, mask_email
from otp_service.otp.codes import CodeCrypto
from otp_service.suppression.repository import is_suppressed
from otp_service.tasks import cancel_and_wait

log = get_logger("delivery")

FORGET_IDLE_MS = 3_600_000
"""A consumer (a serving process) that has held nothing and read nothing for an hour is gone."""
FORGET_EVERY_S = 300.0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Outcome:
    job_id: str
    status: str  # sent | suppressed | expired | failed | undecryptable
    provider: str | None = None
    message_id: str | None = None
    email: str | None = None


class DeliveryWorker:
    def __init__(
        self,
        *,
        queue: JobQueue,
        crypto: CodeCrypto,
        deliverer: Deliverer,
        engine: AsyncEngine,
        concurrency: int,
        visibility_timeout: float,
        db_timeout: float,
        clock: Clock = system_clock,
        name: str | None = None,
        forget_idle_after: float = FORGET_IDLE_MS / 1000,
    ) -> None:
        self.name = name or consumer_name()
        self._queue = queue
        self._crypto = crypto
        self._deliverer = deliverer
        # Connections, not ORM sessions: two statements per email, and the session machinery
        # was ~40% of the worker's CPU per email (cProfile).
        self._engine = engine
        self._forget_idle_ms = int(forget_idle_after * 1000)
        self._concurrency = concurrency
        self._visibility_ms = int(visibility_timeout * 1000)
        self._db_timeout = db_timeout
        self._clock = clock
        self._inflight: dict[str, asyncio.Task[Outcome | None]] = {}
        self._stopping = False
        self.on_outcome: Callable[[Outcome], None] | None = None

    async def stop(self, task: "asyncio.Task[None]", grace: float = 5.0) -> None:
        """Stop the task running `run()`. Unacknowledged jobs stay pending for another consumer.

        Cancellation can be swallowed when it lands exactly as a client library's own timeout
        fires, so the loop also checks a flag, and the task is cancelled until it is done."""
        self._stopping = True
        await cancel_and_wait(task, grace)

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._loop()
        finally:
            heartbeat.cancel()
            for task in list(self._inflight.values()):
                task.cancel()
            await asyncio.gather(heartbeat, *self._inflight.values(), return_exceptions=True)

    async def _loop(self) -> None:
        failures = 0
        next_reclaim = 0.0
        next_forget = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                free = self._concurrency - len(self._inflight)
                if free <= 0:
                    await asyncio.wait(self._inflight.values(), return_when=asyncio.FIRST_COMPLETED)
                    continue
                jobs: list[Job] = []
                if loop.time() >= next_reclaim:
                    await self._queue.ensure_ready()
                    jobs = await self._queue.reclaim(self.name, self._visibility_ms, free)
                    if jobs:
                        # Another consumer went silent holding these (crashed, killed, partitioned).
                        log.warning("delivery.reclaimed", extra={"jobs": [j.id for j in jobs]})
                    next_reclaim = loop.time() + self._visibility_ms / 3000
                    if loop.time() >= next_forget:
                        next_forget = loop.time() + FORGET_EVERY_S
                        if gone := await self._queue.forget_idle_consumers(self._forget_idle_ms):
                            log.info("delivery.consumers_forgotten", extra={"consumers": gone})
                if not jobs:
                    jobs = await self._queue.read(self.name, free, block_ms=1000)
                for job in jobs:
                    if job.id not in self._inflight:
                        self._inflight[job.id] = asyncio.create_task(self._handle(job))
                failures = 0
            except Unavailable:
                failures += 1
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._visibility_ms / 3000)
            if self._inflight:
                try:
                    await self._queue.touch(self.name, list(self._inflight))
                except Unavailable:
                    log.warning("delivery.heartbeat_failed")

    async def _record(self, outcome: Outcome) -> None:
        if outcome.email is None:
            return
        try:
            async with asyncio.timeout(self._db_timeout + 1), self._engine.begin() as conn:
                await record_outcome(
                    conn, job_id=outcome.job_id, email=outcome.email, outcome=outcome.status,
                    provider=outcome.provider, message_id=outcome.message_id,
                )  # fmt: skip
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # The email has gone (or been dropped); losing its record must not hold the job.
            log.warning("delivery.record_failed", extra={"job": outcome.job_id, "error": type(exc).__name__})

    async def _handle(self, job: Job) -> Outcome | None:
        try:
            outcome = await self.process(job)
            await self._record(outcome)
            await self._ack(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill the worker; the job is reclaimed later
            log.exception("delivery.job_crashed", extra={"job": job.id})
            return None
        finally:
            self._inflight.pop(job.id, None)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    async def _ack(self, job: Job) -> None:
        for attempt in range(5):
            try:
                await self._queue.ack(job.id)
                return
            except Unavailable:
                await asyncio.sleep(backoff(attempt + 1))
        log.error("delivery.ack_failed", extra={"job": job.id})

    async def _suppressed(self, email: str, deadline: float) -> bool | None:
        """Look the address up; a database that is down holds the job until the code expires."""
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self._db_timeout + 1), self._engine.connect() as conn:
                    return await is_suppressed(conn, email)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                attempt += 1
                delay = backoff(attempt)
                log.warning(
                    "delivery.suppression_lookup_failed",
                    extra={"error": type(exc).__name__, "attempt": attempt},
                )
                if self._clock() + delay >= deadline:
                    return None
                await asyncio.sleep(delay)

    async def process(self, job: Job) -> Outcome:
        deadline = job.expires_at_ms / 1000
        if self._clock() >= deadline:
            log.info("delivery.expired", extra={"job": job.id})
            return Outcome(job.id, "expired")
        try:
            sealed = self._crypto.open(job.payload)
        except (InvalidTag, ValueError):
            # Sealed under another OTP_SECRET_KEY (rotated, or processes disagreeing).
            log.error("delivery.undecryptable", extra={"job": job.id})
            return Outcome(job.id, "undecryptable")
        masked = mask_email(sealed.email)
        suppressed = await self._suppressed(sealed.email, deadline)
        if suppressed is None:
            log.warning("delivery.expired", extra={"job": job.id, "email": masked})
            return Outcome(job.id, "expired", email=sealed.email)
        if suppressed:
            log.info("delivery.suppressed", extra={"job": job.id, "email": masked})
            return Outcome(job.id, "suppressed", email=sealed.email)
        try:
            sent = await self._deliverer.send_template(
                "email_otp", sealed.email, sealed.code, idempotency_key=f"otp-{job.id}",
                deadline=deadline,
            )  # fmt: skip
        except DeliveryFailed as exc:
            event = "delivery.failed" if exc.permanent else "delivery.expired"
            log.warning(event, extra={"job": job.id, "email": masked, "reason": exc.reason})
            return Outcome(job.id, "failed" if exc.permanent else "expired", email=sealed.email)
        log.info(
            "delivery.sent",
            extra={"job": job.id, "email": masked, "provider": sent.provider,
                   "message_id": sent.message_id, "attempts": sent.attempts},
        )  # fmt: skip
        return Outcome(job.id, "sent", sent.provider, sent.message_id, sealed.email)
