"""Issue 21 through the HTTP API, on Redis and PostgreSQL and on the embedded default: test
recipients (§3) and the discovery document (§3)."""

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text

from otp_service.settings import Settings, SettingsError, load_settings
from otp_service.trust.page import render_trust_page
from tests.conftest import METRICS_AUTH
from tests.support import console_emails, drain, unique_email
from tests.test_tokens import pem

SEND, VERIFY = "/api/v1/auth/otp/send", "/api/v1/auth/otp/verify"
ADMIN_KEY = "integrator-admin-key-0123456789-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
REVIEWER = "app-review@example.org"
KEY = ed25519.Ed25519PrivateKey.generate()
STORES = [{}, {"redis_url": None}]


@pytest.fixture(params=STORES, ids=["redis", "embedded"])
async def app(
    request: pytest.FixtureRequest, open_app: Callable[..., Any], make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> AsyncIterator[Any]:  # fmt: skip
    store = dict(request.param)
    if store:  # the embedded store, with a database of its own
        store["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}"
    settings = make_settings(
        test_recipients={REVIEWER: "123456", "*@ci.example.org": "654321"}, admin_api_keys=[ADMIN_KEY],
        jwt_private_key=pem(KEY), conversion_min_sends=1_000_000, trusted_proxies=["203.0.113.7/32"], **store,
    )  # fmt: skip
    async with open_app(settings) as client:
        yield client


async def usage(app: Any) -> dict[str, Any]:
    res = await app.http.get("/api/v1/admin/usage", headers=ADMIN)
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


async def test_a_test_recipient_is_never_emailed_and_its_fixed_code_verifies_once(
    app: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otp_service")
    before = await usage(app)
    real = unique_email()
    res = await app.http.post(SEND, json={"email": REVIEWER})
    assert res.status_code == 202
    same = await app.http.post(SEND, json={"email": real})
    # The same answer but for each send's own random id, of the same length.
    masked = [r.content.replace(r.json()["send_id"].encode(), b"-") for r in (res, same)]
    assert (masked[0], res.headers["content-type"]) == (masked[1], same.headers["content-type"])
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [real]  # the reviewer got nothing
    after = await usage(app)
    # Only the real send moved the global counter; no delivery record names the reviewer.
    assert after["channels"]["email"]["sent_24h"] == before["channels"]["email"]["sent_24h"] + 1
    assert after["test_recipients"] == 2
    async with app.db.connect() as conn:
        assert (
            await conn.scalar(text("SELECT count(*) FROM deliveries WHERE email = :e"), {"e": REVIEWER}) == 0
        )

    # A wrong code is counted as for any address: the same answer, attempts going down.
    wrong = await app.http.post(VERIFY, json={"email": REVIEWER, "code": "000000"})
    assert (wrong.status_code, wrong.json()["code"], wrong.json()["attempts_remaining"]) == (
        400, "invalid_code", 4,
    )  # fmt: skip
    ok = await app.http.post(VERIFY, json={"email": REVIEWER, "code": "123456"})
    assert ok.status_code == 200, ok.text
    assert (ok.json()["status"], ok.json()["test"]) == ("approved", True)
    claims = jwt.decode(ok.json()["token"], options={"verify_signature": False})
    assert (claims["sub"], claims["test"]) == (REVIEWER, True)
    again = await app.http.post(VERIFY, json={"email": REVIEWER, "code": "123456"})
    assert (again.status_code, again.json()["code"]) == (400, "code_expired")  # used, as any code
    real_ok = await app.http.post(VERIFY, json={"email": real, "code": "000000"})
    assert "test" not in real_ok.json()
    uses = [r for r in caplog.records if r.getMessage() == "otp.test_recipient"]
    assert [getattr(r, "action", None) for r in uses] == ["send", "verify"]
    assert all(REVIEWER not in r.getMessage() and getattr(r, "email", "") != REVIEWER for r in uses)


async def test_a_test_recipient_looks_like_any_address_to_a_guesser(app: Any) -> None:
    """Guessing a test recipient's code: the cooldown and the wrong-attempt count hold as for any
    address, so a code's lifetime allows at most OTP_MAX_ATTEMPTS guesses, from any clients."""
    email = "build-7@ci.example.org"
    assert (await app.http.post(SEND, json={"email": email})).status_code == 202
    again = await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": "198.51.100.1"})
    assert (again.status_code, again.json()["code"]) == (429, "cooldown")
    answers = []
    for n in range(7):  # each guess from another client (one /48 holds 65,536 /64 clients)
        res = await app.http.post(
            VERIFY,
            json={"email": email, "code": f"{n:06d}"},
            headers={"x-forwarded-for": f"2001:db8:0:{n}::1"},
        )
        answers.append(res.json()["code"])
    assert answers == ["invalid_code"] * 4 + ["max_attempts_reached"] + ["code_expired"] * 2
    fixed = await app.http.post(VERIFY, json={"email": email, "code": "654321"})
    assert (fixed.status_code, fixed.json()["code"]) == (400, "code_expired")  # burnt, as any code


async def test_a_whole_domain_and_the_daily_cap_does_not_move(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Twelve sends over the per-address cap of 10 would be daily_limit for a real address; a test
    recipient's counters do not move (its cooldown and the client rates still apply)."""
    settings = make_settings(
        test_recipients={"*@ci.example.org": "654321"}, rate_limit_ttl=0, trusted_proxies=["203.0.113.7/32"],
        conversion_min_sends=1_000_000,
    )  # fmt: skip
    email = "build-42@ci.example.org"
    async with open_app(settings) as app:
        for n in range(12):
            headers = {"x-forwarded-for": f"198.51.100.{n}"}
            res = await app.http.post(SEND, json={"email": email}, headers=headers)
            assert res.status_code == 202, res.text
        ok = await app.http.post(VERIFY, json={"email": email, "code": "654321"})
        assert ok.status_code == 200
        real = await app.http.post(VERIFY, json={"email": "build-42@other.example.org", "code": "654321"})
        assert real.json()["code"] == "code_expired"


async def test_the_client_rates_still_apply(app: Any) -> None:
    answers = [
        (await app.http.post(SEND, json={"email": f"build-{n}@ci.example.org"})).status_code for n in range(4)
    ]
    assert answers == [202, 202, 202, 429]  # otp_send: 3/minute per client


def test_test_recipients_are_checked_at_start() -> None:
    with pytest.raises(SettingsError, match="must be 6 digits"):
        load_settings(test_recipients={REVIEWER: "12345"})
    with pytest.raises(SettingsError, match=r"an address or \*@domain"):
        load_settings(test_recipients={"*.example.org": "123456"})
    with pytest.raises(SettingsError, match="must be 8 digits"):
        load_settings(code_length=8, test_recipients={REVIEWER: "123456"})
    # Every gmail.com user would sign in with one fixed code.
    for shared in ("*@gmail.com", "*@outlook.com"):
        with pytest.raises(SettingsError, match="shared mail provider"):
            load_settings(test_recipients={shared: "123456"})
    with pytest.raises(SettingsError, match="shared mail provider"):
        load_settings(
            test_recipients={"*@corp.example": "123456"}, shared_mail_domains_extra=["corp.example"]
        )


async def test_start_up_warns_that_test_recipients_are_on(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="otp_service")
    async with open_app(make_settings(test_recipients={REVIEWER: "123456", "*@ci.example.org": "654321"})):
        pass
    [warning] = [r for r in caplog.records if r.getMessage() == "otp.test_recipients_configured"]
    assert (warning.levelno, getattr(warning, "count", None)) == (logging.WARNING, 2)


def test_the_trust_page_counts_the_test_recipients() -> None:
    page = render_trust_page(
        load_settings(test_recipients={REVIEWER: "123456", "*@ci.example.org": "654321"})
    )
    assert "| Test recipients | 2 configured" in page
    assert "| Test recipients | none configured" in render_trust_page(load_settings())


# The discovery document


async def test_the_discovery_document_follows_the_settings(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        code_length=8, code_ttl=600, rate_limit_ttl=90, max_attempts=3, resend_strategy="reuse",
        default_locale="zh-CN", captcha_provider="turnstile", captcha_secret="s", captcha_mode="adaptive",
        captcha_site_key="0x4AAAA-site", jwt_private_key=pem(KEY), jwt_audience="shop",
        verify_link_template="https://app.example/verify#email={email}&code={code}",
    )  # fmt: skip
    async with open_app(settings) as app:
        res = await app.http.get("/.well-known/otp-configuration")
        assert res.status_code == 200
        assert res.headers["cache-control"] == "public, max-age=300"
        assert res.json() == {
            "code_length": 8, "code_alphabet": "digits", "code_ttl": 600, "resend_after": 90, "max_attempts": 3,
            "locales": ["en", "zh-CN", "bilingual"], "default_locale": "zh-CN", "resend_strategy": "reuse",
            "idempotency_window": 600,
            "captcha": {"provider": "turnstile", "site_key": "0x4AAAA-site", "mode": "adaptive"},
            "verification_token": {"issuer": "otp-service", "audience": "shop", "jwks_uri": "/.well-known/jwks.json"},
            "verify_link": True,
        }  # fmt: skip
        # The jwks_uri it names serves the key the tokens are signed with.
        assert (await app.http.get(res.json()["verification_token"]["jwks_uri"])).json()["keys"]
        schema = (await app.http.get("/openapi.json")).json()
        assert "/.well-known/otp-configuration" in schema["paths"]
        assert "OtpConfigurationOut" in schema["components"]["schemas"]


async def test_the_default_discovery_document(client: Any) -> None:
    body = (await client.http.get("/.well-known/otp-configuration")).json()
    assert (body["code_length"], body["code_ttl"], body["resend_after"], body["max_attempts"]) == (
        6,
        300,
        60,
        5,
    )
    assert (body["captcha"], body["verification_token"], body["verify_link"]) == (None, None, False)
    assert (body["resend_strategy"], body["default_locale"]) == ("rotate", "bilingual")
    # Public: no credentials asked, unlike /metrics.
    assert (await client.http.get("/metrics")).status_code == 401
    assert (await client.http.get("/metrics", headers=METRICS_AUTH)).status_code == 200


async def test_a_domains_fixed_code_cannot_be_guessed_through_its_many_addresses(app: Any) -> None:
    """Every address of `*@ci.example.org` shares one fixed code: fresh addresses must not give a
    guesser fresh attempts. Wrong guesses count together across them (found from outside: 200
    addresses x 5 guesses had opened the code in 15 s)."""
    answers = []
    for n in range(6):  # one wrong guess at each of six addresses, from six clients
        email = f"guess-{n}@ci.example.org"
        ip = {"x-forwarded-for": f"198.51.{100 + n}.9"}
        assert (await app.http.post(SEND, json={"email": email}, headers=ip)).status_code == 202
        res = await app.http.post(VERIFY, json={"email": email, "code": f"{n:06d}"}, headers=ip)
        answers.append(res.json()["code"])
    assert answers == ["invalid_code"] * 4 + ["max_attempts_reached", "code_expired"]
    fresh = "guess-new@ci.example.org"
    assert (await app.http.post(SEND, json={"email": fresh})).status_code == 202
    right = await app.http.post(VERIFY, json={"email": fresh, "code": "654321"})
    assert (right.status_code, right.json()["code"]) == (400, "code_expired")  # burnt for its lifetime
    # Another entry's code is untouched.
    assert (await app.http.post(SEND, json={"email": REVIEWER})).status_code == 202
    assert (await app.http.post(VERIFY, json={"email": REVIEWER, "code": "123456"})).status_code == 200
