"""What the routes use, built from the infrastructure (assembly/infrastructure.py)."""

from otp_service.api.state import WebState
from otp_service.assembly.infrastructure import Infrastructure
from otp_service.audit.keys import AdminKeys, MetricsAccess
from otp_service.delivery import repository as deliveries
from otp_service.delivery.lookup import DeliveryLookup
from otp_service.delivery.not_me import NotMeService, RedisReports
from otp_service.delivery.stats import DeliveryStats
from otp_service.delivery.timing import SentToVerified
from otp_service.delivery.usage import UsageService
from otp_service.logs import get_logger
from otp_service.mail_providers import POPULAR_PROVIDERS
from otp_service.otp.codes import CodeCrypto
from otp_service.otp.service import OtpService
from otp_service.otp.tokens import TokenIssuer
from otp_service.otp.why import LimitsLookup
from otp_service.readiness import Readiness
from otp_service.settings import parse_nameserver
from otp_service.suppression.service import SuppressionService
from otp_service.validation.address import AddressValidator
from otp_service.validation.captcha import CaptchaCheck
from otp_service.validation.deliverability import DeliverabilityCheck, make_resolver
from otp_service.webhooks.resend import ResendWebhook
from otp_service.webhooks.service import WebhookService
from otp_service.webhooks.sns import SnsVerifier

log = get_logger("assembly")


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


def _tokens(infra: Infrastructure) -> TokenIssuer | None:
    s = infra.settings
    if s.jwt_private_key is None:
        return None
    return TokenIssuer(
        s.jwt_private_key.get_secret_value(), issuer=s.jwt_issuer, audience=s.jwt_audience, ttl=s.jwt_ttl
    )


def build_web(infra: Infrastructure, *, sent_to_verified: SentToVerified | None = None) -> WebState:
    s, stores, sessions = infra.settings, infra.stores, infra.sessions
    tokens = _tokens(infra)
    resend_secret = s.resend_webhook_secret.get_secret_value() if s.resend_webhook_secret else None
    if s.test_recipients:  # fixed codes sign in: an operator should see that they are on
        log.warning("otp.test_recipients_configured", extra={"count": len(s.test_recipients)})
    otp = OtpService(
        settings=s,
        store=stores.codes,
        throttle=stores.throttle,
        validator=AddressValidator(
            extra_disposable=s.disposable_domains_extra, allow=s.disposable_domains_allow
        ),
        crypto=CodeCrypto(s.secret),
        sealer=infra.jobs,
        tokens=tokens,
        captcha=_captcha(infra),
        deliverability=_deliverability(infra),
        events=infra.events,
        sent_to_verified=sent_to_verified,
    )
    return WebState(
        otp=otp,
        limits=LimitsLookup(settings=s, otp=otp, sessions=sessions),
        not_me=NotMeService(
            tokens=infra.not_me,
            reports=RedisReports(infra.redis, infra.keys),
            sessions=sessions,
            hold_hours=s.not_me_hours,
            retention_days=s.retention_days,
            clock=infra.clock,
            events=infra.events,
        ),
        suppressions=SuppressionService(sessions=sessions),
        webhooks=WebhookService(
            sessions=sessions,
            statuses=infra.stores.codes,
            resend=ResendWebhook(resend_secret),
            sns=SnsVerifier(
                infra.http,
                topic_arns=s.sns_topic_arns,
                host_pattern=s.sns_cert_host_pattern,
                clock=infra.clock,
            ),
            delivery_for=deliveries.delivery_for,
            events=infra.events,
        ),
        usage=UsageService(
            engine=infra.engine,
            sends=stores.codes,
            workers=stores.workers,
            queue=stores.queue,
            pauses=stores.pauses,
            providers=infra.providers,
            global_limits=s.global_daily_limits,
            send_rate=s.send_rate,
            clock=infra.clock,
            test_recipients=len(s.test_recipients),
        ),
        reputation=infra.reputation,
        tokens=tokens,
        readiness=Readiness(engine=infra.engine, redis=infra.redis, timeout=s.dependency_timeout),
        audit=infra.audit,
        deliveries=DeliveryLookup(sessions=sessions),
        stats=DeliveryStats(sessions=sessions),
        admin_keys=AdminKeys([k.get_secret_value() for k in s.admin_api_keys]),
        metrics_access=MetricsAccess(s.metrics_token.get_secret_value() if s.metrics_token else None),
    )
