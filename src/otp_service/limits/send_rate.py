"""Service-wide provider call rate: a token bucket of OTP_SEND_RATE/s with a burst of the same.

Over any T seconds at most rate x (T + 1) provider calls leave the service, whatever the number
of processes (the Redis bucket is one Lua script). Callers wait for a token rather than fail.
"""

import asyncio
from typing import Protocol

from otp_service.limits.base import Clock, system_clock
from otp_service.limits.keys import RedisClient, RedisKeys
from otp_service.limits.redis_store import redis_guard
from otp_service.limits.scripts import ScriptClient, Scripts


class SendRateLimiter(Protocol):
    async def try_take(self) -> int:
        """0 when a token was taken, else ms until one may be."""
        ...


async def acquire(limiter: SendRateLimiter) -> None:
    while wait := await limiter.try_take():
        await asyncio.sleep(wait / 1000)


class RedisSendRate:
    def __init__(
        self,
        redis: RedisClient,
        keys: RedisKeys,
        *,
        rate: int,
        timeout: float,
        clock: Clock = system_clock,
        script_client: ScriptClient | None = None,
    ) -> None:
        self._script = Scripts(script_client or redis).take_token
        self._key = keys.send_bucket
        self._rate = rate
        self._timeout = timeout
        self._clock = clock

    async def try_take(self) -> int:
        async with redis_guard(self._timeout, "send_rate"):
            wait = await self._script(
                keys=[self._key], args=[int(self._clock() * 1000), self._rate, self._rate]
            )
        return int(wait)


class MemorySendRate:
    def __init__(self, *, rate: int, clock: Clock = system_clock) -> None:
        self._rate = rate
        self._tokens = float(rate)
        self._ts = clock() * 1000
        self._clock = clock

    async def try_take(self) -> int:
        now = self._clock() * 1000
        if now > self._ts:
            self._tokens = min(self._rate, self._tokens + (now - self._ts) * self._rate / 1000)
            self._ts = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0
        return max(1, int((1 - self._tokens) * 1000 / self._rate + 0.999))
