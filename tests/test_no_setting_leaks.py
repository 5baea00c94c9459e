"""No setting's value, a URL's credentials included, appears in an error message or a log line,
however malformed (CONTRACT §6). A password holding '#', '/' or '?' that is not percent-encoded
breaks every URL parser, and each quoted the piece it choked on ("Port could not be cast to
integer value as 'Sup3r'"): every URL-valued setting is fed such a URL through every way a user
starts the service, and all of their output is read.

Every (setting, entry point) pair runs the entry point's own function in this process (what
`python -m otp_service` and uvicorn's `--factory` call), its printed output, exit message and
log records read; each entry point also starts once as a real process, with every setting it
reads malformed at once, so what only a process shows (exit status, what the interpreter and
uvicorn print on the way out, the DEBUG log level) is read too. A process per pair spent a
minute of the suite starting the interpreter 35 times to read the same function's answer."""

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from otp_service import cli
from otp_service.app import create_app, create_app_from_env
from otp_service.settings import SettingsError
from tests.conftest import REDIS_URL
from tests.support import exit_status_in_process, only_otp_settings

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

IN_PROCESS: dict[str, Callable[[], object]] = {
    # what `python -m otp_service ...` runs (__main__: raise SystemExit(main()))
    "serve": lambda: cli.main(["serve", "--port", "0"]),
    "worker": lambda: cli.main(["worker"]),
    "migrate": lambda: cli.main(["migrate"]),
    # what `uvicorn --factory otp_service.app:create_app_from_env` calls in each worker process
    "uvicorn-factory": create_app_from_env,
}


@pytest.mark.parametrize(("case", "entry"), STARTS)
def test_a_malformed_url_is_refused_at_start_naming_the_setting_and_quoting_nothing(
    case: str, entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    only_otp_settings(monkeypatch, {k: v for k, v in environment(case).items() if k.startswith("OTP_")})
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    status = exit_status_in_process(IN_PROCESS[entry], monkeypatch)
    # An exit status or message (which the interpreter prints on stderr), not an app (the
    # factory's answer) nor a clean exit.
    assert isinstance(status, int | str), f"{entry} started with a malformed {setting_of(case)}"
    assert status != 0, f"{entry} started with a malformed {setting_of(case)}"
    printed = capsys.readouterr()
    output = printed.out + printed.err + str(status)
    assert setting_of(case) in output
    assert_quotes_nothing(output)
    assert_quotes_nothing("".join(str(record.__dict__) for record in caplog.records))


def all_at_once(entry: str) -> dict[str, str]:
    """Every malformed URL `entry` reads that can be set together, the one password in each."""
    if entry == "migrate":
        return dict(CASES["database_url"])
    return {
        **CASES["database_url"], **CASES["redis_url"], **CASES["smtp_url-fallback"],
        **CASES["resend_api_url"], **CASES["captcha_verify_url"], **CASES["events_webhook_url"],
        **CASES["website_url"], **CASES["verify_link_template"],
    }  # fmt: skip


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_entry_point_as_a_process_exits_naming_every_malformed_url_and_quoting_nothing(
    entry: str, tmp_path: Path
) -> None:
    malformed = all_at_once(entry)
    env = {k: v for k, v in environment("database_url").items() if k not in malformed} | malformed
    proc = subprocess.Popen(
        [sys.executable, *ENTRY_POINTS[entry]], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert_quotes_nothing(out + err)
    assert proc.returncode not in (0, -15), f"{entry} started with malformed URLs"
    named = {k for k, v in malformed.items() if PASSWORD in v}
    assert {name for name in named if name not in out + err} == set()


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
