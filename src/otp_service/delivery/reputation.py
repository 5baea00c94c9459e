"""The reputation guard: rolling bounce and complaint rates per provider, from our own records
(deliveries sent, and the bounces and complaints that suppressed an address). Over a threshold,
above a minimum volume, a provider is paused: jobs go to a healthy fallback, or, with none left,
new sends answer 503 `sending_paused`. Only an operator resumes (admin API); rates then count
from the resume on. The pause state is shared by every process through Redis."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.audit.service import AuditLog
from otp_service.background import Background
from otp_service.clock import Clock, now_ms, system_clock
from otp_service.db.guard import database_guard
from otp_service.delivery import repository as deliveries
from otp_service.errors import NotFound
from otp_service.logs import get_logger, mask_subnet
from otp_service.redisio import RedisClient, RedisKeys, redis_guard, text
from otp_service.settings import Settings
from otp_service.supervise import Loop

log = get_logger("reputation")


class PauseState(Protocol):
    async def pauses(self) -> dict[str, str]:
        """Paused providers and why."""
        ...

    async def pause(self, provider: str, reason: str, at_ms: int = 0) -> None: ...

    async def paused_at(self, provider: str) -> int | None: ...

    async def block_source(self, subnet: str, ms: int) -> bool:
        """Block a subnet from sending for `ms`; True when it was not blocked already."""
        ...

    async def resume(self, provider: str, at_ms: int) -> bool:
        """False when the provider was not paused."""
        ...

    async def resumed_at(self, provider: str) -> int | None: ...

    async def set_sending_paused(self, paused: bool) -> None: ...


class RedisPauseState:
    def __init__(self, redis: RedisClient, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def pauses(self) -> dict[str, str]:
        async with redis_guard("pauses"):
            raw = await self._redis.execute("HGETALL", self._keys.pauses)
        return {text(k): text(v) for k, v in zip(raw[::2], raw[1::2], strict=True)}

    async def pause(self, provider: str, reason: str, at_ms: int = 0) -> None:
        async with redis_guard("pause"):
            await asyncio.gather(
                self._redis.execute("HSET", self._keys.pauses, provider, reason),
                self._redis.execute("HSET", self._keys.paused_at, provider, at_ms),
            )

    async def paused_at(self, provider: str) -> int | None:
        async with redis_guard("paused_at"):
            value = await self._redis.execute("HGET", self._keys.paused_at, provider)
        return int(value) if value is not None else None

    async def block_source(self, subnet: str, ms: int) -> bool:
        async with redis_guard("block_source"):
            return (
                await self._redis.execute("SET", self._keys.source_blocked(subnet), "1", "NX", "PX", ms)
                is not None
            )

    async def resume(self, provider: str, at_ms: int) -> bool:
        k = self._keys
        async with redis_guard("resume"):
            removed, _, _ = await asyncio.gather(
                self._redis.execute("HDEL", k.pauses, provider),
                self._redis.execute("HSET", k.resumed, provider, at_ms),
                self._redis.execute("DEL", k.sending_paused),
            )
        return bool(removed)

    async def resumed_at(self, provider: str) -> int | None:
        async with redis_guard("resumed_at"):
            value = await self._redis.execute("HGET", self._keys.resumed, provider)
        return int(value) if value is not None else None

    async def set_sending_paused(self, paused: bool) -> None:
        async with redis_guard("sending_paused"):
            if paused:
                await self._redis.execute("SET", self._keys.sending_paused, "1")
            else:
                await self._redis.execute("DEL", self._keys.sending_paused)


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
    max_bounce_rate: float
    max_complaint_rate: float
    min_volume: int
    bounced_mailboxes: int = 0
    complained_mailboxes: int = 0


GUARD_ACTOR = "reputation-guard"
"""The audit log's key fingerprint for the guard's own pauses and resumes (CONTRACT §3)."""

DAY = timedelta(days=1)


class ReputationGuard(Background):
    """Pauses a provider only on evidence, and blames the source (CONTRACT §6): a rate over its
    threshold, above the minimum volume, from at least the minimum of distinct mailboxes; each
    bounce and complaint traced, through the delivery it answers, to the subnet that requested
    that send. A subnet past OTP_REPUTATION_SOURCE_LIMIT in 24 h is blocked from sending for
    24 h and its events stop counting toward any provider's rates; a paused provider is
    re-evaluated after OTP_REPUTATION_COOLOFF and resumed when the thresholds hold."""

    def __init__(
        self, *, settings: Settings, pauses: PauseState, engine: AsyncEngine, providers: list[str],
        audit: AuditLog | None = None, clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._pauses = pauses
        self._engine = engine
        self.providers = providers
        self._audit = audit
        self._clock = clock
        self._paused: set[str] = set()
        self._blocked: list[str] = []
        super().__init__()

    def healthy(self, provider: str) -> bool:
        """The worker's view, refreshed every check interval."""
        return provider not in self._paused

    async def report(self) -> list[ProviderHealth]:
        s = self._settings
        pauses = await self._pauses.pauses()
        now = datetime.fromtimestamp(self._clock(), UTC)
        out = []
        async with database_guard("reputation.report"), self._engine.connect() as conn:
            for provider in self.providers:
                since = now - timedelta(seconds=s.reputation_window)
                resumed = await self._pauses.resumed_at(provider)
                if resumed is not None:
                    since = max(since, datetime.fromtimestamp(resumed / 1000, UTC))
                sent = await deliveries.count_sent(conn, since, provider=provider)
                found = await deliveries.bounces_and_complaints(
                    conn, since, provider, exclude_sources=self._blocked
                )
                out.append(ProviderHealth(
                    provider=provider, sent=sent, bounces=found.bounces, complaints=found.complaints,
                    bounce_rate=found.bounces / sent if sent else None,
                    complaint_rate=found.complaints / sent if sent else None,
                    paused=provider in pauses, reason=pauses.get(provider), since=since,
                    max_bounce_rate=s.reputation_max_bounce_rate,
                    max_complaint_rate=s.reputation_max_complaint_rate,
                    min_volume=s.reputation_min_volume,
                    bounced_mailboxes=found.bounced_mailboxes,
                    complained_mailboxes=found.complained_mailboxes,
                ))  # fmt: skip
        return out

    def _over(self, health: ProviderHealth) -> str | None:
        """Why this provider must be paused, or None: the rate over its threshold, the volume
        and the distinct mailboxes behind it at their minimums."""
        s = self._settings
        if health.sent < s.reputation_min_volume:
            return None
        if (
            health.bounce_rate is not None
            and health.bounce_rate > s.reputation_max_bounce_rate
            and health.bounced_mailboxes >= s.reputation_min_bounces
        ):
            return f"bounce rate {health.bounce_rate:.2%} over {s.reputation_max_bounce_rate:.2%}"
        if (
            health.complaint_rate is not None
            and health.complaint_rate > s.reputation_max_complaint_rate
            and health.complained_mailboxes >= s.reputation_min_complaints
        ):
            return f"complaint rate {health.complaint_rate:.3%} over {s.reputation_max_complaint_rate:.3%}"
        return None

    async def _block_sources(self) -> None:
        """Block the subnets past the source limit, and keep them out of the rates."""
        s = self._settings
        since = datetime.fromtimestamp(self._clock(), UTC) - DAY
        async with database_guard("reputation.sources"), self._engine.connect() as conn:
            self._blocked = await deliveries.sources_over(conn, since, s.reputation_source_limit)
        for subnet in self._blocked:
            if await self._pauses.block_source(subnet, int(DAY.total_seconds() * 1000)):
                log.warning("abuse.source_blocked", extra={"subnet": mask_subnet(subnet)})

    async def _record(self, action: str, provider: str, note: str) -> None:
        if self._audit is not None:
            await self._audit.record(actor=GUARD_ACTOR, action=action, target=provider, note=note)

    async def check(self) -> list[ProviderHealth]:
        """Block the sources past their limit, evaluate every provider, pause what crossed a
        threshold on enough evidence, resume what cooled off, update the shared state."""
        await self._block_sources()
        now_at = now_ms(self._clock)
        report = await self.report()
        for health in report:
            reason = self._over(health)
            if reason and not health.paused:
                await self._pauses.pause(health.provider, reason, now_at)
                await self._record("reputation.pause", health.provider, reason)
                log.error("reputation.provider_paused", extra={"provider": health.provider, "reason": reason,
                                                               "sent": health.sent})  # fmt: skip
            elif health.paused and reason is None:
                paused_at = await self._pauses.paused_at(health.provider) or 0
                if now_at - paused_at >= self._settings.reputation_cooloff * 1000:
                    # Cooled off and the thresholds hold (a blocked source's events no longer
                    # count): resumed by the guard itself.
                    await self._pauses.resume(health.provider, now_at)
                    await self._record("reputation.resume", health.provider, "cooled off; thresholds hold")
                    log.warning(
                        "reputation.provider_resumed", extra={"provider": health.provider, "by": GUARD_ACTOR}
                    )
        pauses = await self._pauses.pauses()
        self._paused = set(pauses)
        all_paused = all(p in pauses for p in self.providers)
        await self._pauses.set_sending_paused(all_paused)
        if all_paused:
            log.error("reputation.sending_paused", extra={"providers": sorted(pauses)})
        return await self.report()

    async def resume(self, provider: str) -> bool:
        """Resume a paused provider (an operator's call); its rates count again from now."""
        if provider not in self.providers:
            raise NotFound(f"{provider} is not a configured provider")
        resumed = await self._pauses.resume(provider, now_ms(self._clock))
        self._paused.discard(provider)
        log.warning("reputation.provider_resumed", extra={"provider": provider, "was_paused": resumed})
        return resumed

    def loops(self) -> dict[str, Loop]:
        """Check every interval."""
        every = self._settings.reputation_check_interval
        return {"reputation": self.every(every, self.check, failed="reputation.check_failed")}
