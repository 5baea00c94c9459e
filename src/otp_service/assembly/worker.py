"""The worker's background tasks (background.py), built and run: the delivery worker, the
reputation guard, retention, the admin stats' compaction and, with OTP_EVENTS_WEBHOOK_URL, the
events sender; and, with a provider other than the console, the sender check
(sender/periodic.py)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from otp_service.assembly.infrastructure import Infrastructure
from otp_service.assembly.providers import build_provider
from otp_service.background import Background
from otp_service.delivery.not_me import NotMeLinks
from otp_service.delivery.queue import JobQueue
from otp_service.delivery.reputation import ReputationGuard
from otp_service.delivery.sender import Deliverer
from otp_service.delivery.stats import StatsCompaction
from otp_service.delivery.worker import FORGET_IDLE_MS, DeliveryWorker, Outcome
from otp_service.events.outbox import EventSender
from otp_service.retention import Retention
from otp_service.sender.dns import DnsReader
from otp_service.sender.periodic import SenderCheck
from otp_service.tasks import cancel_and_wait


@dataclass(frozen=True, slots=True)
class WorkerComponents:
    worker: DeliveryWorker
    guard: ReputationGuard
    retention: Retention
    stats: StatsCompaction
    events: EventSender | None = None
    sender: SenderCheck | None = None

    def tasks(self) -> dict[str, Background]:
        """Each background task by the name its asyncio task carries."""
        named: dict[str, Background] = {
            f"delivery-worker-{self.worker.name}": self.worker,
            "reputation-guard": self.guard,
            "retention": self.retention,
            "stats-compaction": self.stats,
        }
        if self.events is not None:
            named["events-out"] = self.events
        if self.sender is not None:
            named["sender-check"] = self.sender
        return named


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """What a caller sets beyond the settings: the CLI's --concurrency, and tests' shorter
    timeouts, outcome callback and stand-in queue. None keeps the settings' value."""

    concurrency: int | None = None
    visibility_timeout: float | None = None
    forget_idle_after: float | None = None
    on_outcome: Callable[[Outcome], None] | None = None
    queue: JobQueue | None = None


async def build_worker(
    infra: Infrastructure, stack: contextlib.AsyncExitStack, options: WorkerOptions = WorkerOptions()
) -> WorkerComponents:
    s, stores = infra.settings, infra.stores
    primary = await build_provider(infra.providers[0], s, stack)
    fallback = await build_provider(infra.providers[1], s, stack) if len(infra.providers) > 1 else None
    guard = infra.reputation
    deliverer = Deliverer(
        settings=s, primary=primary, fallback=fallback, send_rate=stores.send_rate, healthy=guard.healthy,
        clock=infra.clock,
    )  # fmt: skip
    worker = DeliveryWorker(
        queue=options.queue or stores.queue,
        sealer=infra.jobs,
        codes=stores.codes,
        deliverer=deliverer,
        engine=infra.engine,
        registry=stores.workers,
        concurrency=options.concurrency or s.worker_concurrency,
        visibility_timeout=options.visibility_timeout or s.job_visibility_timeout,
        db_timeout=s.dependency_timeout,
        clock=infra.clock,
        forget_idle_after=options.forget_idle_after or FORGET_IDLE_MS / 1000,
        on_outcome=options.on_outcome,
        events=infra.events,
        statuses=stores.codes,
        not_me=NotMeLinks(infra.not_me, s.public_url, clock=infra.clock) if s.public_url else None,
    )
    retention = Retention(
        engine=infra.engine, slot=stores.retention, days=s.retention_days, owner=worker.name,
        clock=infra.clock,
    )  # fmt: skip
    sender = None
    receivers = {  # each application's receiver (CONTRACT §8); '' the service-wide one
        app: (view.events_webhook_url, view.events_webhook_secret.get_secret_value())
        for app, view in s.app_views().items()
        if view.events_webhook_url is not None and view.events_webhook_secret is not None
    }
    if receivers:
        url, secret = receivers.pop("", (None, None))
        sender = EventSender(
            redis=infra.redis, keys=infra.keys, seal=infra.event_seal, url=url, secret=secret,
            http=infra.http, name=worker.name, clock=infra.clock, apps=receivers,
        )  # fmt: skip
        stack.push_async_callback(sender.aclose)
    sending = [p for p in (primary, fallback) if p is not None and p.name != "console"]
    check = None
    if sending:  # the console sends nothing a mailbox provider could refuse
        senders = {app: view.email_from for app, view in s.app_views().items()}  # each From domain
        check = SenderCheck(senders=senders, providers=sending, dns=DnsReader.of(s), clock=infra.clock)
    stats = StatsCompaction(sessions=infra.sessions)
    return WorkerComponents(worker, guard, retention, stats, sender, check)


STOP_GRACE = 10.0
"""Seconds a stopping worker gives retention's batch in progress (one DELETE of up to 1,000 rows),
the stats compaction's transaction and the reputation guard's check in progress."""


@contextlib.asynccontextmanager
async def running_worker(
    infra: Infrastructure, options: WorkerOptions = WorkerOptions()
) -> AsyncIterator[WorkerComponents]:
    """The worker's background tasks, running until the context closes."""
    async with contextlib.AsyncExitStack() as stack:
        built = await build_worker(infra, stack, options)
        background = built.tasks()
        tasks = {name: asyncio.create_task(task.run(), name=name) for name, task in background.items()}
        try:
            yield built
        finally:
            for task in background.values():
                task.stop()
            # Retention and the reputation guard end by themselves (at once, or after the batch or
            # check in progress): a statement cut off by cancellation could keep its connection
            # checked out past the engine's disposal.
            ending = {tasks["retention"], tasks["reputation-guard"], tasks["stats-compaction"]}
            await asyncio.wait(ending, timeout=STOP_GRACE)
            for running in tasks.values():
                await cancel_and_wait(running)
