import os
import re
from pathlib import Path
from typing import Any

import pytest

from otp_service.delivery.templates import (
    ALLOWED_TEMPLATES,
    UnknownTemplate,
    email_context,
    lifetime_en,
    lifetime_zh,
    render_template,
)
from otp_service.locales import LOCALES, Locale

SNAPSHOTS = Path(__file__).parent / "snapshots"


def context(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "brand": "Acme",
        "code": "123456",
        "lifetime_seconds": 300,
        "sender": "Acme <noreply@acme.example>",
        "website_url": "https://acme.example",
        "support_email": "help@acme.example",
    }
    return email_context(**{**values, **overrides})


CONTEXT = context()


def test_only_the_allowlisted_template_renders() -> None:
    assert frozenset({"email_otp"}) == ALLOWED_TEMPLATES
    with pytest.raises(UnknownTemplate):
        render_template("password_reset", CONTEXT)
    with pytest.raises(UnknownTemplate):
        render_template("../email_otp", CONTEXT)


def test_subject_is_bilingual() -> None:
    assert render_template("email_otp", CONTEXT).subject == "Acme verification code / 验证码"


def test_text_part() -> None:
    text = render_template("email_otp", CONTEXT).text
    assert "Your verification code is: 123456\n" in text
    assert "expires in 5 minutes." in text
    assert "If you did not request this" in text
    assert "您的验证码是：123456" in text
    assert "5 分钟后失效" in text
    assert "https://acme.example" in text
    assert "help@acme.example" in text


@pytest.mark.parametrize(
    ("seconds", "en", "zh"),
    [
        (30, "30 seconds", "30 秒"),
        (60, "1 minute", "1 分钟"),
        (90, "1 minute 30 seconds", "1 分钟 30 秒"),
        (300, "5 minutes", "5 分钟"),
        (3600, "1 hour", "1 小时"),
        (5400, "1 hour 30 minutes", "1 小时 30 分钟"),
        (86400, "24 hours", "24 小时"),
    ],
)
def test_the_lifetime_is_worded_exactly_as_set(seconds: int, en: str, zh: str) -> None:
    assert (lifetime_en(seconds), lifetime_zh(seconds)) == (en, zh)
    text = render_template("email_otp", context(lifetime_seconds=seconds)).text
    assert f"It expires in {en}. " in text
    assert f"验证码将在 {zh}后失效" in text


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("part", ["txt", "html"])
def test_snapshot(locale: Locale, part: str) -> None:
    """Both parts of each locale, byte for byte (UPDATE_SNAPSHOTS=1 rewrites them; review the diff)."""
    rendered = render_template("email_otp", context(locale=locale, lifetime_seconds=90))
    got = f"Subject: {rendered.subject}\n\n" + (rendered.text if part == "txt" else rendered.html)
    path = SNAPSHOTS / f"email_otp.{locale}.{part}"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8")


def test_what_the_published_sample_carries() -> None:
    text = render_template("email_otp", CONTEXT).text
    assert (
        "You received this email because someone requested a verification code for Acme using this email "
        "address." in text
    )
    assert "If you keep receiving codes you did not request, write to help@acme.example." in text
    assert "您收到这封邮件，是因为有人使用此邮箱地址申请了 Acme 验证码。" in text
    assert "如果您反复收到并非本人申请的验证码，请发送邮件至 help@acme.example。" in text
    assert (
        "The Acme team / Acme 团队\nnoreply@acme.example · https://acme.example · help@acme.example\n" in text
    )


@pytest.mark.parametrize(
    ("locale", "subject", "english", "chinese"),
    [
        ("bilingual", "Acme verification code / 验证码", True, True),
        ("en", "Acme verification code", True, False),
        ("zh-CN", "Acme 验证码", False, True),
    ],
)
def test_each_locale_has_its_subject_and_language(
    locale: Locale, subject: str, english: bool, chinese: bool
) -> None:
    rendered = render_template("email_otp", context(locale=locale))
    assert rendered.subject == subject
    for part in (rendered.text, rendered.html):
        assert ("Your verification code is" in part) is english
        assert ("您的验证码是" in part) is chinese


def test_html_part_has_code_both_languages_and_no_remote_resources() -> None:
    html = render_template("email_otp", CONTEXT).html
    assert html.count("123456") == 2
    assert "Your verification code is:" in html
    assert "您的验证码是" in html
    assert "<img" not in html.lower()
    assert "<script" not in html.lower()
    assert not re.search(r"""\b(src|background)\s*=""", html, re.I)
    assert "url(" not in html.lower()
    assert "@import" not in html.lower()
    links = re.findall(r"""href\s*=\s*["']([^"']+)""", html)
    assert set(links) == {"https://acme.example", "mailto:help@acme.example"}


def test_html_escapes_settings_values() -> None:
    html = render_template("email_otp", context(brand="<b>Evil</b>")).html
    assert "<b>Evil</b>" not in html
    assert "&lt;b&gt;Evil&lt;/b&gt;" in html


def test_missing_context_is_an_error_not_a_blank() -> None:
    with pytest.raises(Exception, match="code"):
        render_template("email_otp", {k: v for k, v in CONTEXT.items() if k != "code"})


async def test_the_console_provider_prints_the_headers() -> None:
    import io

    from otp_service.delivery.providers.base import OutgoingEmail
    from otp_service.delivery.providers.console import ConsoleProvider
    from otp_service.delivery.templates import HEADERS

    out = io.StringIO()
    email = OutgoingEmail(to="a@example.org", sender="s@example.org", subject="s", text="t\n", html="h\n",
                          idempotency_key="k", headers=HEADERS)  # fmt: skip
    await ConsoleProvider(out).send(email)
    assert "\nAuto-Submitted: auto-generated\n" in out.getvalue()
