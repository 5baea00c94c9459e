"""OTP_RESEND_STRATEGY and the email's language, through the HTTP API on PostgreSQL and Redis (the
store's side of `reuse` runs on both stores in test_store_contract.py)."""

import re
from collections.abc import Callable
from typing import Any

import pytest

from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email
from tests.test_otp_api import WIDE_RATES

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
BLOCK = re.compile(r"===== otp-service console email \S+ =====\n(?P<body>.*?)===== end of email", re.S)


def settings_for(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(
        conversion_min_sends=1_000_000, throttle_rates=WIDE_RATES, rate_limit_ttl=0, **overrides
    )


def wrong_for(code: str) -> str:
    return "000000" if code != "000000" else "111111"


async def test_reuse_emails_the_live_code_again_with_its_time_left(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    email = unique_email()
    async with open_app(settings_for(make_settings, resend_strategy="reuse")) as app:
        assert (await app.http.post(SEND, json={"email": email})).status_code == 202
        await drain(app)
        [first] = console_emails(capsys.readouterr().out)
        wrong = wrong_for(first.code)
        res = await app.http.post(VERIFY, json={"email": email, "code": wrong})
        assert res.json()["attempts_remaining"] == 4

        again = await app.http.post(SEND, json={"email": email})
        answer = again.json()
        assert answer.pop("send_id")
        assert answer == {"status": "pending", "expires_in": 300, "resend_after": 0}  # the same answer
        await drain(app)
        out = capsys.readouterr().out
        [second] = console_emails(out)
        assert second.code == first.code
        assert "This is the same code as in our previous email." in out
        assert "此验证码与上一封邮件中的相同。" in out
        left = re.search(r"It expires in 4 minutes (\d+) seconds\.", out)
        assert left is not None
        assert 50 <= int(left[1]) <= 59  # the time left, not a fresh 5 minutes
        assert "4 分钟" in out

        # Re-sending bought no guesses: the attempt count went on from where it was.
        res = await app.http.post(VERIFY, json={"email": email, "code": wrong})
        assert res.json()["attempts_remaining"] == 3
        res = await app.http.post(VERIFY, json={"email": email, "code": first.code})
        assert res.json() == {"status": "approved", "email": email}

        # Used up: the next send stores and emails a code of its own.
        assert (await app.http.post(SEND, json={"email": email})).status_code == 202
        await drain(app)
        out = capsys.readouterr().out
        [third] = console_emails(out)
        assert "same code" not in out
        assert "It expires in 5 minutes." in out
        res = await app.http.post(VERIFY, json={"email": email, "code": third.code})
        assert res.status_code == 200


async def test_rotate_is_the_default_and_replaces_the_code(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    email = unique_email()
    async with open_app(settings_for(make_settings)) as app:
        for _ in range(2):
            assert (await app.http.post(SEND, json={"email": email})).status_code == 202
            await drain(app)
        emails = console_emails(capsys.readouterr().out)
        codes = [e.code for e in emails]
        res = await app.http.post(VERIFY, json={"email": email, "code": codes[-1]})
        assert res.status_code == 200
        if len(codes) == 2 and codes[0] != codes[1]:
            res = await app.http.post(VERIFY, json={"email": email, "code": codes[0]})
            assert res.json()["code"] == "code_expired"


def bodies(out: str) -> list[str]:
    return [m["body"] for m in BLOCK.finditer(out)]


@pytest.mark.parametrize(
    ("locale", "subject", "english", "chinese"),
    [
        ("en", "Subject: Acme verification code\n", True, False),
        ("zh-CN", "Subject: Acme 验证码\n", False, True),
        ("bilingual", "Subject: Acme verification code / 验证码\n", True, True),
        (None, "Subject: Acme verification code / 验证码\n", True, True),
    ],
)
async def test_a_send_chooses_the_emails_language(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str],
    locale: str | None, subject: str, english: bool, chinese: bool,
) -> None:  # fmt: skip
    email = unique_email()
    body: dict[str, Any] = {"email": email} if locale is None else {"email": email, "locale": locale}
    async with open_app(settings_for(make_settings, brand_name="Acme")) as app:
        assert (await app.http.post(SEND, json=body)).status_code == 202
        await drain(app)
    [text] = bodies(capsys.readouterr().out)
    assert subject in text
    assert ("Your verification code is: " in text) is english
    assert ("您的验证码是：" in text) is chinese


async def test_the_default_locale_setting_and_an_unknown_locale(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_app(settings_for(make_settings, brand_name="Acme", default_locale="zh-CN")) as app:
        assert (await app.http.post(SEND, json={"email": unique_email()})).status_code == 202
        await drain(app)
        [text] = bodies(capsys.readouterr().out)
        assert "Subject: Acme 验证码\n" in text
        assert "Your verification code" not in text
        for bad in ("fr", "EN", "", 1, "zh_CN"):
            res = await app.http.post(SEND, json={"email": unique_email(), "locale": bad})
            assert (res.status_code, res.json()["code"]) == (422, "invalid_email"), bad
        await drain(app)
        assert bodies(capsys.readouterr().out) == []  # nothing sent for a refused locale


def test_an_unknown_default_locale_is_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="default_locale"):
        make_settings(default_locale="fr")
