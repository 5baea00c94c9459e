"""The only emails this service can send: a compile-time allowlist of template ids.

No caller passes a subject or a body; the context holds values the templates escape
(autoescape on for HTML). No tracking pixels, no remote images, no links but the website, the
support address and, when configured, the verify link (its code in the URL fragment) and the
"Didn't ask for this?" link (its token in the fragment: delivery/not_me.py).
"""

from dataclasses import dataclass
from email.utils import parseaddr
from functools import cache
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from otp_service.locales import LOCALES, Locale

ALLOWED_TEMPLATES: frozenset[str] = frozenset({"email_otp"})

HEADERS: dict[str, str] = {"Auto-Submitted": "auto-generated"}
"""On every email (RFC 3834): an automatic message, which auto-responders must not answer."""


def _units(seconds: int) -> list[tuple[int, int]]:
    """(count, unit size) for hours, minutes and seconds, leaving out the zero ones."""
    parts = []
    for size in (3600, 60, 1):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append((count, size))
    return parts


def lifetime_en(seconds: int) -> str:
    """A duration worded exactly: 300 -> "5 minutes", 90 -> "1 minute 30 seconds", never rounded."""
    names = {3600: "hour", 60: "minute", 1: "second"}
    return " ".join(f"{n} {names[size]}{'' if n == 1 else 's'}" for n, size in _units(seconds)) or "0 seconds"


def lifetime_zh(seconds: int) -> str:
    """300 -> "5 分钟", 90 -> "1 分钟 30 秒", 3600 -> "1 小时"."""
    names = {3600: "小时", 60: "分钟", 1: "秒"}
    return " ".join(f"{n} {names[size]}" for n, size in _units(seconds)) or "0 秒"


def email_context(
    *,
    brand: str,
    code: str,
    lifetime_seconds: int,
    sender: str,
    website_url: str,
    support_email: str,
    locale: Locale = "bilingual",
    repeated: bool = False,
    verify_link: str | None = None,
    not_me_link: str | None = None,
    not_me_hours: int = 24,
) -> dict[str, Any]:
    """Everything the template reads, from the settings and the one code. `repeated`: the code
    was emailed before (OTP_RESEND_STRATEGY=reuse), and `lifetime_seconds` is its time left.
    `verify_link`: OTP_VERIFY_LINK_TEMPLATE filled in (verify_link below). `not_me_link`: this
    send's "Didn't ask for this?" link (OTP_PUBLIC_URL), `not_me_hours` what it does."""
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}")
    return {
        "brand": brand,
        "code": code,
        "lifetime_en": lifetime_en(lifetime_seconds),
        "lifetime_zh": lifetime_zh(lifetime_seconds),
        "sender_address": parseaddr(sender)[1] or sender,
        "website_url": website_url,
        "support_email": support_email,
        "english": locale in ("en", "bilingual"),
        "chinese": locale in ("zh-CN", "bilingual"),
        "repeated": repeated,
        "verify_link": verify_link,
        "not_me_link": not_me_link,
        "not_me_hours": not_me_hours,
    }


def verify_link(template: str, email: str, code: str) -> str:
    """OTP_VERIFY_LINK_TEMPLATE with the address and code filled in, URL-encoded. Both stand in
    the fragment (Settings refuses any other template), which no browser or link scanner sends to
    a server: opening the link cannot use the code; the page it opens posts the verify."""
    return template.format(email=quote(email, safe=""), code=quote(code, safe=""))


class UnknownTemplate(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@cache
def environment(package: str = "otp_service.delivery") -> Environment:
    """The Jinja environment of a package's `templates/` folder: autoescape for `*.html.j2`, an
    undefined variable an error, not a blank."""
    return Environment(
        loader=PackageLoader(package, "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_template(template_id: str, context: dict[str, Any]) -> RenderedEmail:
    if template_id not in ALLOWED_TEMPLATES:
        raise UnknownTemplate(f"template {template_id!r} is not in the allowlist")
    env = environment()
    subject = " ".join(env.get_template(f"{template_id}.subject.j2").render(context).split())
    return RenderedEmail(
        subject=subject,
        text=env.get_template(f"{template_id}.txt.j2").render(context),
        html=env.get_template(f"{template_id}.html.j2").render({**context, "subject": subject}),
    )
