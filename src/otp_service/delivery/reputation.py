"""The reputation guard: rolling bounce and complaint rates per provider, from our own records
(deliveries sent, and the bounces and complaints that suppressed an address). Over a threshold,
above a minimum volume, a provider is paused: jobs go to a healthy fallback, or, with none left,
new sends answer 503 `sending_paused`. Only an operator resumes (admin API); rates then count
from the resume on. The pause state is shared by every process through Redis."""

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.clock import Clock, now_ms, system_clock
from otp_service.delivery import repository as deliveries
from otp_service.errors import NotFound, ServiceError, Unavailable
from otp_service.logs import get_logger
from otp_service.redisio import RedisClient, RedisKeys, redis_guard, text
from otp_service.settings import Settings
from otp_service.supervise import Beat, supervise
from otp_service.webhooks import repository as events

log = get_logger("reputation")


class PauseState(Protocol):
    async def pauses(self) -> dict[str, str]:
        """Paused providers and why."""
        ...

    async def pause(self, provider: str, reason: str) -> None: ...

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

    async def pause(self, provider: str, reason: str) -> None:
        async with redis_guard("pause"):
            await self._redis.execute("HSET", self._keys.pauses, provider, reason)

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


class ReputationGuard:
    def __init__(
        self, *, settings: Settings, pauses: PauseState, engine: AsyncEngine, providers: list[str],
        clock: Clock = system_clock,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._pauses = pauses
        self._engine = engine
        self.providers = providers
        self._clock = clock
        self._paused: set[str] = set()
        self._stopping = asyncio.Event()

    def healthy(self, provider: str) -> bool:
        """The worker's view, refreshed every check interval."""
        return provider not in self._paused

    async def report(self) -> list[ProviderHealth]:
        pauses = await self._pauses.pauses()
        now = datetime.fromtimestamp(self._clock(), UTC)
        out = []
        try:
            async with self._engine.connect() as conn:
                for provider in self.providers:
                    since = now - timedelta(seconds=self._settings.reputation_window)
                    resumed = await self._pauses.resumed_at(provider)
                    if resumed is not None:
                        since = max(since, datetime.fromtimestamp(resumed / 1000, UTC))
                    sent = await deliveries.count_sent(conn, since, provider=provider)
                    bounces, complaints = await events.count_bounces_and_complaints(conn, since, provider)
                    out.append(ProviderHealth(
                        provider=provider, sent=sent, bounces=bounces, complaints=complaints,
                        bounce_rate=bounces / sent if sent else None,
                        complaint_rate=complaints / sent if sent else None,
                        paused=provider in pauses, reason=pauses.get(provider), since=since,
                        max_bounce_rate=self._settings.reputation_max_bounce_rate,
                        max_complaint_rate=self._settings.reputation_max_complaint_rate,
                        min_volume=self._settings.reputation_min_volume,
                    ))  # fmt: skip
        except (SQLAlchemyError, OSError) as exc:
            raise Unavailable("The database is not answering") from exc
        return out

    async def check(self) -> list[ProviderHealth]:
        """Evaluate every provider, pause what crossed a threshold, update the shared state."""
        report = await self.report()
        for health in report:
            if health.paused or health.sent < self._settings.reputation_min_volume:
                continue
            reason = None
            if (
                health.bounce_rate is not None
                and health.bounce_rate > self._settings.reputation_max_bounce_rate
            ):
                limit = self._settings.reputation_max_bounce_rate
                reason = f"bounce rate {health.bounce_rate:.2%} over {limit:.2%}"
            elif (
                health.complaint_rate is not None
                and health.complaint_rate > self._settings.reputation_max_complaint_rate
            ):
                limit = self._settings.reputation_max_complaint_rate
                reason = f"complaint rate {health.complaint_rate:.3%} over {limit:.3%}"
            if reason:
                await self._pauses.pause(health.provider, reason)
                log.error("reputation.provider_paused", extra={"provider": health.provider, "reason": reason,
                                                               "sent": health.sent})  # fmt: skip
        pauses = await self._pauses.pauses()
        self._paused = set(pauses)
        all_paused = all(p in pauses for p in self.providers)
        await self._pauses.set_sending_paused(all_paused)
        if all_paused:
            log.error("reputation.sending_paused", extra={"providers": sorted(pauses)})
        return await self.report() if pauses else report

    async def resume(self, provider: str) -> bool:
        """Resume a paused provider (an operator's call); its rates count again from now."""
        if provider not in self.providers:
            raise NotFound(f"{provider} is not a configured provider")
        resumed = await self._pauses.resume(provider, now_ms(self._clock))
        self._paused.discard(provider)
        log.warning("reputation.provider_resumed", extra={"provider": provider, "was_paused": resumed})
        return resumed

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Check every interval, supervised (supervise.py) until stop()."""
        await supervise("reputation", self._checks, stopping=self._stopping)

    async def _checks(self, beat: Beat) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
                beat.ok()
            except (ServiceError, SQLAlchemyError, OSError, TimeoutError) as exc:
                log.warning("reputation.check_failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.reputation_check_interval)
