"""Annotated dependency aliases: each route gets the one domain object it needs.

The objects are built once by the lifespan (assembly.py) and handed to every request as
Starlette's lifespan state (`request.state`). All dependencies are `async def` functions of the
request alone: FastAPI runs a plain `def` dependency in the threadpool, and the hot routes
(api/routing.FastRoute) call them directly.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from otp_service.api.context import CLIENT_KEY
from otp_service.audit.service import AuditLog
from otp_service.delivery.lookup import DeliveryLookup
from otp_service.delivery.reputation import ReputationGuard
from otp_service.delivery.usage import UsageService
from otp_service.net import Client
from otp_service.otp.service import OtpService
from otp_service.otp.tokens import TokenIssuer
from otp_service.readiness import Readiness
from otp_service.suppression.service import SuppressionService
from otp_service.webhooks.service import WebhookService


async def get_client(request: Request) -> Client:
    client: Client = request.scope[CLIENT_KEY]
    return client


def _from_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """The dependency that hands a route the lifespan's object called `name`."""

    async def dependency(request: Request) -> Any:
        return getattr(request.state, name)

    dependency.__name__ = f"get_{name}"
    return dependency


get_otp_service = _from_state("otp")
get_suppression_service = _from_state("suppressions")
get_webhook_service = _from_state("webhooks")
get_usage_service = _from_state("usage")
get_reputation_guard = _from_state("reputation")
get_tokens = _from_state("tokens")
get_readiness = _from_state("readiness")
get_audit_log = _from_state("audit")
get_delivery_lookup = _from_state("deliveries")

ClientDep = Annotated[Client, Depends(get_client)]
OtpServiceDep = Annotated[OtpService, Depends(get_otp_service)]
SuppressionServiceDep = Annotated[SuppressionService, Depends(get_suppression_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]
UsageServiceDep = Annotated[UsageService, Depends(get_usage_service)]
ReputationDep = Annotated[ReputationGuard, Depends(get_reputation_guard)]
TokensDep = Annotated[TokenIssuer | None, Depends(get_tokens)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
AuditLogDep = Annotated[AuditLog, Depends(get_audit_log)]
DeliveryLookupDep = Annotated[DeliveryLookup, Depends(get_delivery_lookup)]
