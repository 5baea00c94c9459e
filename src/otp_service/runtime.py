"""Everything a running service holds: built once by the lifespan, closed in reverse order."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.delivery.providers.base import EmailProvider
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.providers.ses import SesProvider
from otp_service.delivery.queue import JobQueue, MemoryJobQueue, RedisJobQueue
from otp_service.delivery.reputation import ReputationGuard
from otp_service.delivery.sender import Deliverer
from otp_service.delivery.worker import DeliveryWorker, Outcome
from otp_service.limits.base import LimitStore, system_clock
from otp_service.limits.keys import RedisClient, RedisKeys
from otp_service.limits.memory_store import MemoryLimitStore
from otp_service.limits.pipelined import PipelinedRedis
from otp_service.limits.redis_store import RedisLimitStore
from otp_service.limits.scripts import ScriptClient
from otp_service.limits.send_rate import MemorySendRate, RedisSendRate, SendRateLimiter
from otp_service.logs import get_logger
from otp_service.metrics import DELIVERIES, PROVIDER_CALLS, PROVIDER_LATENCY
from otp_service.net import Network
from otp_service.otp.codes import CodeCrypto
from otp_service.otp.service import OtpService
from otp_service.otp.tokens import TokenIssuer
from otp_service.settings import Settings
from otp_service.suppression.admin import AdminService
from otp_service.validation.address import AddressValidator
from otp_service.webhooks.resend import ResendWebhook
from otp_service.webhooks.service import WebhookService
from otp_service.webhooks.sns import SnsVerifier

log = get_logger("runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    store: LimitStore
    queue: JobQueue
    send_rate: SendRateLimiter
    otp: OtpService
    deliverer: Deliverer
    worker: DeliveryWorker
    webhooks: WebhookService
    admin: AdminService
    tokens: TokenIssuer | None
    guard: ReputationGuard
    trusted_networks: tuple[Network, ...]
    redis: RedisClient | None = None
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


def _observe_provider_call(provider: str, result: str, seconds: float) -> None:
    PROVIDER_CALLS.labels(provider, result).inc()
    PROVIDER_LATENCY.labels(provider).observe(seconds)


def _observe_outcome(outcome: Outcome) -> None:
    DELIVERIES.labels(outcome.status, outcome.provider or "none").inc()


def create_redis_cluster(url: str, *, timeout: float) -> RedisCluster:
    # redis-py's cluster client has no blocking pool: past `max_connections` per node it raises
    # instead of queueing, so the bound is set well above the request concurrency of a process.
    return RedisCluster.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=1024,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


def create_redis(url: str, *, timeout: float) -> Redis:
    # One quick retry (a pooled connection gone stale after a Redis restart), no backoff:
    # callers bound the whole call and answer 503 rather than wait.
    # A blocking pool: under a burst, requests queue for a connection (bounded by `timeout`)
    # instead of failing; redis-py's default pool raises past 100 connections.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # Retry once, at once, only a connection found broken (Redis restarted): a timeout is
        # not retried, so a call takes at most ~`timeout` before the caller answers 503.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


def create_script_client(url: str, redis: RedisClient, *, timeout: float) -> ScriptClient:
    """The Lua scripts of every send and verify run on one pipelined connection
    (limits/pipelined.py) where it can speak to the server: plain TCP to a standalone Redis.
    Redis Cluster, TLS and unix sockets keep redis-py, which handles them."""
    if isinstance(redis, Redis) and urlsplit(url).scheme == "redis":
        return PipelinedRedis.from_url(url, timeout=timeout)
    return redis


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    # httpx verifies certificates by default and honours SSL_CERT_FILE; redirects are off so
    # no URL we were told to fetch can send us somewhere we did not vet.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.provider_timeout, connect=min(5.0, settings.provider_timeout)),
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
        clock = system_clock
        timeout = settings.dependency_timeout
        redis: RedisClient | None = None
        store: LimitStore
        queue: JobQueue
        send_rate: SendRateLimiter
        if settings.redis_url is not None:
            redis = (
                create_redis_cluster(settings.redis_url, timeout=timeout)
                if settings.redis_cluster
                else create_redis(settings.redis_url, timeout=timeout)
            )
            stack.push_async_callback(redis.aclose)
            scripts = create_script_client(settings.redis_url, redis, timeout=timeout)
            if scripts is not redis:
                stack.push_async_callback(scripts.aclose)
            keys = RedisKeys(settings.redis_key_prefix)
            queue = RedisJobQueue(redis, keys, timeout=timeout, clock=clock)
            store = RedisLimitStore(redis, keys, timeout=timeout, clock=clock, script_client=scripts)
            send_rate = RedisSendRate(
                redis, keys, rate=settings.send_rate, timeout=timeout, clock=clock, script_client=scripts
            )
        else:
            memory_queue = MemoryJobQueue(clock)
            queue = memory_queue
            store = MemoryLimitStore(memory_queue, clock=clock)
            send_rate = MemorySendRate(rate=settings.send_rate, clock=clock)
        crypto = CodeCrypto(settings.secret)
        validator = AddressValidator(
            extra_disposable=settings.disposable_domains_extra,
            allow=settings.disposable_domains_allow,
        )
        tokens = None
        if settings.jwt_private_key is not None:
            tokens = TokenIssuer(
                settings.jwt_private_key.get_secret_value(),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl=settings.jwt_ttl,
            )
        otp = OtpService(settings=settings, store=store, validator=validator, crypto=crypto, tokens=tokens)
        primary, fallback = await build_providers(settings, http, stack)
        deliverer = Deliverer(
            settings=settings, primary=primary, fallback=fallback, send_rate=send_rate, clock=clock
        )
        deliverer.on_attempt = _observe_provider_call
        sessions = create_sessionmaker(engine)
        worker = DeliveryWorker(
            queue=queue,
            crypto=crypto,
            deliverer=deliverer,
            engine=engine,
            concurrency=settings.worker_concurrency,
            visibility_timeout=settings.job_visibility_timeout,
            db_timeout=timeout,
            clock=clock,
        )
        worker.on_outcome = _observe_outcome
        guard = ReputationGuard(
            settings=settings, store=store, sessions=sessions,
            providers=[p.name for p in (primary, fallback) if p is not None],
        )  # fmt: skip
        deliverer.healthy = guard.healthy
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessions=sessions,
            http=http,
            store=store,
            queue=queue,
            send_rate=send_rate,
            otp=otp,
            deliverer=deliverer,
            worker=worker,
            webhooks=WebhookService(
                sessions=sessions,
                resend=ResendWebhook(
                    settings.resend_webhook_secret.get_secret_value()
                    if settings.resend_webhook_secret
                    else None
                ),
                sns=SnsVerifier(
                    http, topic_arns=settings.sns_topic_arns, host_pattern=settings.sns_cert_host_pattern
                ),
            ),
            admin=AdminService(
                sessions=sessions,
                store=store,
                global_limits=settings.global_daily_limits,
                send_rate=settings.send_rate,
            ),
            tokens=tokens,
            guard=guard,
            trusted_networks=tuple(settings.trusted_networks()),
            redis=redis,
        )
        if settings.worker_enabled:
            task = asyncio.create_task(worker.run(), name=f"delivery-worker-{worker.name}")

            stack.push_async_callback(worker.stop, task)
            guard_task = asyncio.create_task(guard.run(), name="reputation-guard")
            stack.push_async_callback(guard.stop, guard_task)
        yield runtime


async def build_provider(
    name: str, settings: Settings, http: httpx.AsyncClient, stack: contextlib.AsyncExitStack
) -> EmailProvider:
    if name == "console":
        return ConsoleProvider()
    if name == "resend":
        assert settings.resend_api_key is not None  # enforced by Settings
        return ResendProvider(
            http,
            api_url=settings.resend_api_url,
            api_key=settings.resend_api_key.get_secret_value(),
            timeout=settings.provider_timeout,
        )
    if name == "ses":
        # Our own loop retries and fails over; botocore's retries would hide throttling.
        config = AioConfig(
            connect_timeout=min(5.0, settings.provider_timeout),
            read_timeout=settings.provider_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        )
        client = await stack.enter_async_context(
            get_session().create_client(
                "sesv2",
                region_name=settings.ses_region,
                endpoint_url=settings.ses_endpoint_url,
                config=config,
            )
        )
        return SesProvider(client, configuration_set=settings.ses_configuration_set)
    raise ValueError(f"unknown email provider {name!r}")


async def build_providers(
    settings: Settings, http: httpx.AsyncClient, stack: contextlib.AsyncExitStack
) -> tuple[EmailProvider, EmailProvider | None]:
    primary = await build_provider(settings.email_provider, settings, http, stack)
    fallback = None
    if settings.email_fallback_provider is not None:
        fallback = await build_provider(settings.email_fallback_provider, settings, http, stack)
    return primary, fallback
