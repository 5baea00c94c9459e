"""Every figure on the page comes from the settings the service runs with, or from the code that
enforces it (the throwaway-domain list's size, the typo list, the webhooks' replay windows, the
template rendered with a placeholder code), so the page cannot go stale when a limit changes.

The page is written once, in Markdown (templates/trust.md.j2); the HTML page is that Markdown
rendered (markdown-it, raw HTML off, so every setting is escaped) inside a styled shell."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from markdown_it import MarkdownIt

from otp_service.delivery.templates import (
    email_context,
    environment,
    lifetime_en,
    render_template,
    verify_link,
)
from otp_service.mail_providers import POPULAR_PROVIDERS
from otp_service.otp.service import IDEMPOTENCY_KEEP_MS, REUSE_MIN_LEFT_MS
from otp_service.settings import Rate, Settings
from otp_service.validation.address import AddressValidator
from otp_service.validation.families import FAMILIES
from otp_service.webhooks.resend import SVIX_TOLERANCE
from otp_service.webhooks.sns import MAX_SKEW as SNS_MAX_SKEW

Format = Literal["markdown", "html"]

SAMPLE_CODE = "123456"
SAMPLE_ADDRESS = "you@example.com"
"""The placeholder code of the sample email."""

CONSENT_NOTICE = {
    "en": "We'll email you a one-time code to sign in. We use your address only to send this code "
    "and to protect the service from abuse; we never share it.",
    "zh-CN": "我们将向您的邮箱发送一次性验证码。您的邮箱仅用于发送验证码和防止滥用，不会与他人共享。",
}
"""The notice shown next to the email field (README, "Recommended consent notice")."""


LANGUAGES = {"bilingual": "English and Simplified Chinese", "en": "English", "zh-CN": "Simplified Chinese"}
_PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_PROVIDER_NAMES = {
    "console": "console (development only: prints emails)",
    "resend": "Resend",
    "ses": "Amazon SES",
    "smtp": "an SMTP server (TLS required)",
}


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def within(window: timedelta) -> str:
    """timedelta(hours=1) -> "±1 hour"."""
    seconds = int(window.total_seconds())
    for unit, name in ((3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % unit == 0:
            count = seconds // unit
            return f"±{count} {name}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")


def per(rate: Rate) -> str:
    """3/minute -> "3 per minute"."""
    return f"{rate.limit} per {_PERIOD_NAMES[rate.period_seconds]}"


@dataclass(frozen=True, slots=True)
class Control:
    name: str
    value: str
    enforced: str


def controls(s: Settings, validator: AddressValidator) -> list[Control]:
    guard = Rate.parse(s.conversion_guard_rate)
    deliverability = (
        "on: the domain must publish MX records that are not a null MX (RFC 7505), or an A/AAAA "
        f"record; DNS lookups time out after {s.dns_timeout:g} s and then let the send through"
        if s.deliverability_checked
        else "off"
    )
    captcha = "off"
    if s.captcha_provider and s.captcha_mode == "always":
        captcha = (
            f"{s.captcha_provider}: every send carries a token checked at the provider's siteverify; "
            "the provider unreachable refuses sends (fail closed)"
        )
    elif s.captcha_provider:
        captcha = (
            f"{s.captcha_provider}, adaptive: a token is required once {s.captcha_escalation:.0%} of the "
            "service-wide daily cap is used, or from a subnet the low-conversion guard slows; a token "
            "sent is always checked"
        )
    families = ", ".join(FAMILIES)
    strategy = (
        "a new send replaces the live code (rotate)"
        if s.resend_strategy == "rotate"
        else "a send while a code is live emails that same code again, with its time left, never "
        f"extending it or resetting its wrong attempts (reuse; replaced when under {REUSE_MIN_LEFT_MS // 1000} s are left)"
    )
    return [
        Control("Per-address cooldown", f"{s.rate_limit_ttl} seconds between codes to one address",
                "the send decision, one atomic Redis script"),
        Control("Per-address daily cap", f"{s.per_account_daily_limit} codes per address per rolling 24 hours",
                "the send decision"),
        Control("Mailboxes, not spellings",
                "the cooldown, the daily cap, the live code and suppression belong to the inbox: a +tag, "
                f"and dots on {', '.join(s.dot_insensitive_domains) or 'no domain'}, do not make another address",
                "the send decision and the delivery worker"),
        Control("Remembered sources",
                f"a network a user verified from is remembered for {s.remember_days} days, with its own cooldown, "
                "daily cap and wrong-attempt count, and its code is never replaced from elsewhere: knowing an "
                "address does not let anyone lock its owner out", "the send and verify decisions"),
        Control("Recipient-domain cap", f"{s.domain_daily_limit:,} codes per recipient domain per rolling 24 hours "
                "(shared mail providers such as gmail.com exempt)", "the send decision"),
        Control("Client rate (send)", f"{per(s.rate('otp_send'))} per client (an IPv4 address or an IPv6 /{s.ipv6_client_prefix})",
                "the send decision; every request counts, malformed ones included"),
        Control("Subnet rate (send)", f"{per(s.rate('otp_send_subnet'))} per subnet (IPv4 /{s.ipv4_subnet_prefix}, IPv6 /{s.ipv6_subnet_prefix})",
                "the send decision"),
        Control("Client and subnet rates (verify)",
                f"{per(s.rate('otp_verify'))} per client, {per(s.rate('otp_verify_subnet'))} per subnet",
                "the verify decision, one atomic Redis script"),
        Control("Low-conversion guard",
                f"a subnet with at least {s.conversion_min_sends} sends in 24 hours and under "
                f"{s.conversion_min_ratio:.0%} of its codes verified is slowed to {per(guard)}",
                "the send decision"),
        Control("Service-wide daily cap", f"{s.global_daily_limits.get('email', 0):,} emails per rolling 24 hours",
                "the send decision (a circuit breaker: refused with 503 once reached)"),
        Control("Send rate", f"{s.send_rate} emails per second across all workers",
                "the delivery workers (one token bucket shared by all of them)"),
        Control("Throwaway-domain list", f"{validator.disposable_count:,} domains refused, including the {families} families",
                "address validation, before anything is stored"),
        Control("Typo correction", f"addresses at near-misses of {len(POPULAR_PROVIDERS)} common providers are refused with a suggestion",
                "address validation"),
        Control("Deliverability check", deliverability, "before anything is stored"),
        Control("Captcha", captcha, "before anything is stored"),
        Control("Suppression before send",
                "an address that hard-bounced, complained or was suppressed by an operator is never emailed again",
                "the delivery worker, before every provider call"),
        Control("Verify attempts",
                f"{s.max_attempts} wrong codes invalidate a code; codes have {s.code_length} digits and live "
                f"{lifetime_en(s.code_ttl)}; a code verifies once",
                "the verify decision; only a keyed hash of each code is stored"),
        Control("Re-sends", strategy, "the send decision"),
        Control("Retries", f"a send repeated with the same Idempotency-Key within {IDEMPOTENCY_KEEP_MS // 60_000} minutes "
                "repeats the first answer and sends nothing", "the send decision"),
        Control("Test recipients",
                (f"{len(s.test_recipients)} configured (addresses or whole domains for app-store review and "
                 "automated tests): never emailed, a fixed code each; the client rates still apply and no daily "
                 "or global counter moves; every use is logged") if s.test_recipients else "none configured",
                "the send and verify endpoints"),
        Control("No enumeration", "a suppressed, unknown or known address gets the same answer and the same limits",
                "the send endpoint"),
        Control("\"Didn't ask for this?\"",
                ("every email links to a page where its recipient reports a code they did not request (a button, "
                 "never the visit, which link scanners make): for "
                 f"{s.not_me_hours} hours the address then receives codes only from the networks it verified from "
                 "before, every other sender getting the usual answer and no email, and the network that asked "
                 "counts one bounce-like event toward its block; a link works once, for 7 days")
                if s.public_url else "off (OTP_PUBLIC_URL not set)",
                "the email, the send decision and the reputation guard"),
        Control("Reputation guard",
                f"sending pauses above a {s.reputation_max_bounce_rate:.2%} bounce or "
                f"{s.reputation_max_complaint_rate:.2%} complaint rate (after {s.reputation_min_volume} sends, from at "
                f"least {s.reputation_min_bounces} bounced or {s.reputation_min_complaints} complaining mailboxes); "
                f"a network whose sends drew {s.reputation_source_limit} bounces and complaints in a day may send "
                "nothing for a day, and its events do not count; resumed by an operator, or by the guard after "
                f"{lifetime_en(s.reputation_cooloff)} once the rates hold", "the delivery workers"),
    ]  # fmt: skip


def _markdown_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_trust_page(settings: Settings, fmt: Format = "markdown") -> str:
    s = settings
    validator = AddressValidator(
        extra_disposable=s.disposable_domains_extra, allow=s.disposable_domains_allow
    )
    sample = render_template(
        "email_otp",
        email_context(
            brand=s.brand_name, code=SAMPLE_CODE, lifetime_seconds=s.code_ttl, sender=s.email_from,
            website_url=s.website_url, support_email=s.support_email, locale=s.default_locale,
            verify_link=verify_link(s.verify_link_template, SAMPLE_ADDRESS, SAMPLE_CODE)
            if s.verify_link_template else None,
            not_me_link=f"{s.public_url}/not-me#t=…" if s.public_url else None, not_me_hours=s.not_me_hours,
        ),
    )  # fmt: skip
    providers = [_PROVIDER_NAMES[s.email_provider]]
    if s.email_fallback_provider:
        providers.append(_PROVIDER_NAMES[s.email_fallback_provider] + " (fallback)")
    env = environment("otp_service.trust")
    markdown = env.get_template("trust.md.j2").render(
        s=s,
        controls=controls(s, validator),
        consent=CONSENT_NOTICE,
        providers=providers,
        sample=sample,
        sample_code=SAMPLE_CODE,
        cell=_markdown_cell,
        language=LANGUAGES[s.default_locale],
        resend_window=within(SVIX_TOLERANCE),
        ses_window=within(SNS_MAX_SKEW),
        lifetime=lifetime_en(s.code_ttl),
        sns_topics=len(s.sns_topic_arns),
    )
    if fmt == "markdown":
        return markdown
    return env.get_template("trust.html.j2").render(s=s, body=_MARKDOWN.render(markdown))
