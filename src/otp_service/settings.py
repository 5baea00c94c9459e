"""Service configuration: every `OTP_*` variable of CONTRACT §2, typed and validated at start-up.

A bad value stops the process with a message naming the variable; nothing is guessed.
"""

import ipaddress
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError
from svix.webhooks import Webhook

from otp_service.keyring import load_signing_key
from otp_service.locales import Locale
from otp_service.mail_providers import POPULAR_PROVIDERS
from otp_service.net import Prefixes

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./otp_service.db"

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """`N/period` as Django REST framework writes throttle rates."""

    limit: int
    period_seconds: int

    @classmethod
    def parse(cls, text: str) -> "Rate":
        match = _RATE_RE.match(text)
        if match is None:
            raise ValueError("is not a rate like '3/minute' (second|minute|hour|day)")
        limit = int(match.group(1))
        if limit < 1:
            raise ValueError("a rate's count must be at least 1")
        return cls(limit=limit, period_seconds=_PERIODS[match.group(2)])

    def __str__(self) -> str:
        name = {v: k for k, v in _PERIODS.items()}[self.period_seconds]
        return f"{self.limit}/{name}"


DEFAULT_RATES = {
    "otp_send": "3/minute",
    "otp_verify": "10/minute",
    "otp_send_subnet": "30/minute",
    "otp_verify_subnet": "100/minute",
    "otp_status": "60/minute",
}
"""Per client and per subnet (CONTRACT §2a); a key left out of OTP_THROTTLE_RATES keeps its default."""


def _check_rates(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(DEFAULT_RATES))
    if unknown:
        raise ValueError(
            f"unknown rate {', '.join(map(repr, unknown))}: known are {', '.join(DEFAULT_RATES)}"
        )
    for text in value.values():
        Rate.parse(text)
    return {**DEFAULT_RATES, **value}


MIN_ADMIN_KEY = 32


def _check_admin_keys(value: list[SecretStr]) -> list[SecretStr]:
    if any(len(key.get_secret_value()) < MIN_ADMIN_KEY for key in value):
        raise ValueError(
            f"each key must be at least {MIN_ADMIN_KEY} characters "
            "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def split_url(value: str, *, schemes: Collection[str]) -> SplitResult:
    """A URL-valued setting, parsed. Every complaint says what is wrong and never repeats the
    value, which may hold a password (CONTRACT §6): urllib, SQLAlchemy and redis-py each quote
    the piece they choke on, so nothing reaches them that they could choke on."""
    shapes = " or ".join(f"{scheme}://…" for scheme in schemes)
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (urllib checks the port only when asked, and quotes it if it is not a number)
    except ValueError:
        raise ValueError(
            f"is not a URL like {shapes}: its host or port cannot be read ({_ENCODE_USERINFO})"
        ) from None
    if url.scheme not in schemes:
        raise ValueError(f"must be {shapes}")
    if url.scheme in ("sqlite+aiosqlite", "unix"):
        return url  # a file path, no host
    if not url.hostname:
        raise ValueError(f"names no host ({_ENCODE_USERINFO})")
    spilled = url.scheme not in HTTP_SCHEMES and "@" in url.path + url.query + url.fragment
    if "@" in url.netloc.rpartition("@")[0] or spilled:
        # The parsers disagree on where the user name and password end: one would connect to the
        # host urllib sees, another to a host made of a piece of the password.
        raise ValueError(_ENCODE_USERINFO)
    return url


_ENCODE_USERINFO = "a user name or password holding '@', '/', '?' or '#' must be percent-encoded"
HTTP_SCHEMES = ("https", "http")


def _check_http_url(value: str) -> str:
    split_url(value, schemes=HTTP_SCHEMES)
    return value


def _check_redis_url(value: str | None) -> str | None:
    if value is not None:
        split_url(value, schemes=("redis", "rediss", "unix"))
    return value


def parse_sentinel(entry: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (Sentinel's port, 26379): (host, port)."""
    text = entry.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "26379"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "26379"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("each sentinel must be like 10.0.0.5:26379 or sentinel-1:26379")
    return host, int(port)


def _check_sentinels(value: list[str]) -> list[str]:
    for entry in value:
        parse_sentinel(entry)
    return value


def _check_database_url(value: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    split_url(value, schemes=("sqlite+aiosqlite", "postgresql+asyncpg"))
    try:
        make_url(value)  # the parse create_engine makes at start-up, whose errors quote the URL
    except (ArgumentError, ValueError):
        raise ValueError(f"is not a SQLAlchemy URL: {_ENCODE_USERINFO}") from None
    return value


def _check_rate(value: str) -> str:
    Rate.parse(value)
    return value


def _check_nameservers(value: list[str]) -> list[str]:
    for entry in value:
        parse_nameserver(entry)
    return value


def parse_nameserver(entry: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address: (host, port)."""
    text = entry.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("each resolver must be like 192.0.2.53 or 192.0.2.53:5353")
    return host, int(port)


def _check_cidrs(value: list[str]) -> list[str]:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:  # its message quotes the value
            raise ValueError("each entry must be a CIDR like 10.0.0.0/8 or 2001:db8::/32") from None
    return value


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _check_test_recipients(value: dict[str, str]) -> dict[str, str]:
    """Keys: an address or `*@domain`, lower-cased; the codes' length is checked against
    OTP_CODE_LENGTH once every field is read."""
    out: dict[str, str] = {}
    for key, code in value.items():
        name = key.strip().lower()
        local, at, domain = name.rpartition("@")
        if not at or not local or not domain or "." not in domain or ("*" in local and local != "*"):
            raise ValueError("each key must be an address or *@domain")
        out[name] = code
    return out


def _check_verify_link(value: str | None) -> str | None:
    """https, and both placeholders in the fragment, which no browser or link scanner sends to a
    server: following the link cannot use the code (CONTRACT §4)."""
    if value is None:
        return None
    base, hash_, fragment = value.partition("#")
    if not base.startswith("https://") or len(base) <= len("https://"):
        raise ValueError("must start with https://")
    split_url(value, schemes=("https",))
    if not hash_ or "{email}" not in fragment or "{code}" not in fragment:
        raise ValueError("{email} and {code} must both stand after '#', in the fragment")
    if "{" in base or "}" in base:
        raise ValueError("placeholders may stand only after '#'")
    try:
        value.format(email="e", code="c")
    except (KeyError, IndexError, ValueError):
        raise ValueError("only {email} and {code} may be used, each as is") from None
    return value


def _check_public_url(value: str | None) -> str | None:
    """The service's own public base URL, https: the "not me" link (CONTRACT §4) is built on it."""
    if value is None:
        return None
    url = split_url(value, schemes=("https",))
    if url.query or url.fragment:
        raise ValueError("must be a base URL like https://otp.example.com, without '?' or '#'")
    return value.rstrip("/")


SMTP_SCHEMES = {"smtp": 587, "smtps": 465, "smtp+insecure": 25}


def _check_smtp_url(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    url = split_url(value.get_secret_value(), schemes=SMTP_SCHEMES)
    if url.scheme == "smtp+insecure" and not _is_loopback(url.hostname or ""):
        raise ValueError("smtp+insecure:// (no TLS) is allowed on loopback hosts only")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


HttpUrlSetting = Annotated[str, AfterValidator(_check_http_url)]
ProviderName = Literal["console", "resend", "ses", "smtp"]
FallbackName = Literal["resend", "ses", "smtp"]


APP_ID = re.compile(r"[a-z0-9-]{1,32}")
"""An application's id (CONTRACT §8): it stands in paths, keys' derivations and metric labels."""

APP_OVERRIDES = {
    "brand_name": "brand_name",
    "email_from": "email_from",
    "support_email": "support_email",
    "website_url": "website_url",
    "default_locale": "default_locale",
    "code_length": "code_length",
    "code_ttl": "code_ttl",
    "max_attempts": "max_attempts",
    "rate_limit_ttl": "rate_limit_ttl",
    "per_account_daily_limit": "per_account_daily_limit",
    "resend_strategy": "resend_strategy",
    "verify_link_template": "verify_link_template",
    "test_recipients": "test_recipients",
    "events_webhook_url": "events_webhook_url",
    "events_webhook_secret": "events_webhook_secret",
    "token_audience": "jwt_audience",
    "captcha_mode": "captcha_mode",
}
"""What an application may set for itself (CONTRACT §8), and the service-wide field each falls
back to; everything else (rates, limits, providers, the reputation guard) is shared."""


class Settings(BaseSettings):
    # hide_input_in_errors: a ValidationError's text quotes no value (CONTRACT §6).
    model_config = SettingsConfigDict(
        env_prefix="OTP_", extra="ignore", frozen=True, validate_default=True, hide_input_in_errors=True
    )

    database_url: Annotated[str, AfterValidator(_check_database_url)] = EMBEDDED_DATABASE_URL
    redis_url: Annotated[str | None, AfterValidator(_check_redis_url)] = None
    # Redis Cluster: OTP_REDIS_URL names any node; every key shares one hash tag (one slot).
    redis_cluster: bool = False
    # Keys live under `<prefix>:{<prefix>}:…`; one hash tag so every script runs on Redis Cluster.
    redis_key_prefix: str = Field(default="otp", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Redis Sentinel: the primary is asked of these sentinels under the master's name, and asked
    # again after every lost connection or READONLY; OTP_REDIS_URL gives scheme, password, database.
    redis_sentinels: Annotated[list[str], AfterValidator(_check_sentinels)] = []
    redis_sentinel_master: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Replicas that hold a write before the service answers for it (WAIT), and the wait's bound
    # (seconds); 0: no wait, and a failover may lose the last writes (README, "Redis in production").
    redis_min_replicas: int = Field(default=0, ge=0, le=16)
    redis_replica_timeout: float = Field(default=0.2, gt=0, le=10)
    secret_key: SecretStr | None = None

    code_length: int = Field(default=6, ge=4, le=10)
    code_ttl: int = Field(default=300, ge=30, le=86400)
    max_attempts: int = Field(default=5, ge=1, le=100)
    rate_limit_ttl: int = Field(default=60, ge=0, le=86400)
    per_account_daily_limit: int = Field(default=10, ge=1)
    throttle_rates: Annotated[dict[str, str], AfterValidator(_check_rates)] = Field(
        default_factory=lambda: dict(DEFAULT_RATES)
    )
    # Who a client is (CONTRACT §2a).
    ipv6_client_prefix: int = Field(default=64, ge=32, le=128)
    ipv4_subnet_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_subnet_prefix: int = Field(default=48, ge=16, le=128)
    # The low-conversion guard (CONTRACT §2a).
    conversion_min_sends: int = Field(default=20, ge=1)
    conversion_min_ratio: float = Field(default=0.1, ge=0, le=1)
    conversion_guard_rate: Annotated[str, AfterValidator(_check_rate)] = "6/hour"
    # Deliverability (CONTRACT §2): MX, or A/AAAA, before anything is stored.
    check_deliverability: Literal["auto", "true", "false"] = "auto"
    dns_nameservers: Annotated[list[str], AfterValidator(_check_nameservers)] = Field(default_factory=list)
    dns_timeout: float = Field(default=2.0, gt=0, le=30)
    # Captcha (optional): sends then carry captcha_token, checked at the provider's siteverify.
    captcha_provider: Literal["turnstile", "hcaptcha", "recaptcha"] | None = None
    captcha_secret: SecretStr | None = None
    captcha_verify_url: HttpUrlSetting | None = None
    # always: every send needs a token; adaptive: only under attack (CONTRACT §6): from this share
    # of the global daily cap used, or from a subnet the low-conversion guard slows.
    captcha_mode: Literal["always", "adaptive"] = "always"
    captcha_escalation: float = Field(default=0.5, gt=0, le=1)
    captcha_site_key: str | None = None
    global_daily_limits: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {"email": 50000}
    )
    # The last share of each global daily cap, kept for remembered sources (CONTRACT §6).
    global_reserve: float = Field(default=0.1, ge=0, lt=1)
    # SES's default maximum send rate for an account out of the sandbox is 14 messages/second.
    send_rate: int = Field(default=14, ge=1, le=10000)
    trusted_proxies: Annotated[list[str], AfterValidator(_check_cidrs)] = Field(default_factory=list)
    disposable_domains_extra: list[str] = Field(default_factory=list)
    disposable_domains_allow: list[str] = Field(default_factory=list)
    # Recipient domains (CONTRACT §6): a catch-all domain receives (and verifies) every code, so
    # one registrable domain gets at most this many sends per rolling 24 h; shared mail providers,
    # whose users are unrelated people, are exempt.
    domain_daily_limit: int = Field(default=1000, ge=1)
    # None: the popular providers the typo correction knows (validation/domains.py).
    shared_mail_domains: list[str] | None = None
    shared_mail_domains_extra: list[str] = Field(default_factory=list)
    # Remembered sources (CONTRACT §6): how long a (mailbox, subnet) that verified a code keeps
    # its own cooldown, daily cap and wrong-attempt count.
    remember_days: int = Field(default=30, ge=1, le=3650)
    # Mailboxes, not spellings (CONTRACT §6): domains whose local part ignores dots.
    dot_insensitive_domains: list[str] = Field(default_factory=lambda: ["gmail.com", "googlemail.com"])

    email_provider: ProviderName = "console"
    email_fallback_provider: FallbackName | None = None
    email_from: str = "OTP Service <noreply@example.com>"
    brand_name: str = "OTP Service"
    support_email: str = "support@example.com"
    website_url: HttpUrlSetting = "https://example.com"

    resend_api_key: SecretStr | None = None
    resend_api_url: HttpUrlSetting = "https://api.resend.com"
    resend_webhook_secret: SecretStr | None = None

    ses_region: str = "us-east-1"
    ses_endpoint_url: HttpUrlSetting | None = None
    ses_configuration_set: str | None = None

    sns_topic_arns: list[str] = Field(default_factory=list)
    # Region-shaped, as AWS's own validators: `sns.s3.amazonaws.com` is an S3 bucket, not SNS.
    sns_cert_host_pattern: Annotated[str, AfterValidator(_check_regex)] = (
        r"^sns\.[a-z]{2}(-[a-z]+)+-\d+\.amazonaws\.com(\.cn)?$"
    )

    admin_api_keys: Annotated[list[SecretStr], AfterValidator(_check_admin_keys)] = Field(
        default_factory=list
    )
    # /metrics: with a token, `Authorization: Bearer <token>`; without one, loopback callers only.
    # Public metrics would tell a scraper which addresses are suppressed (a delivery's outcome).
    metrics_token: SecretStr | None = None

    # Reputation guard. SES reviews an account at a 5% bounce or 0.1% complaint rate and may pause
    # it at 10% / 0.5% (SES developer guide, "Reputation metrics"); pausing ourselves below the
    # review levels protects the sender before AWS has to.
    reputation_max_bounce_rate: float = Field(default=0.04, gt=0, le=1)
    reputation_max_complaint_rate: float = Field(default=0.0008, gt=0, le=1)
    reputation_min_volume: int = Field(default=200, ge=1)
    reputation_window: int = Field(default=86400, ge=60)
    reputation_check_interval: float = Field(default=30.0, gt=0)
    # Evidence before a pause, and blame for the source (CONTRACT §6): distinct mailboxes and
    # distinct subnets behind the bounces (complaints); a client whose sends drew this many
    # bounces + complaints in 24 h is blocked for 24 h and its events stop counting, and its
    # subnet once that many of its clients are; a paused provider is re-evaluated after the
    # cool-off and resumed when the thresholds hold.
    reputation_min_bounces: int = Field(default=10, ge=1)
    reputation_min_complaints: int = Field(default=3, ge=1)
    reputation_min_sources: int = Field(default=5, ge=1)
    reputation_source_limit: int = Field(default=3, ge=1)
    reputation_subnet_clients: int = Field(default=3, ge=1)
    reputation_cooloff: int = Field(default=3600, ge=1)

    # `rotate`: a new send replaces the live code. `reuse`: a send while a code is live emails that
    # same code again (its lifetime and wrong attempts unchanged), kept sealed next to its hash.
    resend_strategy: Literal["rotate", "reuse"] = "rotate"
    # The email's language when a send names none.
    default_locale: Locale = "bilingual"

    # Delivery records, webhook events and audit entries hold addresses: the worker deletes those
    # older than this (suppressions are kept: that is their job).
    retention_days: int = Field(default=30, ge=1, le=3650)

    # Verification tokens (optional): PEM of an Ed25519 or P-256 private key.
    jwt_private_key: SecretStr | None = None
    jwt_issuer: str = "otp-service"
    jwt_audience: str = "otp-service-clients"
    jwt_ttl: int = Field(default=300, ge=30, le=86400)

    # Operational knobs beyond the contract.
    worker_enabled: bool = True
    worker_concurrency: int = Field(default=8, ge=1, le=256)
    # A job not acknowledged this long after delivery to a consumer is taken over by another.
    job_visibility_timeout: float = Field(default=30.0, gt=0)
    provider_timeout: float = Field(default=10.0, gt=0)
    dependency_timeout: float = Field(default=1.5, gt=0, le=10)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Integrators (CONTRACT §2, §3, §4, §7).
    # Test recipients: address or `*@domain` -> a fixed code; never emailed (app-store review, CI).
    test_recipients: Annotated[dict[str, str], AfterValidator(_check_test_recipients)] = Field(
        default_factory=dict
    )
    # The email's link: `{email}` and `{code}` in the fragment, https only.
    verify_link_template: Annotated[str | None, AfterValidator(_check_verify_link)] = None
    # The "Didn't ask for this?" link (CONTRACT §4): the service's public https base URL, which
    # serves /not-me; and how long a report keeps the address to its remembered sources.
    public_url: Annotated[str | None, AfterValidator(_check_public_url)] = None
    not_me_hours: int = Field(default=24, ge=1, le=8760)
    # Events out: signed as Standard Webhooks with a `whsec_…` secret.
    events_webhook_url: HttpUrlSetting | None = None
    events_webhook_secret: SecretStr | None = None
    # OTP_EMAIL_PROVIDER=smtp (or as the fallback).
    smtp_url: Annotated[SecretStr | None, AfterValidator(_check_smtp_url)] = None
    # Applications (CONTRACT §8): id -> its overrides of APP_OVERRIDES; each is checked as the
    # service-wide setting it overrides is (Settings.app builds the application's view).
    apps: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _secret: bytes = PrivateAttr(default=b"")
    _app: str = PrivateAttr(default="")
    _apps: "dict[str, Settings]" = PrivateAttr(default_factory=dict)

    @field_validator("disposable_domains_extra", "disposable_domains_allow")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]

    @field_validator("check_deliverability", mode="before")
    @classmethod
    def _lower_switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _require_secrets(self) -> "Settings":
        return self._check_combined()

    def _check_combined(self) -> "Settings":
        """The checks across fields, run for the service's settings and each application's view."""
        if self.secret_key is None:
            if not self.is_embedded:
                raise ValueError(
                    "OTP_SECRET_KEY is required when OTP_DATABASE_URL or OTP_REDIS_URL is set "
                    "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        elif len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("OTP_SECRET_KEY must be at least 16 characters")
        uses_resend = "resend" in (self.email_provider, self.email_fallback_provider)
        if uses_resend and self.resend_api_key is None:
            raise ValueError("OTP_RESEND_API_KEY is required when the resend provider is used")
        if self.email_fallback_provider == self.email_provider:
            raise ValueError("OTP_EMAIL_FALLBACK_PROVIDER must differ from OTP_EMAIL_PROVIDER")
        if self.jwt_private_key is not None:
            load_signing_key(self.jwt_private_key.get_secret_value())
        if self.ipv6_subnet_prefix > self.ipv6_client_prefix:
            raise ValueError("OTP_IPV6_SUBNET_PREFIX must not be longer than OTP_IPV6_CLIENT_PREFIX")
        if self.captcha_provider is not None and self.captcha_secret is None:
            raise ValueError("OTP_CAPTCHA_SECRET is required when OTP_CAPTCHA_PROVIDER is set")
        for code in self.test_recipients.values():
            if len(code) != self.code_length or not code.isascii() or not code.isdigit():
                raise ValueError(
                    f"OTP_TEST_RECIPIENTS: each code must be {self.code_length} digits (OTP_CODE_LENGTH)"
                )
        shared = self.shared_mail_providers()
        if any(key.startswith("*@") and key[2:] in shared for key in self.test_recipients):
            # Every address of a shared provider would sign in with one fixed code.
            raise ValueError("OTP_TEST_RECIPIENTS: a *@domain must not be a shared mail provider's")
        if "smtp" in (self.email_provider, self.email_fallback_provider) and self.smtp_url is None:
            raise ValueError("OTP_SMTP_URL is required when the smtp provider is used")
        if self.events_webhook_url is not None:
            self._check_events_webhook()
        return self

    @model_validator(mode="after")
    def _check_redis_layout(self) -> "Settings":
        if bool(self.redis_sentinels) != (self.redis_sentinel_master is not None):
            raise ValueError("OTP_REDIS_SENTINELS and OTP_REDIS_SENTINEL_MASTER are set together")
        if self.redis_sentinels:
            if self.redis_url is None or self.redis_url.startswith("unix:"):
                raise ValueError(
                    "OTP_REDIS_SENTINELS needs OTP_REDIS_URL, redis:// or rediss://, for the password "
                    "and database (its host is not used)"
                )
            if self.redis_cluster:
                raise ValueError("OTP_REDIS_SENTINELS and OTP_REDIS_CLUSTER cannot be used together")
        if self.redis_min_replicas and self.redis_url is None:
            # A no-op would promise a durability the in-memory Redis cannot give.
            raise ValueError(
                "OTP_REDIS_MIN_REPLICAS needs a Redis server (OTP_REDIS_URL): the embedded default's "
                "in-memory Redis has no replicas"
            )
        return self

    @model_validator(mode="after")
    def _build_apps(self) -> "Settings":
        views: dict[str, Settings] = {}
        for app, overrides in self.apps.items():
            if not APP_ID.fullmatch(app):
                raise ValueError(f"OTP_APPS: application id {app!r}: must be 1-32 of a-z, 0-9 and '-'")
            unknown = sorted(set(overrides) - set(APP_OVERRIDES))
            if unknown:
                raise ValueError(
                    f"OTP_APPS: application {app!r}: unknown key(s) {', '.join(map(repr, unknown))} "
                    f"(an application may set {', '.join(APP_OVERRIDES)})"
                )
            views[app] = self._app_view(app, overrides)
        object.__setattr__(self, "_apps", views)  # frozen: set once, here
        return self

    def _app_view(self, app: str, overrides: dict[str, Any]) -> "Settings":
        """This configuration as application `app` sees it: each override validated as its
        service-wide field is (type, range, field checks), then the cross-field checks again."""
        fields = type(self).model_fields
        update: dict[str, Any] = {}
        for key, value in overrides.items():
            name = APP_OVERRIDES[key]
            info = fields[name]
            try:
                typed: Any = (
                    Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
                )
                update[name] = TypeAdapter(typed).validate_python(value)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"OTP_APPS: application {app!r}: {key}: {reason}") from None
        view = self.model_copy(update={**update, "apps": {}})
        object.__setattr__(view, "_app", app)
        try:
            view._check_combined()
        except ValueError as exc:
            # Named as the application's keys where it set them: `OTP_CODE_LENGTH` -> code_length.
            reason = str(exc)
            for key, name in APP_OVERRIDES.items():
                if key in overrides:
                    reason = reason.replace(f"OTP_{name.upper()}", key)
            raise ValueError(f"OTP_APPS: application {app!r}: {reason}") from None
        return view

    @property
    def app(self) -> str:
        """The application this view is of ('' for the service-wide one)."""
        return self._app

    @property
    def app_ids(self) -> list[str]:
        return list(self._apps)

    def app_view(self, app: str) -> "Settings | None":
        """Application `app`'s settings ('' is the service-wide application); None if unknown."""
        return self if app == "" else self._apps.get(app)

    def app_views(self) -> "dict[str, Settings]":
        """Every application's settings, the service-wide one under ''."""
        return {"": self, **self._apps}

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [parse_sentinel(entry) for entry in self.redis_sentinels]

    def _check_events_webhook(self) -> None:
        url = urlsplit(self.events_webhook_url or "")  # checked by _check_http_url
        if url.scheme == "http" and not _is_loopback(url.hostname or ""):
            raise ValueError("OTP_EVENTS_WEBHOOK_URL must be https:// (http:// only on loopback hosts)")
        secret = self.events_webhook_secret.get_secret_value() if self.events_webhook_secret else ""
        if not secret.startswith("whsec_"):
            raise ValueError("OTP_EVENTS_WEBHOOK_SECRET (whsec_…) is required with OTP_EVENTS_WEBHOOK_URL")
        try:
            Webhook(secret)
        except ValueError as exc:  # a secret that is not base64 (binascii.Error)
            raise ValueError(f"OTP_EVENTS_WEBHOOK_SECRET is not a valid whsec_ secret: {exc}") from None

    @property
    def console_refused(self) -> str | None:
        """Why this process must not start, or None: the console provider prints every code, so
        it runs only where it was asked for, in the embedded default or with OTP_EMAIL_PROVIDER
        named (CONTRACT §6). Every entry point asks (serve, worker, the uvicorn factory)."""
        if self.email_provider != "console" or "email_provider" in self.model_fields_set or self.is_embedded:
            return None
        return (
            "the console email provider, which prints every code on stdout, is the default only in the "
            "embedded default (neither OTP_DATABASE_URL nor OTP_REDIS_URL set). Set OTP_EMAIL_PROVIDER="
            "resend, ses or smtp (with their settings), or OTP_EMAIL_PROVIDER=console explicitly to "
            "accept that."
        )

    @property
    def is_embedded(self) -> bool:
        """Neither a database nor Redis configured: the zero-setup local mode."""
        return self.redis_url is None and self.database_url == EMBEDDED_DATABASE_URL

    @property
    def deliverability_checked(self) -> bool:
        """`auto`: on whenever real email leaves (resend, ses), off for the console provider."""
        if self.check_deliverability == "auto":
            return self.email_provider != "console"
        return self.check_deliverability == "true"

    def shared_mail_providers(self) -> frozenset[str]:
        """The domains whose users are unrelated people (CONTRACT §6): OTP_SHARED_MAIL_DOMAINS (by
        default the popular providers the typo correction knows) plus the _EXTRA ones."""
        base = POPULAR_PROVIDERS if self.shared_mail_domains is None else self.shared_mail_domains
        return frozenset(d.strip().lower() for d in (*base, *self.shared_mail_domains_extra))

    def client_prefixes(self) -> Prefixes:
        return Prefixes(self.ipv6_client_prefix, self.ipv4_subnet_prefix, self.ipv6_subnet_prefix)

    @property
    def secret(self) -> bytes:
        return self._secret

    def model_post_init(self, context: Any, /) -> None:
        key = self.secret_key.get_secret_value() if self.secret_key else secrets.token_urlsafe(32)
        self._secret = key.encode()

    def rate(self, scope: str) -> Rate:
        return Rate.parse(self.throttle_rates[scope])

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies]


class DatabaseSettings(BaseSettings):
    """What `otp-service migrate` needs, and nothing else (no secret, no Redis)."""

    model_config = SettingsConfigDict(
        env_prefix="OTP_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: Annotated[str, AfterValidator(_check_database_url)] = EMBEDDED_DATABASE_URL


class SettingsError(Exception):
    """Configuration the service refuses to start with; the message names each bad variable."""


def load_settings(**overrides: Any) -> Settings:
    return _load(Settings, **overrides)


def load_database_settings() -> DatabaseSettings:
    return _load(DatabaseSettings)


_S = TypeVar("_S", bound=BaseSettings)


def _load(cls: type[_S], **overrides: Any) -> _S:
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = f"OTP_{loc.split('.')[0].upper()}" if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(msg if not loc and msg.startswith("OTP_") else f"{name}: {msg}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except SourceError as exc:
        # pydantic-settings could not decode a value, e.g. a list or dict that is not JSON.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"OTP_{field.group(1).upper()}" if field else "settings"
        cause = exc.__cause__ or exc
        raise SettingsError(f"invalid configuration:\n  {name}: not valid JSON ({cause})") from None
