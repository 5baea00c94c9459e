"""`otp-service trust-page`: the page carries the configured values (change a setting and the page
changes), the real template's sample email, and well-formed HTML with no remote resources."""

import json
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from otp_service import cli
from otp_service.validation.address import AddressValidator
from tests.support import clean_env, exit_status_in_process, only_otp_settings

VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}

Page = Callable[..., str]


@pytest.fixture
def trust_page(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Page:
    """What `otp-service trust-page ARGS` prints with `settings` as its only OTP_ variables: the
    command's own function (cli.main, what `python -m otp_service` runs), in this process.
    test_the_command_prints_as_a_process_what_it_renders_in_process starts it as a process."""

    def run(*args: str, **settings: str) -> str:
        only_otp_settings(monkeypatch, settings)
        monkeypatch.chdir(tmp_path)
        status = cli.main(["trust-page", *args])
        printed = capsys.readouterr()
        assert status == 0, printed.err
        return printed.out

    return run


def test_the_command_prints_as_a_process_what_it_renders_in_process(tmp_path: Path, trust_page: Page) -> None:
    settings = {"OTP_BRAND_NAME": "Acme", "OTP_RATE_LIMIT_TTL": "50", "OTP_DEFAULT_LOCALE": "en"}
    for args in ([], ["--format", "html"]):
        run = subprocess.run(
            [sys.executable, "-m", "otp_service", "trust-page", *args],
            env=clean_env(**settings), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (run.returncode, run.stderr) == (0, "")
        assert run.stdout == trust_page(*args, **settings)


def test_the_page_carries_the_configured_values(trust_page: Page) -> None:
    page = trust_page(
        OTP_BRAND_NAME="Acme", OTP_RATE_LIMIT_TTL="50", OTP_PER_ACCOUNT_DAILY_LIMIT="7", OTP_CODE_TTL="90",
        OTP_MAX_ATTEMPTS="4", OTP_CODE_LENGTH="8",
        OTP_THROTTLE_RATES='{"otp_send": "5/minute", "otp_send_subnet": "40/hour"}',
        OTP_GLOBAL_DAILY_LIMITS='{"email": 1234}', OTP_SEND_RATE="9", OTP_RETENTION_DAYS="12",
        OTP_CONVERSION_MIN_SENDS="25", OTP_CONVERSION_MIN_RATIO="0.2", OTP_CONVERSION_GUARD_RATE="4/hour",
        OTP_CAPTCHA_PROVIDER="turnstile", OTP_CAPTCHA_SECRET="x", OTP_CHECK_DELIVERABILITY="true",
        OTP_DNS_TIMEOUT="1.5", OTP_DISPOSABLE_DOMAINS_EXTRA='["throwaway-one.example", "throwaway-two.example"]',
        OTP_SUPPORT_EMAIL="help@acme.example", OTP_RESEND_STRATEGY="reuse",
    )  # fmt: skip
    for expected in (
        "# Acme: Trust & email sending practices",
        "| Per-address cooldown | 50 seconds between codes to one address |",
        "7 codes per address per rolling 24 hours",
        "5 per minute per client",
        "40 per hour per subnet",
        "10 per minute per client, 100 per minute per subnet",  # the verify defaults, kept
        "1,234 emails per rolling 24 hours",
        "9 emails per second",
        "at least 25 sends in 24 hours and under 20% of its codes verified is slowed to 4 per hour",
        "4 wrong codes invalidate a code; codes have 8 digits and live 1 minute 30 seconds",
        "turnstile: every send carries a token",
        "DNS lookups time out after 1.5 s",
        "emails that same code again",
        "12 days, then deleted",
        "help@acme.example",
        "It expires in 1 minute 30 seconds.",  # the sample email, from the real template
        "Your verification code is: 123456",
        "Subject: Acme verification code / 验证码",
        "±5 minutes",
        "±1 hour",
    ):
        assert expected in page, expected
    size = AddressValidator(
        extra_disposable=["throwaway-one.example", "throwaway-two.example"]
    ).disposable_count
    assert f"| {size:,} domains refused" in page
    assert size == AddressValidator().disposable_count + 2


def test_changing_a_setting_changes_the_page(trust_page: Page) -> None:
    before = trust_page()
    assert "| Per-address cooldown | 60 seconds between codes to one address |" in before
    assert "| Deliverability check | off |" in before
    assert "| Captcha | off |" in before
    assert "a new send replaces the live code (rotate)" in before
    after = trust_page(OTP_RATE_LIMIT_TTL="45", OTP_CHECK_DELIVERABILITY="true")
    assert "| Per-address cooldown | 45 seconds between codes to one address |" in after
    assert "| Deliverability check | on:" in after
    changed = set(after.splitlines()) - set(before.splitlines())
    assert len(changed) == 2


def test_the_sample_email_is_in_the_default_locale(trust_page: Page) -> None:
    page = trust_page(OTP_DEFAULT_LOCALE="zh-CN", OTP_BRAND_NAME="Acme")
    assert "Subject: Acme 验证码" in page
    assert "您的验证码是：123456" in page
    assert "Your verification code is" not in page
    assert "in Simplified Chinese" in page


class Checker(HTMLParser):
    """Tags open and close in order; every resource the page would load is recorded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "srcset", "poster", "data") or (tag == "link" and name == "href"):
                self.loads.append(f"{tag} {name}={value}")
        if tag in ("script", "iframe", "object", "embed", "img", "link", "video", "audio"):
            self.loads.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style" and ("url(" in data or "@import" in data):
            self.loads.append("style url()/@import")


def test_the_html_is_well_formed_and_loads_nothing(trust_page: Page) -> None:
    page = trust_page("--format", "html", OTP_BRAND_NAME="<script>alert(1)</script> & Co",
                      OTP_RATE_LIMIT_TTL="50")  # fmt: skip
    assert page.startswith("<!DOCTYPE html>")
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert checker.loads == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page  # settings are escaped
    assert "<td>50 seconds between codes to one address</td>" in page
    assert "Your verification code is: 123456" in page


def test_an_unknown_format_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    only_otp_settings(monkeypatch, {})
    assert exit_status_in_process(lambda: cli.main(["trust-page", "--format", "pdf"]), monkeypatch) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_no_placeholder_or_template_syntax_is_left(trust_page: Page, fmt: str) -> None:
    page = trust_page("--format", fmt)
    for leftover in ("{{", "}}", "{%", "%}", "None", "TODO"):
        assert leftover not in page, leftover


SHOP = {
    "brand_name": "Shop Co", "email_from": "Shop <codes@shop.example>", "support_email": "help@shop.example",
    "website_url": "https://shop.example", "code_ttl": 600, "rate_limit_ttl": 120, "per_account_daily_limit": 4,
    "code_length": 8, "max_attempts": 3, "default_locale": "en",
    "test_recipients": {"review@shop.example": "12345678", "*@ci.shop.example": "87654321"},
}  # fmt: skip
APPS = json.dumps({"shop": SHOP, "desk": {"brand_name": "Merchant Desk"}})


def test_an_applications_page_is_rendered_from_its_own_settings(trust_page: Page) -> None:
    page = trust_page("--app", "shop", OTP_APPS=APPS, OTP_SEND_RATE="9")
    for expected in (
        "# Shop Co: Trust & email sending practices",
        "_Generated by `otp-service trust-page --app shop`",
        "This page is application `shop`'s",
        "It comes from\nShop <codes@shop.example>, in English\n",
        "can write to help@shop.example",
        "| Per-address cooldown | 120 seconds between codes to one address |",
        "4 codes per address per rolling 24 hours",
        "3 wrong codes invalidate a code; codes have 8 digits and live 10 minutes",
        "| Test recipients | 2 configured",
        "9 emails per second",  # shared, the service's
        "Subject: Shop Co verification code\n",
        "Your verification code is: 123456",
        "https://shop.example",
    ):
        assert expected in page, expected
    assert "您的验证码是" not in page  # the sample email in its own default locale, en


def test_an_application_without_overrides_has_the_service_wide_figures(trust_page: Page) -> None:
    wide = trust_page(OTP_BRAND_NAME="Acme")
    desk = trust_page("--app", "desk", OTP_APPS=APPS, OTP_BRAND_NAME="Acme")
    # Only its brand and the paragraph naming it differ: every figure is the service-wide one.
    intro = desk.split("\n\n")[2]
    assert intro.startswith("This page is application `desk`'s")
    assert (
        desk.replace(intro + "\n\n", "").replace("Merchant Desk", "Acme").replace(" --app desk", "") == wide
    )


def test_without_app_the_page_is_the_service_wide_one_as_before(trust_page: Page) -> None:
    assert trust_page(OTP_APPS=APPS) == trust_page()


@pytest.mark.parametrize(("apps", "configured"), [(APPS, "shop, desk"), ("{}", "none (OTP_APPS is empty)")])
def test_an_unknown_application_is_refused_naming_the_configured_ones(
    apps: str, configured: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    only_otp_settings(monkeypatch, {"OTP_APPS": apps})
    assert exit_status_in_process(lambda: cli.main(["trust-page", "--app", "nope"]), monkeypatch) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == f"otp-service: --app 'nope': no such application; configured: {configured}\n"
