"""The reputation guard: rolling bounce and complaint rates per provider, from our own records
(deliveries sent, webhook events received). Over a threshold, above a minimum volume, a provider
is paused: jobs go to a healthy fallback, or, with none left, new sends answer 503
`sending_paused`. Only an operator resumes (admin API); rates then count from the resume on."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.db.engine import session_scope
from otp_service.db.models import Delivery, WebhookEvent
from otp_service.errors import ServiceError
from otp_service.limits.base import Clock, LimitStore, system_clock
from otp_service.logs import get_logger
from otp_service.settings import Settings
from otp_service.suppression.repository import BOUNCE_TYPES, COMPLAINT_TYPES
from otp_service.tasks import cancel_and_wait

log = get_logger("reputation")


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    sent: int
    bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None
    paused: bool
    reason: str | None
    since: datetime


class ReputationGuard:
    def __init__(
        self, *, settings: Settings, store: LimitStore, sessions: async_sessionmaker[AsyncSession],
        providers: list[str], clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self._s = settings
        self._store = store
        self._sessions = sessions
        self.providers = providers
        self._clock = clock
        self._paused: set[str] = set()
        self._stopping = False

    def healthy(self, provider: str) -> bool:
        """The worker's view, refreshed every check interval."""
        return provider not in self._paused

    async def _counts(self, session: AsyncSession, provider: str, since: datetime) -> tuple[int, int, int]:
        sent = await session.scalar(
            select(func.count(Delivery.id)).where(
                Delivery.provider == provider, Delivery.outcome == "sent", Delivery.created_at >= since
            )
        )
        events = select(func.count(WebhookEvent.id)).where(
            WebhookEvent.provider == provider,
            WebhookEvent.received_at >= since,
            WebhookEvent.outcome == "suppressed",
        )
        bounces = await session.scalar(events.where(WebhookEvent.event_type.in_(BOUNCE_TYPES)))
        complaints = await session.scalar(events.where(WebhookEvent.event_type.in_(COMPLAINT_TYPES)))
        return int(sent or 0), int(bounces or 0), int(complaints or 0)

    async def report(self) -> list[ProviderHealth]:
        pauses = await self._store.pauses()
        now = datetime.fromtimestamp(self._clock(), UTC)
        out = []
        async with session_scope(self._sessions) as session:
            for provider in self.providers:
                since = now - timedelta(seconds=self._s.reputation_window)
                resumed = await self._store.resumed_at(provider)
                if resumed is not None:
                    since = max(since, datetime.fromtimestamp(resumed / 1000, UTC))
                sent, bounces, complaints = await self._counts(session, provider, since)
                out.append(ProviderHealth(
                    provider=provider, sent=sent, bounces=bounces, complaints=complaints,
                    bounce_rate=bounces / sent if sent else None,
                    complaint_rate=complaints / sent if sent else None,
                    paused=provider in pauses, reason=pauses.get(provider), since=since,
                ))  # fmt: skip
        return out

    async def check(self) -> list[ProviderHealth]:
        """Evaluate every provider, pause what crossed a threshold, update the shared state."""
        report = await self.report()
        for health in report:
            if health.paused or health.sent < self._s.reputation_min_volume:
                continue
            reason = None
            if health.bounce_rate is not None and health.bounce_rate > self._s.reputation_max_bounce_rate:
                reason = f"bounce rate {health.bounce_rate:.2%} over {self._s.reputation_max_bounce_rate:.2%}"
            elif (
                health.complaint_rate is not None
                and health.complaint_rate > self._s.reputation_max_complaint_rate
            ):
                limit = self._s.reputation_max_complaint_rate
                reason = f"complaint rate {health.complaint_rate:.3%} over {limit:.3%}"
            if reason:
                await self._store.pause(health.provider, reason)
                log.error("reputation.provider_paused", extra={"provider": health.provider, "reason": reason,
                                                               "sent": health.sent})  # fmt: skip
        pauses = await self._store.pauses()
        self._paused = set(pauses)
        all_paused = all(p in pauses for p in self.providers)
        await self._store.set_sending_paused(all_paused)
        if all_paused:
            log.error("reputation.sending_paused", extra={"providers": sorted(pauses)})
        return await self.report() if pauses else report

    async def resume(self, provider: str) -> bool:
        resumed = await self._store.resume(provider, int(self._clock() * 1000))
        self._paused.discard(provider)
        log.warning("reputation.provider_resumed", extra={"provider": provider, "was_paused": resumed})
        return resumed

    async def stop(self, task: "asyncio.Task[None]") -> None:
        self._stopping = True
        await cancel_and_wait(task)

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self.check()
            except (ServiceError, SQLAlchemyError, OSError, TimeoutError) as exc:
                log.warning("reputation.check_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._s.reputation_check_interval)
