"""`/readyz`: whether the web process's own dependencies answer, each bounded by
OTP_DEPENDENCY_TIMEOUT."""

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.redisio import RedisClient, redis_guard


class Readiness:
    def __init__(self, *, engine: AsyncEngine, redis: RedisClient, timeout: float) -> None:
        self._engine = engine
        self._redis = redis
        self._timeout = timeout

    async def checks(self) -> dict[str, str]:
        """ "ok" or "down" for the database and for Redis (the embedded default's in-memory one
        answers like any other)."""

        async def database() -> None:
            async with asyncio.timeout(self._timeout), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        async def redis() -> None:
            async with redis_guard("ping"):
                await self._redis.execute("PING")

        results = await asyncio.gather(database(), redis(), return_exceptions=True)
        return {
            name: "ok" if not isinstance(result, BaseException) else "down"
            for name, result in zip(("database", "redis"), results, strict=True)
        }
