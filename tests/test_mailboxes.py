"""Mailboxes, not spellings (CONTRACT §6), through the HTTP API on Redis and on the embedded
store: every spelling of one inbox shares its cooldown, daily cap, live code and suppression;
the email goes to the address as typed."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from otp_service.settings import Settings
from otp_service.validation.mailbox import Mailboxes
from tests.support import console_emails, drain

SEND = "/api/v1/auth/otp/send"
VERIFY = "/api/v1/auth/otp/verify"
ADMIN_KEY = "mailbox-admin-key-0123456789-0123456789"
WIDE = {"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip


@pytest.fixture(params=["redis", "embedded"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {} if request.param == "redis" else {"redis_url": None}


@pytest.fixture
async def app(
    store: dict[str, Any], open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[Any]:
    settings = make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE, per_account_daily_limit=3,
                             admin_api_keys=[ADMIN_KEY], **store)  # fmt: skip
    async with open_app(settings) as client:
        yield client


def test_the_mailbox_key() -> None:
    m = Mailboxes(["gmail.com", "googlemail.com"])
    assert m.key("a.b+x@googlemail.com") == m.key("ab@gmail.com") == "ab@gmail.com"
    assert m.key("a.b+x@example.org") == "a.b@example.org"  # dots count elsewhere
    assert m.key("+x@example.org") == "+x@example.org"  # nothing before the tag: its own address
    assert m.key("a.b@gmail.com") == m.key("ab+@gmail.com")


async def test_spellings_of_one_inbox_share_its_cooldown(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = app.web.otp  # any object; the address only has to be unique to this test
    user = f"victim{id(tag)}"
    assert (await app.http.post(SEND, json={"email": f"{user}@gmail.com"})).status_code == 202
    for variant in (f"{user}+1@gmail.com", f"{user[:3]}.{user[3:]}@gmail.com", f"{user}@googlemail.com"):
        res = await app.http.post(SEND, json={"email": variant})
        assert (res.status_code, res.json()["code"]) == (429, "cooldown"), variant
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [f"{user}@gmail.com"]


async def test_spellings_share_the_daily_cap(
    store: dict[str, Any], make_settings: Callable[..., Settings], open_app: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    user = f"flood{id(store)}"
    settings = make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE, per_account_daily_limit=3,
                             rate_limit_ttl=0, worker_enabled=False, **store)  # fmt: skip
    async with open_app(settings) as flood:
        answers = []
        for i in range(6):
            res = await flood.http.post(SEND, json={"email": f"{user}+{i}@gmail.com"})
            answers.append(res.json().get("code", res.status_code))
    assert answers == [202, 202, 202, "daily_limit", "daily_limit", "daily_limit"]  # one inbox: one cap
    assert console_emails(capsys.readouterr().out) == []


async def test_the_email_goes_to_the_address_as_typed(app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    typed = f"As.Typed{id(app)}+news@GoogleMail.com"
    assert (await app.http.post(SEND, json={"email": typed})).status_code == 202
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [typed.lower()]


async def test_a_code_verifies_under_any_spelling_of_its_inbox(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"spell{id(app)}"
    assert (await app.http.post(SEND, json={"email": f"{user}+shop@gmail.com"})).status_code == 202
    await drain(app)
    [email] = console_emails(capsys.readouterr().out)
    res = await app.http.post(VERIFY, json={"email": f"{user}@googlemail.com", "code": email.code})
    assert res.status_code == 200


async def test_a_suppressed_mailbox_suppresses_its_variants(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"bounced{id(app)}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    put = await app.http.put(f"/api/v1/admin/suppressions/{user}@gmail.com", json={"reason": "manual"},
                             headers=headers)  # fmt: skip
    assert put.status_code == 201
    res = await app.http.post(SEND, json={"email": f"{user[:2]}.{user[2:]}+promo@googlemail.com"})
    assert res.status_code == 202  # the same answer as for anyone (no enumeration)
    await drain(app)
    assert console_emails(capsys.readouterr().out) == []  # but nothing leaves


async def test_a_row_from_before_the_mailbox_column_still_suppresses(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"legacy{id(app)}"
    async with app.db.begin() as conn:  # a row as a process before migration 0005 wrote it
        await conn.execute(text("INSERT INTO suppressions (email, reason, source) VALUES (:e, 'bounce', 'ses')"),
                           {"e": f"{user}@example.org"})  # fmt: skip
    assert (await app.http.post(SEND, json={"email": f"{user}@example.org"})).status_code == 202
    await drain(app)
    assert console_emails(capsys.readouterr().out) == []
