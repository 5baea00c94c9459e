"""Mailboxes, for limits only (CONTRACT §6), through the HTTP API on Redis and on the embedded
store: every spelling of one inbox shares its cooldown and daily cap, and nothing else: a code,
its re-sends and a suppression belong to the exact address; the email goes to the address as
typed."""

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


async def test_a_code_signs_in_only_the_exact_address_it_was_sent_to(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Account takeover across spellings: wherever `+x` is a different inbox (company servers,
    help-desk routing, catch-alls), the holder of `alice+x@` must not sign in as `alice@`."""
    user = f"alice{id(app)}"
    assert (await app.http.post(SEND, json={"email": f"{user}+attacker@example.org"})).status_code == 202
    await drain(app)
    [email] = console_emails(capsys.readouterr().out)
    for other in (f"{user}@example.org", f"{user}+other@example.org"):
        res = await app.http.post(VERIFY, json={"email": other, "code": email.code})
        assert (res.status_code, res.json()["code"]) == (400, "code_expired"), other
    res = await app.http.post(VERIFY, json={"email": f"{user}+attacker@example.org", "code": email.code})
    assert (res.status_code, res.json()["email"]) == (200, f"{user}+attacker@example.org")


@pytest.mark.parametrize("strategy", ["rotate", "reuse"])
async def test_a_live_code_is_never_emailed_to_another_spelling(
    store: dict[str, Any], make_settings: Callable[..., Settings], open_app: Callable[..., Any],
    capsys: pytest.CaptureFixture[str], strategy: str,
) -> None:  # fmt: skip
    """A remembered user's live code (which a send from elsewhere re-sends rather than replaces),
    and under `reuse` anyone's, goes only to the address it was sent to: a send for another
    spelling from elsewhere gets a code of its own, and the user's code still works."""
    settings = make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE, rate_limit_ttl=0,
                             resend_strategy=strategy, trusted_proxies=["203.0.113.7/32"], **store)  # fmt: skip
    home, elsewhere = {"x-forwarded-for": "198.51.100.20"}, {"x-forwarded-for": "192.0.2.77"}
    user = f"dave{id(settings)}"
    victim, spelling = f"{user}@example.org", f"{user}+x@example.org"
    async with open_app(settings) as app:
        # The victim verifies once from home (a remembered source), then asks for a code from there.
        assert (await app.http.post(SEND, json={"email": victim}, headers=home)).status_code == 202
        await drain(app)
        [first] = console_emails(capsys.readouterr().out)
        ok = await app.http.post(VERIFY, json={"email": victim, "code": first.code}, headers=home)
        assert ok.status_code == 200
        assert (await app.http.post(SEND, json={"email": victim}, headers=home)).status_code == 202
        # The attacker asks for the other spelling from elsewhere.
        assert (await app.http.post(SEND, json={"email": spelling}, headers=elsewhere)).status_code == 202
        await drain(app)
        sent = console_emails(capsys.readouterr().out)
        codes = {e.to: e.code for e in sent}
        assert sorted(codes) == [spelling, victim]
        assert codes[spelling] != codes[victim]
        stolen = await app.http.post(
            VERIFY, json={"email": victim, "code": codes[spelling]}, headers=elsewhere
        )
        assert stolen.status_code == 400
        mine = await app.http.post(VERIFY, json={"email": victim, "code": codes[victim]}, headers=home)
        assert mine.status_code == 200


async def test_a_suppression_names_only_its_exact_address(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """One bounce for `victim+zz@` (a provider that refuses +tags) must not silence `victim@`; and
    support finds each entry under the address it names."""
    user = f"bounced{id(app)}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    variant = f"{user[:2]}.{user[2:]}+promo@googlemail.com"
    put = await app.http.put(
        f"/api/v1/admin/suppressions/{variant}", json={"reason": "manual"}, headers=headers
    )
    assert put.status_code == 201
    assert (await app.http.post(SEND, json={"email": f"{user}@gmail.com"})).status_code == 202
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [f"{user}@gmail.com"]
    found = await app.http.get(f"/api/v1/admin/suppressions/{variant}", headers=headers)
    assert found.status_code == 200
    missing = await app.http.get(f"/api/v1/admin/suppressions/{user}@gmail.com", headers=headers)
    assert missing.status_code == 404


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
