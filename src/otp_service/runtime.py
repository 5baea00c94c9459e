"""Everything a running service holds: built once by the lifespan, closed in reverse order."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.logs import get_logger
from otp_service.settings import Settings

log = get_logger("runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    redis: Redis | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    async def check_database(self) -> None:
        async with asyncio.timeout(self.settings.dependency_timeout):
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def check_redis(self) -> None:
        if self.redis is None:
            return
        async with asyncio.timeout(self.settings.dependency_timeout):
            await self.redis.ping()


def create_redis(url: str, *, timeout: float) -> Redis:
    # One quick retry (a pooled connection gone stale after a Redis restart), no backoff:
    # callers bound the whole call and answer 503 rather than wait.
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        decode_responses=False,
    )


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    # httpx verifies certificates by default and honours SSL_CERT_FILE; redirects are off so
    # no URL we were told to fetch can send us somewhere we did not vet.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.provider_timeout, connect=min(5.0, settings.provider_timeout)
        ),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        trust_env=True,
    )


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with contextlib.AsyncExitStack() as stack:
        engine = create_engine(settings.database_url, timeout=settings.dependency_timeout)
        stack.push_async_callback(engine.dispose)
        if settings.database_url.startswith("sqlite"):
            # The embedded default creates its schema through the same Alembic migrations.
            await upgrade_engine(engine)
        http = await stack.enter_async_context(create_http_client(settings))
        redis = None
        if settings.redis_url is not None:
            redis = create_redis(settings.redis_url, timeout=settings.dependency_timeout)
            stack.push_async_callback(redis.aclose)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessions=create_sessionmaker(engine),
            http=http,
            redis=redis,
        )
        yield runtime
