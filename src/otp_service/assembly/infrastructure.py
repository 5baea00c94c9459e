"""The clients and the shared objects every builder hands on, each built once."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from otp_service.audit.service import AuditLog
from otp_service.clock import Clock, system_clock
from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.delivery.heartbeat import RedisWorkerRegistry, WorkerRegistry
from otp_service.delivery.jobs import JobSealer
from otp_service.delivery.not_me import NotMeSealer
from otp_service.delivery.queue import JobQueue, RedisJobQueue
from otp_service.delivery.reputation import PauseState, RedisPauseState, ReputationGuard
from otp_service.delivery.sender import SendRateLimiter
from otp_service.events.outbox import EventOutbox, EventSeal
from otp_service.limits.send_rate import RedisSendRate
from otp_service.limits.throttle import RedisThrottle, Throttle
from otp_service.otp.store import CodeStore, RedisCodeStore
from otp_service.redisio import EmbeddedRedis, RedisClient, RedisKeys, open_redis
from otp_service.retention import RedisRetentionSlot, RetentionSlot
from otp_service.sealing import Sealer
from otp_service.settings import Settings
from otp_service.validation.mailbox import Mailboxes


@dataclass(frozen=True, slots=True)
class Stores:
    """The shared state every process sees, in Redis (the embedded default's in this process)."""

    codes: CodeStore
    throttle: Throttle
    queue: JobQueue
    pauses: PauseState
    send_rate: SendRateLimiter
    workers: WorkerRegistry
    retention: RetentionSlot


@dataclass(frozen=True, slots=True, kw_only=True)
class Infrastructure:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    redis: RedisClient
    keys: RedisKeys
    stores: Stores
    clock: Clock
    jobs: JobSealer
    """Sends seal jobs with it, the worker opens them."""
    event_seal: EventSeal
    """Events out, sealed by the outbox and opened by the sender: under the jobs' one Sealer."""
    not_me: NotMeSealer
    """The "Didn't ask for this?" tokens: sealed by the worker, opened by POST not-me."""
    mailboxes: Mailboxes
    audit: AuditLog
    providers: list[str]
    """The email provider, then the fallback if one is set."""
    reputation: ReputationGuard
    """One per process, shared by the admin API (report, resume) and the worker (healthy): a
    resume reaches the worker at once."""
    events: EventOutbox | None = None
    """Events out (CONTRACT §7), with OTP_EVENTS_WEBHOOK_URL set."""


def create_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    # httpx verifies certificates by default and honours SSL_CERT_FILE; redirects are off so
    # no URL we were told to fetch can send us somewhere we did not vet.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.provider_timeout, connect=min(5.0, settings.provider_timeout)),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        trust_env=True,
        transport=transport,
    )


def _stores(settings: Settings, redis: RedisClient, keys: RedisKeys, clock: Clock) -> Stores:
    return Stores(
        codes=RedisCodeStore(redis, keys, clock=clock),
        throttle=RedisThrottle(redis, keys, clock=clock),
        queue=RedisJobQueue(redis, keys, clock=clock),
        pauses=RedisPauseState(redis, keys, clock=clock),
        send_rate=RedisSendRate(redis, keys, rate=settings.send_rate, clock=clock),
        workers=RedisWorkerRegistry(redis, keys, clock=clock),
        retention=RedisRetentionSlot(redis, keys),
    )


def open_redis_client(settings: Settings, keys: RedisKeys) -> RedisClient:
    """OTP_REDIS_URL's server (or the primary OTP_REDIS_SENTINELS name), or without one the
    embedded default's in-memory Redis (the same scripts and commands, in this process)."""
    if settings.redis_url is None:
        return EmbeddedRedis()
    return open_redis(
        settings.redis_url, keys, timeout=settings.dependency_timeout, cluster=settings.redis_cluster,
        sentinels=settings.sentinel_addresses(), sentinel_master=settings.redis_sentinel_master,
        min_replicas=settings.redis_min_replicas, replica_timeout=settings.redis_replica_timeout,
    )  # fmt: skip


def provider_names(settings: Settings) -> list[str]:
    return [
        settings.email_provider,
        *([settings.email_fallback_provider] if settings.email_fallback_provider else []),
    ]


@contextlib.asynccontextmanager
async def open_infrastructure(
    settings: Settings, clock: Clock = system_clock
) -> AsyncIterator[Infrastructure]:
    async with contextlib.AsyncExitStack() as stack:
        engine = create_engine(settings.database_url, timeout=settings.dependency_timeout)
        stack.push_async_callback(engine.dispose)
        if settings.database_url.startswith("sqlite"):
            # The embedded default creates its schema through the same Alembic migrations.
            await upgrade_engine(engine)
        sessions = create_sessionmaker(engine)
        http = await stack.enter_async_context(create_http_client(settings))
        keys = RedisKeys(settings.redis_key_prefix)
        redis = open_redis_client(settings, keys)
        stack.push_async_callback(redis.aclose)
        stores = _stores(settings, redis, keys, clock)
        stack.push_async_callback(stores.queue.aclose)
        sealer = Sealer(settings.secret)
        event_seal = EventSeal(sealer)
        audit = AuditLog(sessions=sessions)
        providers = provider_names(settings)
        guard = ReputationGuard(
            settings=settings, pauses=stores.pauses, engine=engine, providers=providers, audit=audit,
            clock=clock,
        )  # fmt: skip
        events = None
        # Every application whose events go somewhere (CONTRACT §8: its own receiver, or the
        # service-wide one it falls back to); with applications configured, events name theirs.
        receivers = [app for app, view in settings.app_views().items() if view.events_webhook_url is not None]
        if receivers:
            apps = receivers if settings.app_ids else None
            events = EventOutbox(redis, keys, event_seal, clock=clock, apps=apps)
        yield Infrastructure(
            settings=settings, engine=engine, sessions=sessions, http=http, redis=redis, keys=keys,
            stores=stores, clock=clock, jobs=JobSealer(sealer), event_seal=event_seal,
            not_me=NotMeSealer(sealer), mailboxes=Mailboxes.of(settings), audit=audit, providers=providers,
            reputation=guard, events=events,
        )  # fmt: skip
