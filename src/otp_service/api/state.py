"""What the web process's lifespan hands every request: one typed object, under one key of
Starlette's lifespan state (`request.state.web`). Built by assembly.build_web."""

from dataclasses import dataclass

from starlette.requests import Request

from otp_service.audit.keys import AdminKeys, MetricsAccess
from otp_service.audit.service import AuditLog
from otp_service.delivery.lookup import DeliveryLookup
from otp_service.delivery.not_me import NotMeService
from otp_service.delivery.reputation import ReputationGuard
from otp_service.delivery.stats import DeliveryStats
from otp_service.delivery.usage import UsageService
from otp_service.otp.service import OtpService
from otp_service.otp.tokens import TokenIssuer
from otp_service.otp.why import LimitsLookup
from otp_service.readiness import Readiness
from otp_service.suppression.service import SuppressionService
from otp_service.webhooks.service import WebhookService

STATE_KEY = "web"


@dataclass(frozen=True, slots=True)
class WebState:
    otp: OtpService
    suppressions: SuppressionService
    webhooks: WebhookService
    usage: UsageService
    reputation: ReputationGuard
    tokens: TokenIssuer | None
    readiness: Readiness
    audit: AuditLog
    deliveries: DeliveryLookup
    admin_keys: AdminKeys
    metrics_access: MetricsAccess
    limits: LimitsLookup
    not_me: NotMeService
    stats: DeliveryStats
    apps: dict[str, OtpService]
    """Each application's send and verify (CONTRACT §8), by id; `otp` is the service-wide one."""


def web_state(request: Request) -> WebState:
    state: WebState = getattr(request.state, STATE_KEY)
    return state
