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
from otp_service.delivery.verify_failures import VerifyFailures
from otp_service.logs import get_logger
from otp_service.mail_providers import POPULAR_PROVIDERS
from otp_service.otp.codes import CodeCrypto
from otp_service.otp.service import OtpService
from otp_service.otp.tokens import TokenIssuer
from otp_service.otp.why import LimitsLookup
from otp_service.readiness import Readiness
from otp_service.settings import Settings, parse_nameserver
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


def _tokens(s: Settings) -> TokenIssuer | None:
    """Verification tokens for one application's settings: its own audience (CONTRACT §8)."""
    if s.jwt_private_key is None:
        return None
    return TokenIssuer(
        s.jwt_private_key.get_secret_value(), issuer=s.jwt_issuer, audience=s.jwt_audience, ttl=s.jwt_ttl,
        app=s.app,
    )  # fmt: skip


def build_web(
    infra: Infrastructure,
    *,
    sent_to_verified: SentToVerified | None = None,
    verify_failures: VerifyFailures | None = None,
) -> WebState:
    s, stores, sessions = infra.settings, infra.stores, infra.sessions
    tokens = _tokens(s)
    resend_secret = s.resend_webhook_secret.get_secret_value() if s.resend_webhook_secret else None
    validator = AddressValidator(
        extra_disposable=s.disposable_domains_extra, allow=s.disposable_domains_allow
    )
    captcha, deliverability = _captcha(infra), _deliverability(infra)

    def otp_of(view: Settings) -> OtpService:
        """One application's send and verify (CONTRACT §8): its own settings, ids and tokens; the
        store, rates, validation and providers shared."""
        if view.test_recipients:  # fixed codes sign in: an operator should see that they are on
            extra = {"count": len(view.test_recipients), **({"app": view.app} if view.app else {})}
            log.warning("otp.test_recipients_configured", extra=extra)
        return OtpService(
            settings=view, store=stores.codes, throttle=stores.throttle, validator=validator,
            crypto=CodeCrypto(s.secret, view.app), sealer=infra.jobs,
            tokens=tokens if view is s else _tokens(view), captcha=captcha, deliverability=deliverability,
            events=infra.events, sent_to_verified=sent_to_verified,
            verify_failures=verify_failures.of(view.app) if verify_failures is not None else None,
        )  # fmt: skip

    otp = otp_of(s)
    apps = {app: otp_of(view) for app, view in s.app_views().items() if app}
    return WebState(
        otp=otp,
        apps=apps,
        limits=LimitsLookup(settings=s, apps={"": otp, **apps}, sessions=sessions),
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
            apps={"", *s.app_ids},
        ),
        reputation=infra.reputation,
        tokens=tokens,
        readiness=Readiness(engine=infra.engine, redis=infra.redis, timeout=s.dependency_timeout),
        audit=infra.audit,
        deliveries=DeliveryLookup(sessions=sessions, apps={"", *s.app_ids}),
        stats=DeliveryStats(
            sessions=sessions, clock=infra.clock, failures=verify_failures, apps={"", *s.app_ids}
        ),
        admin_keys=AdminKeys([k.get_secret_value() for k in s.admin_api_keys]),
        metrics_access=MetricsAccess(s.metrics_token.get_secret_value() if s.metrics_token else None),
    )
