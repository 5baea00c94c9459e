"""The operators' usage report: sends against the caps, the send rate, what came back (bounces and
complaints matched to our deliveries, by the one definition the reputation guard uses too), and
the workers alive; and, asked for one application (CONTRACT §8), its own part of those: the sends
its worker handled, those emailed, and the bounces and complaints about them (the caps, the send
rate and the workers are shared, so they stay the whole service's)."""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from otp_service.clock import Clock
from otp_service.db.guard import database_guard
from otp_service.delivery import repository as deliveries
from otp_service.delivery.heartbeat import WorkerRegistry
from otp_service.delivery.queue import JobQueue, QueueStats
from otp_service.delivery.reputation import PauseState
from otp_service.errors import NotFound


class SendCounter(Protocol):
    async def global_usage(self, channel: str) -> int:
        """Accepted sends in the rolling 24 h (otp/store.py)."""
        ...


@dataclass(frozen=True, slots=True)
class AppUsage:
    """One application's part of the last 24 h, from its deliveries (deliveries.app)."""

    app: str
    accepted_24h: int
    """Its sends the worker handled (every outcome: emailed, suppressed, failed); test
    recipients' sends are never queued, and a send still queued is not counted yet."""
    sent_24h: int
    """Those handed to a provider."""
    bounces_24h: int
    complaints_24h: int

    @property
    def bounce_rate(self) -> float | None:
        return round(self.bounces_24h / self.sent_24h, 5) if self.sent_24h else None

    @property
    def complaint_rate(self) -> float | None:
        return round(self.complaints_24h / self.sent_24h, 5) if self.sent_24h else None


@dataclass(frozen=True, slots=True)
class Usage:
    sent_24h: dict[str, int]
    limits: dict[str, int]
    delivered_24h: int
    sent_last_minute: int
    send_rate_limit: int
    bounces_24h: int
    complaints_24h: int
    workers_alive: int
    test_recipients: int = 0
    application: AppUsage | None = None
    """The application asked about, or None: not asked."""

    def remaining(self, channel: str) -> int:
        return max(0, self.limits[channel] - self.sent_24h[channel])

    @property
    def current_send_rate(self) -> float:
        """Provider calls per second over the last minute."""
        return round(self.sent_last_minute / 60, 3)

    @property
    def bounce_rate(self) -> float | None:
        return round(self.bounces_24h / self.delivered_24h, 5) if self.delivered_24h else None

    @property
    def complaint_rate(self) -> float | None:
        return round(self.complaints_24h / self.delivered_24h, 5) if self.delivered_24h else None


@dataclass(frozen=True, slots=True)
class Live:
    queue: QueueStats
    sent_24h: dict[str, int]
    limits: dict[str, int]
    workers_alive: int
    paused: dict[str, bool]
    """Each configured provider: whether the reputation guard paused it."""


class UsageService:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sends: SendCounter,
        workers: WorkerRegistry,
        queue: JobQueue,
        pauses: PauseState,
        providers: list[str],
        global_limits: dict[str, int],
        send_rate: int,
        clock: Clock,
        test_recipients: int = 0,
        apps: Collection[str] = ("",),
    ) -> None:
        self._test_recipients = test_recipients
        self._apps = apps
        self._pauses = pauses
        self._providers = providers
        self._engine = engine
        self._sends = sends
        self._workers = workers
        self._limits = global_limits
        self._queue = queue
        self._send_rate = send_rate
        self._clock = clock

    async def live(self) -> Live:
        """What `/metrics` reads from the shared stores at scrape time."""
        stats = await self._queue.stats()
        sent = {channel: await self._sends.global_usage(channel) for channel in self._limits}
        paused = await self._pauses.pauses()
        providers = {name: name in paused for name in self._providers}
        return Live(stats, sent, dict(self._limits), await self._workers.alive(), providers)

    async def usage(self, app: str | None = None) -> Usage:
        """The whole service's usage; with `app` (one of `apps`, '' the service-wide application,
        else NotFound), that application's part too."""
        if app is not None and app not in self._apps:
            raise NotFound("No such application")
        now = datetime.fromtimestamp(self._clock(), UTC)
        day, minute = now - timedelta(days=1), now - timedelta(minutes=1)
        sent = {channel: await self._sends.global_usage(channel) for channel in self._limits}
        alive = await self._workers.alive()
        async with database_guard("usage"), self._engine.connect() as conn:
            delivered = await deliveries.count_sent(conn, day)
            last_minute = await deliveries.count_sent(conn, minute)
            found = await deliveries.traced(conn, day)
            application = await self._application(conn, day, app) if app is not None else None
        complaints = sum(t.count for t in found if t.complaint)
        bounces = sum(t.count for t in found) - complaints
        return Usage(
            sent, dict(self._limits), delivered, last_minute, self._send_rate, bounces, complaints, alive,
            self._test_recipients, application,
        )  # fmt: skip

    async def _application(self, conn: AsyncConnection, since: datetime, app: str) -> AppUsage:
        handled, emailed = await deliveries.count_app(conn, since, app)
        found = await deliveries.traced(conn, since, app=app)
        complaints = sum(t.count for t in found if t.complaint)
        return AppUsage(app, handled, emailed, sum(t.count for t in found) - complaints, complaints)
