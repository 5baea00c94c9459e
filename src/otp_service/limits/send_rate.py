"""Service-wide provider call rate: a token bucket of OTP_SEND_RATE/s with a burst of the same.

Over any T seconds at most rate x (T + 1) provider calls leave the service, whatever the number
of processes (the Redis bucket is one Lua script). Callers wait for a token rather than fail.
"""

from otp_service.clock import Clock, now_ms, system_clock
from otp_service.redisio import RedisClient, RedisKeys, Script, redis_guard


class RedisSendRate:
    _SCRIPT = Script(("otp_service.limits", "take_token"))

    def __init__(
        self, redis: RedisClient, keys: RedisKeys, *, rate: int, clock: Clock = system_clock
    ) -> None:
        self._redis = redis
        self._key = keys.send_bucket
        self._rate = rate
        self._clock = clock

    async def try_take(self) -> int:
        """0 when a token was taken, else ms until one may be."""
        async with redis_guard("send_rate"):
            wait = await self._SCRIPT(self._redis, [self._key], [now_ms(self._clock), self._rate, self._rate])
        return int(wait)
