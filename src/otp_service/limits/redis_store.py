"""Production limit store: every decision is one Lua script, one round trip."""

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator

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
from otp_service.limits.keys import RedisClient, RedisKeys
from otp_service.limits.scripts import ScriptClient, Scripts
from otp_service.logs import get_logger
from otp_service.settings import Rate

log = get_logger("limits")


@contextlib.asynccontextmanager
async def redis_guard(timeout: float | None, operation: str) -> AsyncIterator[None]:
    """Redis slow or down: fail closed with 503, never a 500 or a hang.

    On the request path `timeout` is None: the client bounds every call itself at
    OTP_DEPENDENCY_TIMEOUT (PipelinedRedis's watchdog, or redis-py's socket and pool timeouts,
    see runtime.create_redis), and an asyncio timer per request cost 8% of the verify path's
    CPU (py-spy).
    """
    try:
        if timeout is None:
            yield
        else:
            async with asyncio.timeout(timeout):
                yield
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("redis.unavailable", extra={"operation": operation, "error": type(exc).__name__})
        raise Unavailable("The limit store is not answering; try again shortly") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(clock: Clock) -> int:
    return int(clock() * 1000)


class RedisLimitStore:
    def __init__(
        self,
        redis: RedisClient,
        keys: RedisKeys,
        *,
        timeout: float,
        clock: Clock = system_clock,
        script_client: ScriptClient | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        # The request path's scripts may run on a faster client (limits/pipelined.py).
        self._scripts = Scripts(script_client or redis)
        self._timeout = timeout
        self._clock = clock
        # Sorted-set members must be unique across processes and hosts: a random per-process
        # prefix and a counter (os.urandom per request was a syscall on the hot path).
        self._nonce = os.urandom(6).hex()
        self._seq = itertools.count()

    def _member(self) -> str:
        return f"{self._nonce}{next(self._seq)}"

    def _throttle_args(self, rate: Rate) -> list[bytes | str | int]:
        """ARGV[1..4] of every script: now (ms), IP limit, IP window (ms), unique member."""
        return [_ms(self._clock), rate.limit, rate.period_seconds * 1000, self._member()]

    async def decide_send(self, req: SendRequest) -> SendDecision:
        k = self._keys
        keys = [
            k.throttle("otp_send", req.client_ip),
            k.cooldown(req.address_id),
            k.daily(req.address_id),
            k.global_sends(req.channel),
            k.code(req.address_id),
            k.jobs,
            k.sending_paused,
        ]
        args = [
            *self._throttle_args(req.ip_rate),
            req.cooldown_ms,
            req.daily_limit,
            req.global_limit,
            req.code_hash,
            req.code_ttl_ms,
            req.job_payload,
        ]
        async with redis_guard(None, "send"):
            status, value = await self._scripts.send(keys=keys, args=args)
        status = SendStatus(status.decode())
        if status is SendStatus.OK:
            return SendDecision(status, job_id=value.decode())
        return SendDecision(status, retry_after_ms=int(value))

    async def throttle(self, scope: str, client_ip: str, rate: Rate) -> int:
        keys = [self._keys.throttle(scope, client_ip)]
        args = self._throttle_args(rate)
        async with redis_guard(None, "throttle"):
            wait = await self._scripts.throttle(keys=keys, args=args)
        return int(wait)

    async def verify(self, req: VerifyRequest) -> VerifyDecision:
        keys = [self._keys.throttle("otp_verify", req.client_ip), self._keys.code(req.address_id)]
        args = [*self._throttle_args(req.ip_rate), req.code_hash, req.max_attempts]
        async with redis_guard(None, "verify"):
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

    async def pauses(self) -> dict[str, str]:
        async with redis_guard(self._timeout, "pauses"):
            raw = await self._redis.hgetall(self._keys.pauses)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def pause(self, provider: str, reason: str) -> None:
        async with redis_guard(self._timeout, "pause"):
            await self._redis.hset(self._keys.pauses, provider, reason)

    async def resume(self, provider: str, now_ms: int) -> bool:
        async with redis_guard(self._timeout, "resume"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.pauses, provider)
            pipe.hset(self._keys.resumed, provider, now_ms)
            pipe.delete(self._keys.sending_paused)
            removed, _, _ = await pipe.execute()
        return bool(removed)

    async def resumed_at(self, provider: str) -> int | None:
        async with redis_guard(self._timeout, "resumed_at"):
            value = await self._redis.hget(self._keys.resumed, provider)
        return int(value) if value is not None else None

    async def set_sending_paused(self, paused: bool) -> None:
        async with redis_guard(self._timeout, "sending_paused"):
            if paused:
                await self._redis.set(self._keys.sending_paused, "1")
            else:
                await self._redis.delete(self._keys.sending_paused)
