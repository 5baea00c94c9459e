"""Builds the per-domain objects from the settings, each once: the web lifespan (app.py) and the
`otp-service worker` command (cli.py) both start here. Every object gets its collaborators
through its constructor; nothing is patched after it is built.

    infrastructure.open_infrastructure   engine, Redis client, HTTP client, clock (or the embedded
                                         twins), and what both sides share: the stores, Redis's
                                         keys, the sealers, the mailbox rule, the sessions, the
                                         audit log, the reputation guard, events out
    web.build_web                        what the routes use: OtpService, SuppressionService,
                                         WebhookService, UsageService, TokenIssuer, Readiness, …
    providers.build_provider             an email provider and its client
    worker.build_worker                  the worker's four background tasks: DeliveryWorker, the
                                         ReputationGuard, Retention and (with
                                         OTP_EVENTS_WEBHOOK_URL) the EventSender
    worker.running_worker                runs the four for as long as the context is open
"""

from otp_service.assembly.infrastructure import (
    Infrastructure,
    Stores,
    create_http_client,
    open_infrastructure,
    open_redis_client,
)
from otp_service.assembly.providers import build_provider, create_provider_http_client
from otp_service.assembly.web import build_web
from otp_service.assembly.worker import WorkerComponents, WorkerOptions, build_worker, running_worker

__all__ = [
    "Infrastructure",
    "Stores",
    "WorkerComponents",
    "WorkerOptions",
    "build_provider",
    "build_web",
    "build_worker",
    "create_http_client",
    "create_provider_http_client",
    "open_infrastructure",
    "open_redis_client",
    "running_worker",
]
