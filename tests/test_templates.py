import re

import pytest

from otp_service.delivery.templates import ALLOWED_TEMPLATES, UnknownTemplate, render_template

CONTEXT = {
    "brand": "Acme",
    "code": "123456",
    "minutes": 5,
    "website_url": "https://acme.example",
    "support_email": "help@acme.example",
}


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
    assert "expires in 5 minutes" in text
    assert "If you did not request this" in text
    assert "您的验证码是：123456" in text
    assert "5 分钟后失效" in text
    assert "https://acme.example" in text
    assert "help@acme.example" in text


def test_one_minute_is_singular() -> None:
    assert "expires in 1 minute." in render_template("email_otp", {**CONTEXT, "minutes": 1}).text


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
    assert sorted(links) == ["https://acme.example", "mailto:help@acme.example"]


def test_html_escapes_settings_values() -> None:
    html = render_template("email_otp", {**CONTEXT, "brand": "<b>Evil</b>"}).html
    assert "<b>Evil</b>" not in html
    assert "&lt;b&gt;Evil&lt;/b&gt;" in html


def test_missing_context_is_an_error_not_a_blank() -> None:
    with pytest.raises(Exception, match="code"):
        render_template("email_otp", {k: v for k, v in CONTEXT.items() if k != "code"})
