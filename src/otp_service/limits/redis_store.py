"""Production limit store: every decision is one Lua script, one round trip."""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from otp_service.errors import Unavailable
from otp_service.limits.base import (
    DAY_MS,
    Clock,
    SendDecision,
    SendRequest,
    SendStatus,
    VerifyDecision,
    VerifyRequest,
    VerifyStatus,
    system_clock,
)
from otp_service.limits.keys import RedisKeys
from otp_service.limits.scripts import Scripts
from otp_service.logs import get_logger
from otp_service.settings import Rate

log = get_logger("limits")


@contextlib.asynccontextmanager
async def redis_guard(timeout: float, operation: str) -> AsyncIterator[None]:
    """Redis slow or down: fail closed with 503 within `timeout`, never a 500 or a hang."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("redis.unavailable", extra={"operation": operation, "error": type(exc).__name__})
        raise Unavailable("The limit store is not answering; try again shortly") from exc


def _ms(clock: Clock) -> int:
    return int(clock() * 1000)


class RedisLimitStore:
    def __init__(self, redis: Redis, keys: RedisKeys, *, timeout: float, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = Scripts(redis)
        self._timeout = timeout
        self._clock = clock

    async def decide_send(self, req: SendRequest) -> SendDecision:
        k = self._keys
        keys = [
            k.throttle("otp_send", req.client_ip),
            k.cooldown(req.address_id),
            k.daily(req.address_id),
            k.global_sends(req.channel),
            k.code(req.address_id),
            k.jobs,
        ]
        args: list[bytes | str | int] = [
            _ms(self._clock),
            req.ip_rate.limit,
            req.ip_rate.period_seconds * 1000,
            secrets.token_hex(8),
            req.cooldown_ms,
            req.daily_limit,
            req.global_limit,
            req.code_hash,
            req.code_ttl_ms,
            req.job_payload,
        ]
        async with redis_guard(self._timeout, "send"):
            status, value = await self._scripts.send(keys=keys, args=args)
        status = SendStatus(status.decode())
        if status is SendStatus.OK:
            return SendDecision(status, job_id=value.decode())
        return SendDecision(status, retry_after_ms=int(value))

    async def throttle(self, scope: str, client_ip: str, rate: Rate) -> int:
        keys = [self._keys.throttle(scope, client_ip)]
        args: list[bytes | str | int] = [
            _ms(self._clock),
            rate.limit,
            rate.period_seconds * 1000,
            secrets.token_hex(8),
        ]
        async with redis_guard(self._timeout, "throttle"):
            wait = await self._scripts.throttle(keys=keys, args=args)
        return int(wait)

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        keys = [self._keys.throttle("otp_verify", req.client_ip), self._keys.code(req.address_id)]
        args: list[bytes | str | int] = [
            _ms(self._clock),
            req.ip_rate.limit,
            req.ip_rate.period_seconds * 1000,
            secrets.token_hex(8),
            req.code_hash,
            req.max_attempts,
        ]
        async with redis_guard(self._timeout, "verify"):
            status, value = await self._scripts.verify(keys=keys, args=args)
        decision = VerifyStatus(status.decode())
        if decision is VerifyStatus.RATE_LIMITED:
            return VerifyDecision(decision, retry_after_ms=int(value))
        return VerifyDecision(decision, attempts_remaining=int(value))

    async def global_usage(self, channel: str) -> int:
        key = self._keys.global_sends(channel)
        now = _ms(self._clock)
        async with redis_guard(self._timeout, "usage"):
            count = await self._redis.zcount(key, now - DAY_MS + 1, "+inf")
        return int(count)
