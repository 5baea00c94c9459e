"""No setting's value, a URL's credentials included, appears in an error message or a log line,
however malformed (CONTRACT §6). A password holding '#', '/' or '?' that is not percent-encoded
breaks every URL parser, and each quoted the piece it choked on ("Port could not be cast to
integer value as 'Sup3r'"): every URL-valued setting is fed such a URL through every way a user
starts the service, and all of their output is read."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otp_service.app import create_app
from otp_service.settings import SettingsError
from tests.conftest import REDIS_URL

PASSWORD = "Sup3r#s/cr?t"
PIECES = ("Sup3r", "s/cr?t")
"""What the parsers quoted: the part of the password before the '#', and the part after it."""

CASES = {
    "database_url": ({"OTP_DATABASE_URL": f"postgresql+asyncpg://u:{PASSWORD}@db.example/otp"}),
    "database_url-port": ({"OTP_DATABASE_URL": f"postgresql+asyncpg://u@db.example:{PASSWORD}/otp"}),
    "redis_url": ({"OTP_REDIS_URL": f"redis://:{PASSWORD}@redis.example:6379/0"}),
    "smtp_url": {"OTP_EMAIL_PROVIDER": "smtp", "OTP_SMTP_URL": f"smtp://user:{PASSWORD}@smtp.example:587"},
    "smtp_url-fallback": {
        "OTP_EMAIL_FALLBACK_PROVIDER": "smtp", "OTP_SMTP_URL": f"smtps://user:{PASSWORD}@smtp.example",
    },
    "resend_api_url": {
        "OTP_EMAIL_PROVIDER": "resend", "OTP_RESEND_API_KEY": "re_test",
        "OTP_RESEND_API_URL": f"https://re:{PASSWORD}@api.resend.example",
    },
    "ses_endpoint_url": {
        "OTP_EMAIL_PROVIDER": "ses", "OTP_SES_ENDPOINT_URL": f"https://ak:{PASSWORD}@127.0.0.1:4566",
    },
    "captcha_verify_url": {
        "OTP_CAPTCHA_PROVIDER": "turnstile", "OTP_CAPTCHA_SECRET": "captcha-secret",
        "OTP_CAPTCHA_VERIFY_URL": f"https://u:{PASSWORD}@captcha.example/siteverify",
    },
    "events_webhook_url": {
        "OTP_EVENTS_WEBHOOK_URL": f"https://u:{PASSWORD}@hooks.example/otp",
        "OTP_EVENTS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    },
    "website_url": {"OTP_WEBSITE_URL": f"https://u:{PASSWORD}@www.example"},
    "verify_link_template": {
        "OTP_VERIFY_LINK_TEMPLATE": f"https://u:{PASSWORD}@app.example/verify#email={{email}}&code={{code}}",
    },
}  # fmt: skip

ENTRY_POINTS = {
    "serve": ["-m", "otp_service", "serve", "--port", "0"],
    "worker": ["-m", "otp_service", "worker"],
    "uvicorn-factory": ["-m", "uvicorn", "--factory", "otp_service.app:create_app_from_env", "--port", "0"],
    "migrate": ["-m", "otp_service", "migrate"],  # reads OTP_DATABASE_URL alone
}


def setting_of(case: str) -> str:
    """The variable under test: the URL among the case's variables."""
    [name] = [k for k, v in CASES[case].items() if PASSWORD in v]
    return name


def environment(case: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    # Otherwise valid production settings: the URL under test is the one thing wrong.
    return {
        **base, "OTP_SECRET_KEY": "k" * 32, "OTP_REDIS_URL": REDIS_URL, "OTP_EMAIL_PROVIDER": "console",
        "OTP_LOG_LEVEL": "DEBUG", **CASES[case],
    }  # fmt: skip


def assert_quotes_nothing(output: str) -> None:
    for piece in PIECES:
        assert piece not in output, output


STARTS = [
    (case, entry) for case in CASES for entry in ENTRY_POINTS
    if entry != "migrate" or setting_of(case) == "OTP_DATABASE_URL"
]  # fmt: skip


@pytest.mark.parametrize(("case", "entry"), STARTS)
def test_a_malformed_url_is_refused_at_start_naming_the_setting_and_quoting_nothing(
    case: str, entry: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, *ENTRY_POINTS[entry]], env=environment(case), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert_quotes_nothing(out + err)
    assert proc.returncode not in (0, -15), f"{entry} started with a malformed {setting_of(case)}"
    assert setting_of(case) in out + err


@pytest.mark.parametrize("case", CASES)
def test_create_app_refuses_a_malformed_url_quoting_nothing(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in environment(case).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        create_app()
    assert setting_of(case) in str(refused.value)
    assert_quotes_nothing(str(refused.value) + repr(refused.value))
    captured = capsys.readouterr()
    assert_quotes_nothing(captured.out + captured.err)
