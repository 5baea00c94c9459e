"""Worker liveness: each delivery worker writes a heartbeat (a Redis key with a TTL) from inside
its consumer loop, so a worker whose loop is stuck stops beating just as a dead one does.
`/metrics` (`otp_workers_alive`) and the admin usage report count the live ones."""

import asyncio
import json
from typing import Protocol

from otp_service.clock import Clock, now_ms
from otp_service.redisio import RedisClient, RedisKeys, redis_guard

HEARTBEAT_EVERY = 5.0
"""Seconds between beats; a worker counts as alive for HEARTBEAT_TTL after its last one."""
HEARTBEAT_TTL = 15.0


class WorkerRegistry(Protocol):
    async def beat(self, name: str, info: dict[str, object]) -> None: ...

    async def alive(self) -> int: ...


class RedisWorkerRegistry:
    def __init__(self, redis: RedisClient, keys: RedisKeys, *, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock

    async def beat(self, name: str, info: dict[str, object]) -> None:
        now = now_ms(self._clock)
        ttl = int(HEARTBEAT_TTL * 1000)
        k = self._keys
        async with redis_guard("workers.beat"):
            await asyncio.gather(
                self._redis.execute("SET", k.worker(name), json.dumps(info), "PX", ttl),
                self._redis.execute("ZADD", k.workers, now + ttl, name),
                self._redis.execute("ZREMRANGEBYSCORE", k.workers, "-inf", now),
            )

    async def alive(self) -> int:
        async with redis_guard("workers.alive"):
            count = await self._redis.execute("ZCOUNT", self._keys.workers, now_ms(self._clock), "+inf")
        return int(count)
