"""Builds the per-domain objects from the settings, once: the web lifespan (app.py) and the
`otp-service worker` command (cli.py) both start here. Every object gets its collaborators
through its constructor; nothing is patched after it is built.

    open_infrastructure   engine, Redis client, HTTP client, clock (or the embedded twins)
    build_web             what the routes use: OtpService, SuppressionService, WebhookService,
                          UsageService, ReputationGuard (report and resume), TokenIssuer, Readiness
    build_worker          DeliveryWorker, and the ReputationGuard and Retention that run beside it
    running_worker        runs the three as tasks for as long as the context is open
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from httpx_aiohttp import AiohttpTransport
from sqlalchemy.ext.asyncio import AsyncEngine

from otp_service.api.state import WebState
from otp_service.audit.keys import AdminKeys, MetricsAccess
from otp_service.audit.service import AuditLog
from otp_service.clock import Clock, system_clock
from otp_service.db.engine import create_engine, create_sessionmaker
from otp_service.db.migrate import upgrade_engine
from otp_service.delivery import repository as deliveries
from otp_service.delivery.heartbeat import RedisWorkerRegistry, WorkerRegistry
from otp_service.delivery.jobs import JobSealer
from otp_service.delivery.lookup import DeliveryLookup
from otp_service.delivery.providers.base import EmailProvider
from otp_service.delivery.providers.console import ConsoleProvider
from otp_service.delivery.providers.resend import ResendProvider
from otp_service.delivery.providers.ses import SesProvider
from otp_service.delivery.providers.smtp import SmtpProvider
from otp_service.delivery.queue import JobQueue, RedisJobQueue
from otp_service.delivery.reputation import PauseState, RedisPauseState, ReputationGuard
from otp_service.delivery.sender import Deliverer, SendRateLimiter
from otp_service.delivery.usage import UsageService
from otp_service.delivery.worker import FORGET_IDLE_MS, DeliveryWorker, Outcome
from otp_service.events.outbox import EventOutbox, EventSeal, EventSender
from otp_service.limits.send_rate import RedisSendRate
from otp_service.limits.throttle import RedisThrottle, Throttle
from otp_service.otp.codes import CodeCrypto
from otp_service.otp.service import OtpService
from otp_service.otp.store import CodeStore, RedisCodeStore
from otp_service.otp.tokens import TokenIssuer
from otp_service.otp.why import LimitsLookup
from otp_service.readiness import Readiness
from otp_service.redisio import EmbeddedRedis, RedisClient, RedisKeys, open_redis
from otp_service.retention import RedisRetentionSlot, Retention, RetentionSlot
from otp_service.sealing import Sealer
from otp_service.settings import Settings, parse_nameserver
from otp_service.suppression.service import SuppressionService
from otp_service.validation.address import AddressValidator
from otp_service.validation.captcha import CaptchaCheck
from otp_service.validation.deliverability import DeliverabilityCheck, make_resolver
from otp_service.validation.mailbox import Mailboxes
from otp_service.validation.typos import POPULAR_PROVIDERS
from otp_service.webhooks.resend import ResendWebhook
from otp_service.webhooks.service import WebhookService
from otp_service.webhooks.sns import SnsVerifier


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


@dataclass(frozen=True, slots=True)
class Infrastructure:
    settings: Settings
    engine: AsyncEngine
    http: httpx.AsyncClient
    redis: RedisClient
    stores: Stores
    clock: Clock
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


def create_provider_http_client(settings: Settings) -> httpx.AsyncClient:
    """The email provider's client: httpx over aiohttp's connection pool and C HTTP parser
    (httpx-aiohttp), which costs the worker a fraction of httpcore's CPU per email (measured in
    the README's "Performance" section). Certificates are verified as httpx does (SSL_CERT_FILE)."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return create_http_client(settings, AiohttpTransport(limits=limits, trust_env=True))


def _stores(settings: Settings, redis: RedisClient, clock: Clock) -> Stores:
    keys = RedisKeys(settings.redis_key_prefix)
    return Stores(
        codes=RedisCodeStore(redis, keys, clock=clock),
        throttle=RedisThrottle(redis, keys, clock=clock),
        queue=RedisJobQueue(redis, keys, clock=clock),
        pauses=RedisPauseState(redis, keys),
        send_rate=RedisSendRate(redis, keys, rate=settings.send_rate, clock=clock),
        workers=RedisWorkerRegistry(redis, keys, clock=clock),
        retention=RedisRetentionSlot(redis, keys),
    )


def open_redis_client(settings: Settings) -> RedisClient:
    """OTP_REDIS_URL's server, or without one the embedded default's in-memory Redis (the same
    scripts and commands, in this process)."""
    if settings.redis_url is None:
        return EmbeddedRedis()
    keys = RedisKeys(settings.redis_key_prefix)
    return open_redis(
        settings.redis_url, keys, timeout=settings.dependency_timeout, cluster=settings.redis_cluster
    )


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
        http = await stack.enter_async_context(create_http_client(settings))
        redis = open_redis_client(settings)
        stack.push_async_callback(redis.aclose)
        stores = _stores(settings, redis, clock)
        stack.push_async_callback(stores.queue.aclose)
        guard = ReputationGuard(
            settings=settings, pauses=stores.pauses, engine=engine, providers=_provider_names(settings),
            audit=AuditLog(sessions=create_sessionmaker(engine)), clock=clock,
        )  # fmt: skip
        events = None
        if settings.events_webhook_url is not None:
            keys = RedisKeys(settings.redis_key_prefix)
            events = EventOutbox(redis, keys, EventSeal(Sealer(settings.secret)), clock=clock)
        yield Infrastructure(settings, engine, http, redis, stores, clock, guard, events)


def _provider_names(settings: Settings) -> list[str]:
    return [
        settings.email_provider,
        *([settings.email_fallback_provider] if settings.email_fallback_provider else []),
    ]


def _captcha(infra: Infrastructure) -> CaptchaCheck | None:
    s = infra.settings
    if s.captcha_provider is None or s.captcha_secret is None:
        return None
    secret = s.captcha_secret.get_secret_value()
    return CaptchaCheck(infra.http, provider=s.captcha_provider, secret=secret, url=s.captcha_verify_url)


def _deliverability(infra: Infrastructure) -> DeliverabilityCheck | None:
    s = infra.settings
    if not s.deliverability_checked:
        return None
    resolver = make_resolver([parse_nameserver(n) for n in s.dns_nameservers], s.dns_timeout)
    return DeliverabilityCheck(resolver, never_look_up=POPULAR_PROVIDERS, clock=infra.clock)


def build_web(infra: Infrastructure) -> WebState:
    s, stores = infra.settings, infra.stores
    tokens = None
    if s.jwt_private_key is not None:
        tokens = TokenIssuer(
            s.jwt_private_key.get_secret_value(), issuer=s.jwt_issuer, audience=s.jwt_audience, ttl=s.jwt_ttl
        )
    sessions = create_sessionmaker(infra.engine)
    resend_secret = s.resend_webhook_secret.get_secret_value() if s.resend_webhook_secret else None
    otp = OtpService(
        settings=s,
        store=stores.codes,
        throttle=stores.throttle,
        validator=AddressValidator(
            extra_disposable=s.disposable_domains_extra, allow=s.disposable_domains_allow
        ),
        crypto=CodeCrypto(s.secret),
        sealer=JobSealer(Sealer(s.secret)),
        tokens=tokens,
        captcha=_captcha(infra),
        deliverability=_deliverability(infra),
        events=infra.events,
    )
    return WebState(
        otp=otp,
        limits=LimitsLookup(settings=s, otp=otp, sessions=sessions),
        suppressions=SuppressionService(sessions=sessions, mailboxes=Mailboxes.of(s)),
        webhooks=WebhookService(
            sessions=sessions,
            resend=ResendWebhook(resend_secret),
            sns=SnsVerifier(
                infra.http,
                topic_arns=s.sns_topic_arns,
                host_pattern=s.sns_cert_host_pattern,
                clock=infra.clock,
            ),
            mailboxes=Mailboxes.of(s),
            delivery_for=deliveries.delivery_for,
            events=infra.events,
        ),
        usage=UsageService(
            engine=infra.engine,
            sends=stores.codes,
            workers=stores.workers,
            queue=stores.queue,
            pauses=stores.pauses,
            providers=_provider_names(s),
            global_limits=s.global_daily_limits,
            send_rate=s.send_rate,
            clock=infra.clock,
            test_recipients=len(s.test_recipients),
        ),
        reputation=infra.reputation,
        tokens=tokens,
        readiness=Readiness(engine=infra.engine, redis=infra.redis, timeout=s.dependency_timeout),
        audit=AuditLog(sessions=sessions),
        deliveries=DeliveryLookup(sessions=sessions),
        admin_keys=AdminKeys([k.get_secret_value() for k in s.admin_api_keys]),
        metrics_access=MetricsAccess(s.metrics_token.get_secret_value() if s.metrics_token else None),
    )


async def build_provider(name: str, settings: Settings, stack: contextlib.AsyncExitStack) -> EmailProvider:
    if name == "console":
        return ConsoleProvider()
    if name == "resend":
        assert settings.resend_api_key is not None  # enforced by Settings
        return ResendProvider(
            await stack.enter_async_context(create_provider_http_client(settings)),
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
    if name == "smtp":
        assert settings.smtp_url is not None  # enforced by Settings
        return SmtpProvider(settings.smtp_url.get_secret_value(), timeout=settings.provider_timeout)
    raise ValueError(f"unknown email provider {name!r}")


@dataclass(frozen=True, slots=True)
class WorkerComponents:
    worker: DeliveryWorker
    guard: ReputationGuard
    retention: Retention
    events: EventSender | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """What a caller sets beyond the settings: the CLI's --concurrency, and tests' shorter
    timeouts, outcome callback and stand-in queue. None keeps the settings' value."""

    concurrency: int | None = None
    visibility_timeout: float | None = None
    forget_idle_after: float | None = None
    on_outcome: Callable[[Outcome], None] | None = None
    queue: JobQueue | None = None


async def build_worker(
    infra: Infrastructure, stack: contextlib.AsyncExitStack, options: WorkerOptions = WorkerOptions()
) -> WorkerComponents:
    s, stores = infra.settings, infra.stores
    names = _provider_names(s)
    primary = await build_provider(names[0], s, stack)
    fallback = await build_provider(names[1], s, stack) if len(names) > 1 else None
    guard = infra.reputation
    deliverer = Deliverer(
        settings=s, primary=primary, fallback=fallback, send_rate=stores.send_rate, healthy=guard.healthy,
        clock=infra.clock,
    )  # fmt: skip
    worker = DeliveryWorker(
        queue=options.queue or stores.queue,
        sealer=JobSealer(Sealer(s.secret)),
        codes=stores.codes,
        deliverer=deliverer,
        engine=infra.engine,
        registry=stores.workers,
        concurrency=options.concurrency or s.worker_concurrency,
        visibility_timeout=options.visibility_timeout or s.job_visibility_timeout,
        db_timeout=s.dependency_timeout,
        mailboxes=Mailboxes.of(s),
        clock=infra.clock,
        forget_idle_after=options.forget_idle_after or FORGET_IDLE_MS / 1000,
        on_outcome=options.on_outcome,
        events=infra.events,
    )
    retention = Retention(
        engine=infra.engine, slot=stores.retention, days=s.retention_days, owner=worker.name,
        clock=infra.clock,
    )  # fmt: skip
    sender = None
    if s.events_webhook_url is not None and s.events_webhook_secret is not None:
        sender = EventSender(
            redis=infra.redis, keys=RedisKeys(s.redis_key_prefix), seal=EventSeal(Sealer(s.secret)),
            url=s.events_webhook_url, secret=s.events_webhook_secret.get_secret_value(), http=infra.http,
            name=worker.name, clock=infra.clock,
        )  # fmt: skip
        stack.push_async_callback(sender.aclose)
    return WorkerComponents(worker, guard, retention, sender)


RETENTION_STOP_GRACE = 10.0
"""Seconds a stopping worker gives retention's batch in progress (one DELETE of up to 1,000 rows)."""


@contextlib.asynccontextmanager
async def running_worker(
    infra: Infrastructure, options: WorkerOptions = WorkerOptions()
) -> AsyncIterator[WorkerComponents]:
    """The delivery worker, the reputation guard and retention, running until the context closes."""
    from otp_service.tasks import cancel_and_wait

    async with contextlib.AsyncExitStack() as stack:
        built = await build_worker(infra, stack, options)
        worker_task = asyncio.create_task(built.worker.run(), name=f"delivery-worker-{built.worker.name}")
        guard_task = asyncio.create_task(built.guard.run(), name="reputation-guard")
        retention_task = asyncio.create_task(built.retention.run(), name="retention")
        tasks = [worker_task, guard_task, retention_task]
        if built.events is not None:
            tasks.append(asyncio.create_task(built.events.run(), name="events-out"))
        try:
            yield built
        finally:
            built.worker.stop()
            built.guard.stop()
            built.retention.stop()
            if built.events is not None:
                built.events.stop()
            # Retention and the reputation guard end by themselves (at once, or after the batch or
            # check in progress): a statement cut off by cancellation could keep its connection
            # checked out past the engine's disposal.
            await asyncio.wait({retention_task, guard_task}, timeout=RETENTION_STOP_GRACE)
            for task in tasks:
                await cancel_and_wait(task)
