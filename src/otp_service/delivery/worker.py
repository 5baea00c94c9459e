"""The delivery worker: reads jobs, drops expired, suppressed and superseded ones, sends the rest,
acks. `otp-service worker` runs it alone; `otp-service serve` runs one in each web process when
OTP_WORKER_ENABLED is true.

Supervised: an unexpected exception while handling one job is logged (`delivery.job_crashed`)
and counted, and the job is left unacknowledged, so the stream hands it out again after the
visibility timeout (it ends, at the latest, when its code expires); an unexpected exception in
its loops (the consumer, held-job renewal, the heartbeat) restarts that loop after a backoff
(supervise.py). Jobs of a consumer that died are reclaimed after the visibility timeout; a live
consumer touches the jobs it holds so that a long retry is not mistaken for death. The
heartbeat is written only while the consumer loop passes.
"""

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service import tracing
from otp_service.background import Background, failure
from otp_service.clock import Clock, system_clock
from otp_service.delivery.heartbeat import HEARTBEAT_EVERY, HEARTBEAT_TTL, WorkerRegistry
from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.delivery.ledger import Held, Ledger
from otp_service.delivery.not_me import NotMeLinks
from otp_service.delivery.pace import SendPace
from otp_service.delivery.queue import Job, JobQueue, queued_at
from otp_service.delivery.repository import DeliveryOutcome, DeliveryRecord
from otp_service.delivery.sender import Delivered, Deliverer, DeliveryFailed, Superseded, Wording, backoff
from otp_service.errors import Unavailable
from otp_service.events.outbox import EventOutbox, EventType
from otp_service.logs import app_var, get_logger, mask_email
from otp_service.metrics import ACCEPTED_TO_SENT, DELIVERIES, WORKER_CRASHES
from otp_service.sends import DeliveryStatus
from otp_service.supervise import Beat, Loop

log = get_logger("delivery")

T = TypeVar("T")

FORGET_IDLE_MS = 3_600_000
"""A consumer (a worker process) that has held nothing and read nothing for an hour is gone."""
FORGET_EVERY_S = 300.0


class CurrentCode(Protocol):
    """Whether a job's code is still its address's live code (otp/store.py answers)."""

    async def is_current(self, address_id: str, code_hash: str) -> bool: ...


class SendStatuses(Protocol):
    """Each send's status for GET /api/v1/auth/otp/sends/{send_id} (otp/store.py answers)."""

    async def mark_send(
        self, send_id: str, status: DeliveryStatus, *, message: tuple[str, str] | None = None,
        trace: str | None = None,
    ) -> bool: ...  # fmt: skip


_STATUS_OF: dict[DeliveryOutcome, DeliveryStatus] = {
    DeliveryOutcome.SENT: DeliveryStatus.SENT,
    # A complaint or an operator's entry shows what a provider that reports no delivery shows
    # (CONTRACT §3); a bounce shows undeliverable (Outcome.held).
    DeliveryOutcome.SUPPRESSED: DeliveryStatus.SENT,
    DeliveryOutcome.FAILED: DeliveryStatus.FAILED,
    DeliveryOutcome.EXPIRED: DeliveryStatus.FAILED,
    DeliveryOutcome.SUPERSEDED: DeliveryStatus.SUPERSEDED,
}

_EVENT_OF: dict[DeliveryOutcome, EventType] = {
    DeliveryOutcome.SENT: "otp.sent",
    DeliveryOutcome.SUPPRESSED: "otp.suppressed",
    DeliveryOutcome.FAILED: "otp.failed",
    DeliveryOutcome.EXPIRED: "otp.failed",  # retried until the code expired: given up
}


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Outcome:
    job_id: str
    status: DeliveryOutcome
    provider: str | None = None
    message_id: str | None = None
    email: str | None = None
    attempts: int = 0  # provider calls made for the job
    subnet: str | None = None  # the subnet that requested the send
    client: str | None = None  # the client that requested it (§2a): what the reputation guard blames
    send_id: str | None = None  # the send's id (CONTRACT §3), when the job could be opened
    held: Held | None = None  # SUPPRESSED: by a bounce, or by a complaint or an operator
    app: str = ""  # the application (CONTRACT §8) whose send it was
    trace: str | None = None  # SENT, traced: the provider call's span context (otp_service/tracing)


class DeliveryWorker(Background):
    def __init__(
        self,
        *,
        queue: JobQueue,
        sealer: JobSealer,
        codes: CurrentCode,
        deliverer: Deliverer,
        engine: AsyncEngine,
        registry: WorkerRegistry,
        concurrency: int,
        visibility_timeout: float,
        db_timeout: float,
        clock: Clock = system_clock,
        name: str | None = None,
        forget_idle_after: float = FORGET_IDLE_MS / 1000,
        on_outcome: Callable[[Outcome], None] | None = None,
        events: EventOutbox | None = None,
        not_me: NotMeLinks | None = None,
        statuses: SendStatuses | None = None,
        pace: SendPace | None = None,
    ) -> None:
        self.name = name or consumer_name()
        self._statuses = statuses
        self._pace = pace or SendPace()  # how long a suppressed send that reads `sent` waits
        self._not_me = not_me  # OTP_PUBLIC_URL: each email's "Didn't ask for this?" link
        self._events = events
        self._queue = queue
        self._sealer = sealer
        self._codes = codes
        self._deliverer = deliverer
        self._ledger = Ledger(engine, timeout=db_timeout + 1)
        self._registry = registry
        self._forget_idle_ms = int(forget_idle_after * 1000)
        self._concurrency = concurrency
        self._visibility_ms = int(visibility_timeout * 1000)
        self._clock = clock
        self._on_outcome = on_outcome
        self._inflight: dict[str, asyncio.Task[Outcome | None]] = {}
        self._consuming: Beat | None = None
        self._passed = asyncio.Event()  # the consumer has completed a pass
        super().__init__()

    async def aclose(self) -> None:
        """Close the ledger's database connection (run() does it as it ends)."""
        await self._ledger.close()

    def loops(self) -> dict[str, Loop]:
        """The consumer loop, held-job renewal and the heartbeat. After stop(), unacknowledged
        jobs stay pending for another consumer."""
        every = self._visibility_ms / 3000
        renewal = self.every(every, self._renew_held_jobs, failed="delivery.renewal_failed")
        return {"delivery": self._consume, "delivery_renewal": renewal, "heartbeat": self._heartbeat}

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            for task in list(self._inflight.values()):
                task.cancel()
            try:
                await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            finally:
                # Shielded: a second cancellation (tasks.cancel_and_wait repeats them) must not
                # leave the ledger's connection open past the engine's disposal.
                await asyncio.shield(self.aclose())

    async def _consume(self, beat: Beat) -> None:
        failures = 0
        next_reclaim = next_forget = 0.0
        loop = asyncio.get_running_loop()
        self._consuming = beat
        while not self.stopping:
            try:
                free = self._concurrency - len(self._inflight)
                if free <= 0:
                    await asyncio.wait(
                        self._inflight.values(), timeout=1, return_when=asyncio.FIRST_COMPLETED
                    )
                    beat.ok()
                    continue
                jobs: list[Job] = []
                if loop.time() >= next_reclaim:
                    await self._queue.ensure_ready()
                    jobs = await self._queue.reclaim(self.name, self._visibility_ms, free)
                    if jobs:
                        # Held by a consumer that went silent (crashed, killed, partitioned), or
                        # left unacknowledged by a crash while it was handled.
                        log.warning("delivery.reclaimed", extra={"jobs": [j.id for j in jobs]})
                    next_reclaim = loop.time() + self._visibility_ms / 3000
                    beat.ok()  # Redis answered: alive, before any job of this pass is handled
                    self._passed.set()
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
                beat.ok()
                self._passed.set()
            except Unavailable:
                failures += 1
                await self.pause(min(5.0, 0.2 * 2**failures))

    async def _renew_held_jobs(self) -> None:
        """Touch the jobs this worker holds, so that a long retry is not taken for death."""
        if self._inflight:
            await self._queue.touch(self.name, list(self._inflight))

    async def _heartbeat(self, beat: Beat) -> None:
        """The worker's heartbeat (otp_workers_alive), written only while the consumer loop is
        passing: a worker whose loop is stuck stops beating just as a dead one does."""
        while not self.stopping:
            if beat.last_ok is None:  # the first beat as soon as the consumer has passed once
                await self.until_stopped(self._passed)
            consuming = self._consuming.last_ok if self._consuming is not None else None
            if consuming is not None and time.time() - consuming < HEARTBEAT_TTL:
                try:
                    await self._registry.beat(self.name, {"concurrency": self._concurrency})
                    beat.ok()
                except Unavailable as exc:
                    log.warning("delivery.heartbeat_failed", extra={"error": failure(exc)})
            await self.pause(HEARTBEAT_EVERY)

    async def _record(self, outcome: Outcome) -> None:
        email = outcome.email
        if email is None:
            return
        try:
            await self._ledger.record(
                DeliveryRecord(
                    outcome.job_id,
                    email,
                    outcome.status,
                    outcome.provider,
                    outcome.message_id,
                    queued_at(outcome.job_id),
                    outcome.attempts,
                    outcome.subnet,
                    outcome.client,
                    outcome.app,
                )
            )
        except Unavailable as exc:
            # The email has gone (or been dropped); losing its record must not hold the job.
            log.warning("delivery.record_failed", extra={"job": outcome.job_id, "error": failure(exc)})

    async def _handle(self, job: Job) -> Outcome | None:
        if tracing.hooks is not None:  # OpenTelemetry configured: this task continues the job's trace
            tracing.hooks.resume(job.trace)
        try:
            outcome = await self.process(job)
            await self._record(outcome)
            await self._mark(outcome)
            await self._publish(outcome)
            await self._ack(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not stop delivery: the job stays unacknowledged and is handed out again.
            WORKER_CRASHES.labels("job").inc()
            log.exception("delivery.job_crashed", extra={"job": job.id})
            return None
        finally:
            self._inflight.pop(job.id, None)
        DELIVERIES.labels(outcome.status, outcome.provider or "none", outcome.app).inc()
        if outcome.status is DeliveryOutcome.SENT and outcome.provider and (queued := queued_at(job.id)):
            ACCEPTED_TO_SENT.labels(outcome.provider).observe(max(0.0, self._clock() - queued.timestamp()))
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome

    async def _mark(self, outcome: Outcome) -> None:
        """The send's status (CONTRACT §3). Redis down: the status stays behind, the job does not."""
        status = _STATUS_OF.get(outcome.status)
        if self._statuses is None or outcome.send_id is None or status is None:
            return
        if outcome.held is Held.BOUNCED:
            status = DeliveryStatus.UNDELIVERABLE
        message = None
        if outcome.provider is not None and outcome.message_id is not None:
            message = (outcome.provider, outcome.message_id)
        try:
            await self._statuses.mark_send(outcome.send_id, status, message=message, trace=outcome.trace)
        except Unavailable as exc:
            log.warning("delivery.status_failed", extra={"job": outcome.job_id, "error": failure(exc)})

    async def _publish(self, outcome: Outcome) -> None:
        """Events out (CONTRACT §7): sent, suppressed, failed. The webhook-id is the job's and the
        outcome's, so a job handled again after a crash repeats the same event, not a new one."""
        kind = _EVENT_OF.get(outcome.status)
        if self._events is None or kind is None or outcome.email is None:
            return
        data = {"email": outcome.email, "job_id": outcome.job_id, "provider": outcome.provider,
                "message_id": outcome.message_id, "outcome": str(outcome.status),
                "send_id": outcome.send_id}  # fmt: skip
        await self._events.publish(kind, data, event_id=f"{outcome.job_id}_{outcome.status}", app=outcome.app)

    async def _ack(self, job: Job) -> None:
        for attempt in range(5):
            try:
                await self._queue.ack(job.id)
                return
            except Unavailable:
                await asyncio.sleep(backoff(attempt + 1))
        log.error("delivery.ack_failed", extra={"job": job.id})

    async def _retry_until(self, deadline: float, what: str, check: Callable[[], Awaitable[T]]) -> T | None:
        """`check()`, retried while its store is down; None once the code would expire first."""
        attempt = 0
        while True:
            try:
                return await check()
            except Unavailable as exc:
                attempt += 1
                delay = backoff(attempt)
                log.warning(f"delivery.{what}_failed", extra={"error": failure(exc), "attempt": attempt})
                if self._clock() + delay >= deadline:
                    return None
                await asyncio.sleep(delay)

    async def process(self, job: Job) -> Outcome:
        deadline = job.expires_at_ms / 1000
        if self._clock() >= deadline:
            log.info("delivery.expired", extra={"job": job.id})
            return Outcome(job.id, DeliveryOutcome.EXPIRED)
        try:
            content: JobContent = self._sealer.open(job.payload)
            app_var.set(content.app)  # this job's log lines name its application (its own task)
            code, code_hash, wording = content.code, content.code_hash, Wording(content.locale)
            if job.reused_code is not None:  # the live code, again (reuse, or a remembered source's)
                kept = self._sealer.open(job.reused_code)  # the job that sent it
                code, code_hash = kept.code, kept.code_hash
                wording = Wording(content.locale, job.lifetime_s, repeated=True)
        except (InvalidTag, ValueError, KeyError):
            # Sealed under another OTP_SECRET_KEY (rotated, or processes disagreeing).
            log.error("delivery.undecryptable", extra={"job": job.id})
            return Outcome(job.id, DeliveryOutcome.UNDECRYPTABLE)
        email, masked = content.email, mask_email(content.email)

        def outcome(
            status: DeliveryOutcome,
            sent: Delivered | None = None,
            attempts: int = 0,
            held: Held | None = None,
        ) -> Outcome:
            provider, message_id = (sent.provider, sent.message_id) if sent is not None else (None, None)
            return Outcome(
                job.id, status, provider, message_id, email, attempts, content.subnet, content.client,
                content.send_id, held, app=content.app, trace=sent.trace if sent is not None else None,
            )  # fmt: skip

        # A database that is down holds the job until the code expires.
        async def suppression() -> tuple[Held | None]:  # a tuple: None is the lookup's expiry
            return (await self._ledger.suppression(email, remembered=job.remembered),)

        looked_up = await self._retry_until(deadline, "suppression_lookup", suppression)
        if looked_up is None:
            log.warning("delivery.expired", extra={"job": job.id, "email": masked})
            return outcome(DeliveryOutcome.EXPIRED)
        (held,) = looked_up
        started = time.monotonic()
        if held is not None:
            log.info("delivery.suppressed", extra={"job": job.id, "email": masked})
            if held is not Held.BOUNCED:  # it reads `sent`: when a send would (delivery/pace.py)
                await asyncio.sleep(max(0.0, min(self._pace.draw(), deadline - self._clock())))
            return outcome(DeliveryOutcome.SUPPRESSED, held=held)

        async def current() -> bool | None:
            return await self._retry_until(
                deadline, "code_lookup", lambda: self._codes.is_current(content.address_id, code_hash)
            )

        not_me = None
        if self._not_me is not None:  # names this send and who requested it (CONTRACT §4)
            not_me = self._not_me.link(job.id, content)
        try:
            sent = await self._deliverer.send_template(
                "email_otp", email, code, idempotency_key=f"otp-{job.id}", deadline=deadline, wording=wording,
                current=current, passes_pause=job.passes_pause, not_me_link=not_me, app=content.app,
            )  # fmt: skip
        except Superseded:
            # A newer send replaced this code (or it was used, or it expired), perhaps while an
            # earlier attempt was failing: never email a code after its successor.
            log.info("delivery.superseded", extra={"job": job.id, "email": masked})
            return outcome(DeliveryOutcome.SUPERSEDED)
        except DeliveryFailed as exc:
            event = "delivery.failed" if exc.permanent else "delivery.expired"
            log.warning(event, extra={"job": job.id, "email": masked, "reason": exc.reason})
            status = DeliveryOutcome.FAILED if exc.permanent else DeliveryOutcome.EXPIRED
            return outcome(status, attempts=exc.attempts)
        self._pace.took(time.monotonic() - started)
        log.info(
            "delivery.sent",
            extra={"job": job.id, "email": masked, "provider": sent.provider,
                   "message_id": sent.message_id, "attempts": sent.attempts},
        )  # fmt: skip
        return outcome(DeliveryOutcome.SENT, sent, sent.attempts)
