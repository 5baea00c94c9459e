"""Annotated dependency aliases: each route gets the one domain object it needs.

The objects are built once by the lifespan (the assembly package) and handed to every request as one
typed object (api/state.WebState) in Starlette's lifespan state. All dependencies are `async
def` functions of the request alone: FastAPI runs a plain `def` dependency in the threadpool,
and the hot routes (api/routing.FastRoute) call them directly.
"""

from typing import Annotated

from fastapi import Depends, Request

from otp_service.api.context import CLIENT_KEY
from otp_service.api.state import web_state
from otp_service.audit.service import AuditLog
from otp_service.delivery.lookup import DeliveryLookup
from otp_service.delivery.not_me import NotMeService
from otp_service.delivery.reputation import ReputationGuard
from otp_service.delivery.stats import DeliveryStats
from otp_service.delivery.usage import UsageService
from otp_service.errors import NotFound
from otp_service.logs import app_var
from otp_service.net import Client
from otp_service.otp.service import STATUS_SCOPE, OtpService
from otp_service.otp.store import SEND_SCOPE, VERIFY_SCOPE
from otp_service.otp.tokens import TokenIssuer
from otp_service.otp.why import LimitsLookup
from otp_service.readiness import Readiness
from otp_service.suppression.service import SuppressionService
from otp_service.webhooks.service import WebhookService


async def get_client(request: Request) -> Client:
    client: Client = request.scope[CLIENT_KEY]
    return client


async def get_otp_service(request: Request) -> OtpService:
    return web_state(request).otp


async def _app_service(request: Request, scope: str) -> OtpService:
    """The path's application (CONTRACT §8); an unknown one is 404 not_found, counted against the
    client's rate for what was asked, like any request."""
    state = web_state(request)
    otp = state.apps.get(request.path_params.get("app", ""))
    if otp is None:
        await state.otp.count_unrouted(scope, await get_client(request))
        raise NotFound("No such application")
    app_var.set(request.path_params["app"])  # this request's log lines name it (its own context)
    return otp


async def get_app_send(request: Request) -> OtpService:
    return await _app_service(request, SEND_SCOPE)


async def get_app_verify(request: Request) -> OtpService:
    return await _app_service(request, VERIFY_SCOPE)


async def get_app_status(request: Request) -> OtpService:
    return await _app_service(request, STATUS_SCOPE)


async def get_suppression_service(request: Request) -> SuppressionService:
    return web_state(request).suppressions


async def get_webhook_service(request: Request) -> WebhookService:
    return web_state(request).webhooks


async def get_usage_service(request: Request) -> UsageService:
    return web_state(request).usage


async def get_delivery_stats(request: Request) -> DeliveryStats:
    return web_state(request).stats


async def get_reputation_guard(request: Request) -> ReputationGuard:
    return web_state(request).reputation


async def get_tokens(request: Request) -> TokenIssuer | None:
    return web_state(request).tokens


async def get_readiness(request: Request) -> Readiness:
    return web_state(request).readiness


async def get_audit_log(request: Request) -> AuditLog:
    return web_state(request).audit


async def get_delivery_lookup(request: Request) -> DeliveryLookup:
    return web_state(request).deliveries


async def get_limits_lookup(request: Request) -> LimitsLookup:
    return web_state(request).limits


async def get_not_me(request: Request) -> NotMeService:
    return web_state(request).not_me


async def require_admin(request: Request) -> str:
    """The calling key's fingerprint, or 401 (FastAPI solves it once per request)."""
    return web_state(request).admin_keys.check(request.headers.get("authorization", ""))


async def require_metrics_access(request: Request) -> None:
    client: Client = request.scope[CLIENT_KEY]
    web_state(request).metrics_access.check(request.headers.get("authorization", ""), client.ip)


ClientDep = Annotated[Client, Depends(get_client)]
OtpServiceDep = Annotated[OtpService, Depends(get_otp_service)]
AppSendDep = Annotated[OtpService, Depends(get_app_send)]
AppVerifyDep = Annotated[OtpService, Depends(get_app_verify)]
AppStatusDep = Annotated[OtpService, Depends(get_app_status)]
SuppressionServiceDep = Annotated[SuppressionService, Depends(get_suppression_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]
UsageServiceDep = Annotated[UsageService, Depends(get_usage_service)]
DeliveryStatsDep = Annotated[DeliveryStats, Depends(get_delivery_stats)]
ReputationDep = Annotated[ReputationGuard, Depends(get_reputation_guard)]
TokensDep = Annotated[TokenIssuer | None, Depends(get_tokens)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
AuditLogDep = Annotated[AuditLog, Depends(get_audit_log)]
DeliveryLookupDep = Annotated[DeliveryLookup, Depends(get_delivery_lookup)]
LimitsLookupDep = Annotated[LimitsLookup, Depends(get_limits_lookup)]
NotMeDep = Annotated[NotMeService, Depends(get_not_me)]
AdminDep = Annotated[str, Depends(require_admin)]
