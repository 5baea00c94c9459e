"""The application factory. Nothing is connected at import time; the lifespan builds every
domain object (the assembly package) and hands them to the routes as lifespan state."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from otp_service import tracing
from otp_service.api import admin, health, metrics, not_me, otp, webhooks
from otp_service.api.context import RequestContext
from otp_service.api.discovery import install_discovery
from otp_service.api.docs import install_docs, install_openapi
from otp_service.api.problems import REFUSALS, install_problem_handlers
from otp_service.api.state import STATE_KEY
from otp_service.assembly import build_web, open_infrastructure, running_worker
from otp_service.delivery.timing import SentToVerified
from otp_service.delivery.verify_failures import VerifyFailures, counting_failures
from otp_service.logs import configure_logging
from otp_service.settings import Settings, SettingsError, load_settings

DESCRIPTION = """
Email one-time passcodes: send a code to an address, verify it once.

Every error is `application/problem+json` (RFC 9457) with a stable `code`;
every 429 and 503 carries `Retry-After`.
"""


class OtpApp(FastAPI):
    """FastAPI, with the request context (request id, client identity) resolved outside
    Starlette's ServerErrorMiddleware, so that even its 500s carry the request id."""

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        self._trusted = tuple(settings.trusted_networks())
        self._prefixes = settings.client_prefixes()
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        stack: ASGIApp = RequestContext(
            super().build_middleware_stack(), trusted_proxies=self._trusted, prefixes=self._prefixes
        )
        if tracing.hooks is not None:  # OpenTelemetry configured: the server span, outermost
            stack = tracing.hooks.server(stack)
        return stack


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    tracing.configure()  # the OTEL_* variables, once per process; nothing loaded without them

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            infra = await stack.enter_async_context(open_infrastructure(settings))
            sent_to_verified = SentToVerified(sessions=infra.sessions, timeout=settings.dependency_timeout)
            stack.push_async_callback(sent_to_verified.aclose)  # before the engine is disposed
            # Refused verifies by reason, for the admin stats: counted in process, added to the
            # database every few seconds, and what is left as the process stops.
            failures = VerifyFailures(sessions=infra.sessions, clock=infra.clock)
            await stack.enter_async_context(counting_failures(failures))
            web = build_web(infra, sent_to_verified=sent_to_verified, verify_failures=failures)
            if settings.worker_enabled:
                await stack.enter_async_context(running_worker(infra))
            # Everything built so far lives as long as the process (FastAPI's routes and models,
            # the typo map, the throwaway-domain set): a full collection would re-scan all of it
            # and set the service's p99 (README, "Performance"). Freezing moves them out of the
            # collector's sight (the technique Instagram described for Django).
            gc.collect()
            gc.freeze()
            stopping = asyncio.Event()
            tally = asyncio.create_task(REFUSALS.run(stopping), name="refusal-log")
            try:
                yield {STATE_KEY: web}
            finally:
                stopping.set()
                await tally

    app = OtpApp(
        settings=settings,
        title="otp-service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry hooks asked the OTel API for its providers on every
        # request; the service exports Prometheus metrics (/metrics), not OTel.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    install_openapi(app)
    app.include_router(otp.router)
    if settings.app_ids:  # CONTRACT §8: right after the unprefixed send and verify, which match first
        app.include_router(otp.apps_router)
    app.include_router(not_me.router)
    app.include_router(webhooks.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_discovery(app, settings)
    install_docs(app)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`--factory`): read settings in each worker process."""
    try:
        settings = load_settings()
    except SettingsError as exc:  # its message names each variable, quoting no value (CONTRACT §6)
        raise SystemExit(f"otp-service: {exc}") from None
    configure_logging(settings.log_level)
    if (refused := settings.console_refused) is not None:
        raise SystemExit(f"otp-service: refusing to start: {refused}")
    try:
        return create_app(settings)
    except tracing.TracingError as exc:
        raise SystemExit(f"otp-service: {exc}") from None
