"""Applications (CONTRACT §8, issue 33), through the HTTP API on Redis and PostgreSQL and on the
embedded default: what belongs to an application stays its own, what is shared stays shared,
and each application's email, discovery document and token name it."""

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text
from svix.webhooks import Webhook, WebhookVerificationError

from otp_service.app import create_app
from otp_service.logs import JsonFormatter
from otp_service.settings import Settings, SettingsError, load_settings
from tests.conftest import METRICS_TOKEN
from tests.support import ProviderFake, drain, unique_email
from tests.test_events_out import EVENTS_SECRET, Receiver
from tests.test_resend_webhooks import SECRET as RESEND_SECRET
from tests.test_resend_webhooks import event as resend_event
from tests.test_resend_webhooks import signed
from tests.test_tokens import pem

SEND, VERIFY = "/api/v1/auth/otp/send", "/api/v1/auth/otp/verify"
WIDE = {"otp_send": "1000/minute", "otp_send_subnet": "1000/minute", "otp_verify": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip
SHOP = {"brand_name": "Shop Co", "email_from": "Shop <codes@shop.example>", "code_length": 8,
        "rate_limit_ttl": 120, "token_audience": "shop-backend", "support_email": "help@shop.example"}  # fmt: skip
MERCHANT = {"brand_name": "Merchant Desk", "email_from": "Desk <codes@merchant.example>", "default_locale": "en",
            "verify_link_template": "https://desk.merchant.example/verify#e={email}&c={code}"}  # fmt: skip
APPS = {"shop": SHOP, "merchant": MERCHANT, "admin": {"brand_name": "Admin Console"}}


def app_path(app: str, path: str) -> str:
    return f"/api/v1/apps/{app}{path.removeprefix('/api/v1')}"


@pytest.fixture
def apps_settings(
    store: dict[str, Any], make_settings: Callable[..., Settings], provider: ProviderFake
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "apps": APPS, "email_provider": "resend", "resend_api_key": "re_test",
            "resend_api_url": provider.url, "conversion_min_sends": 1_000_000, "throttle_rates": WIDE,
            **store,
        }  # fmt: skip
        values.update(overrides)
        return make_settings(**values)

    return make


async def code_sent(app: Any, provider: ProviderFake, path: str, email: str) -> str:
    res = await app.http.post(path, json={"email": email})
    assert res.status_code == 202, res.text
    await drain(app)
    code = provider.sent_to(email)[-1].code
    assert code is not None
    return code


async def test_a_code_sent_for_one_application_is_expired_at_another(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    email = unique_email()
    async with open_app(apps_settings()) as app:
        code = await code_sent(app, provider, app_path("merchant", SEND), email)
        for elsewhere in (VERIFY, app_path("admin", VERIFY)):  # both of the same code length
            res = await app.http.post(elsewhere, json={"email": email, "code": code})
            assert res.json()["code"] == "code_expired", (elsewhere, res.text)
        res = await app.http.post(app_path("merchant", VERIFY), json={"email": email, "code": code})
        assert res.json() == {"status": "approved", "email": email}


async def test_one_applications_users_cannot_spend_anothers_cooldown_or_daily_cap(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings]
) -> None:
    email, other = unique_email(), unique_email()
    capped = {**APPS, "merchant": {**MERCHANT, "rate_limit_ttl": 0, "per_account_daily_limit": 2}}
    async with open_app(apps_settings(apps=capped, worker_enabled=False)) as app:
        assert (await app.http.post(app_path("shop", SEND), json={"email": email})).status_code == 202
        res = await app.http.post(app_path("shop", SEND), json={"email": email})
        assert (res.json()["code"], res.headers["retry-after"]) == ("cooldown", "120")
        for path in (SEND, app_path("merchant", SEND)):  # the shop's cooldown is its own
            assert (await app.http.post(path, json={"email": email})).status_code == 202, path
        # The merchant app's users use up its daily cap for another address (no cooldown there).
        for _ in range(2):
            assert (await app.http.post(app_path("merchant", SEND), json={"email": other})).status_code == 202
        res = await app.http.post(app_path("merchant", SEND), json={"email": other})
        assert res.json()["code"] == "daily_limit"
        for path in (SEND, app_path("shop", SEND)):  # the address's other applications are untouched
            assert (await app.http.post(path, json={"email": other})).status_code == 202, path


async def test_applications_share_one_clients_rate_one_domains_budget_and_the_global_cap(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings]
) -> None:
    rates = {**WIDE, "otp_send": "3/minute"}
    async with open_app(apps_settings(throttle_rates=rates, worker_enabled=False)) as app:
        paths = [app_path("shop", SEND), app_path("merchant", SEND), SEND]
        for path in paths:
            assert (await app.http.post(path, json={"email": unique_email()})).status_code == 202
        res = await app.http.post(app_path("merchant", SEND), json={"email": unique_email()})
        assert res.json()["code"] == "rate_limited"

    domain = f"{unique_email().split('@')[0]}.example.net"  # a registrable domain of its own
    async with open_app(apps_settings(domain_daily_limit=2, worker_enabled=False)) as app:
        for path in (app_path("shop", SEND), app_path("merchant", SEND)):
            assert (await app.http.post(path, json={"email": unique_email(domain)})).status_code == 202
        res = await app.http.post(SEND, json={"email": unique_email(domain)})
        assert res.json()["code"] == "domain_limit"


async def test_applications_share_the_global_cap(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings]
) -> None:
    settings = apps_settings(global_daily_limits={"email": 2}, global_reserve=0, worker_enabled=False)
    async with open_app(settings) as app:
        for path in (app_path("shop", SEND), app_path("merchant", SEND)):
            assert (await app.http.post(path, json={"email": unique_email()})).status_code == 202
        res = await app.http.post(app_path("shop", SEND), json={"email": unique_email()})
        assert (res.status_code, res.json()["code"]) == (503, "global_limit")


async def test_each_applications_email_has_its_own_brand_and_sender(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    shop, merchant, plain = unique_email(), unique_email(), unique_email()
    async with open_app(apps_settings(brand_name="Parent Group")) as app:
        shop_code = await code_sent(app, provider, app_path("shop", SEND), shop)
        await code_sent(app, provider, app_path("merchant", SEND), merchant)
        await code_sent(app, provider, SEND, plain)
    [to_shop], [to_merchant], [to_plain] = (provider.sent_to(e) for e in (shop, merchant, plain))
    assert (to_shop.sender, to_merchant.sender) == (SHOP["email_from"], MERCHANT["email_from"])
    assert "Shop Co" in to_shop.text
    assert "help@shop.example" in to_shop.text
    assert "Merchant Desk" in to_merchant.text
    assert "您的验证码" not in to_merchant.text  # its own default language, English only
    assert "您的验证码" in to_plain.text  # the service's, bilingual
    assert "https://desk.merchant.example/verify#e=" in to_merchant.text  # its own link
    assert "desk.merchant.example" not in to_plain.text
    assert "Shop Co" not in to_merchant.text
    assert "Parent Group" in to_plain.text
    assert "Shop Co" not in to_plain.text
    assert len(shop_code) == 8  # the application's own code length
    assert "2 minutes" not in to_shop.text  # its lifetime is the service's (code_ttl not overridden)


async def test_a_token_names_its_applications_audience(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    email = unique_email()
    async with open_app(apps_settings(jwt_private_key=pem(key), jwt_audience="parent")) as app:
        code = await code_sent(app, provider, app_path("shop", SEND), email)
        res = await app.http.post(app_path("shop", VERIFY), json={"email": email, "code": code})
        token = res.json()["token"]
        document = (await app.http.get(app_path("shop", "/.well-known/otp-configuration"))).json()
    claims = jwt.decode(token, key.public_key(), algorithms=["EdDSA"], audience="shop-backend")
    assert claims["aud"] == "shop-backend"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.public_key(), algorithms=["EdDSA"], audience="parent")
    assert document["verification_token"]["audience"] == "shop-backend"
    assert (document["code_length"], document["resend_after"]) == (8, 120)


async def test_an_unknown_application_is_not_found_and_counts_against_the_clients_rate(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings]
) -> None:
    rates = {**WIDE, "otp_send": "2/minute", "otp_verify": "2/minute"}
    async with open_app(apps_settings(throttle_rates=rates, worker_enabled=False)) as app:
        for _ in range(2):
            res = await app.http.post(app_path("nope", SEND), json={"email": unique_email()})
            assert (res.status_code, res.json()["code"]) == (404, "not_found")
            assert res.headers["content-type"] == "application/problem+json"
        res = await app.http.post(app_path("shop", SEND), json={"email": unique_email()})
        assert res.json()["code"] == "rate_limited"  # the two 404s used the client's send rate
        for _ in range(2):
            res = await app.http.post(
                app_path("nope", VERIFY), json={"email": unique_email(), "code": "123456"}
            )
            assert res.status_code == 404
        res = await app.http.post(VERIFY, json={"email": unique_email(), "code": "123456"})
        assert res.json()["code"] == "rate_limited"
        res = await app.http.get(app_path("nope", "/.well-known/otp-configuration"))
        assert (res.status_code, res.json()["code"]) == (404, "not_found")


def test_openapi_documents_the_prefixed_paths_once_and_only_with_applications(store: dict[str, Any]) -> None:
    del store  # one run is enough; the parameter keeps the file's fixtures uniform
    with_apps = create_app(load_settings(apps=APPS)).openapi()["paths"]
    prefixed = [p for p in with_apps if p.startswith("/api/v1/apps/")]
    assert sorted(prefixed) == [
        "/api/v1/apps/{app}/.well-known/otp-configuration",
        "/api/v1/apps/{app}/auth/otp/send",
        "/api/v1/apps/{app}/auth/otp/sends/{send_id}",
        "/api/v1/apps/{app}/auth/otp/verify",
    ]
    params = with_apps["/api/v1/apps/{app}/auth/otp/send"]["post"]["parameters"]
    assert {"name": "app", "in": "path"}.items() <= params[0].items()
    without = create_app(load_settings()).openapi()["paths"]
    assert not [p for p in without if p.startswith("/api/v1/apps/")]


@pytest.mark.parametrize(
    ("apps", "message"),
    [
        ({"Shop": {}}, "application id 'Shop': must be 1-32 of a-z, 0-9 and '-'"),
        ({"x" * 33: {}}, "must be 1-32"),
        ({"shop": {"email_provider": "ses"}}, "application 'shop': unknown key(s) 'email_provider'"),
        ({"shop": {"code_length": 3}}, "application 'shop': code_length:"),
        ({"shop": {"test_recipients": {"r@shop.example": "12345"}}}, "application 'shop': test_recipients:"),
        ({"shop": {"test_recipients": {"*@gmail.com": "123456"}}}, "application 'shop': test_recipients: a *@domain"),
        ({"shop": {"verify_link_template": "https://x.example/v?e={email}&c={code}"}},
         "application 'shop': verify_link_template:"),
        ({"shop": {"events_webhook_url": "https://hooks.example/otp"}}, "application 'shop': OTP_EVENTS_WEBHOOK_SECRET"),
        ({"shop": {"default_locale": "fr"}}, "application 'shop': default_locale:"),
    ],
)  # fmt: skip
def test_a_bad_application_is_refused_at_start_up_naming_it_and_the_key(
    apps: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(apps=apps)
    assert "OTP_APPS" in str(refused.value)
    assert message in str(refused.value)


def test_an_application_inherits_what_it_does_not_set() -> None:
    settings = load_settings(apps=APPS, code_ttl=600, max_attempts=3)
    shop = settings.app_view("shop")
    assert shop is not None
    assert (shop.code_length, shop.code_ttl, shop.max_attempts, shop.jwt_audience) == (
        8,
        600,
        3,
        "shop-backend",
    )
    assert (shop.app, settings.app, settings.app_view("") is settings, settings.app_view("nope")) == (
        "shop", "", True, None,
    )  # fmt: skip


SHOP_EVENTS_SECRET = "whsec_" + "c2hvcC1ldmVudHMtc2VjcmV0LWZvci10ZXN0cy0hIQ=="


def events_of(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """The receiver's events as its integrator reads them: each verified with its own secret."""
    out = []
    for body, headers in receiver.requests:
        Webhook(secret).verify(body, headers)
        out.append(json.loads(body))
    return out


async def test_each_applications_events_go_to_its_own_receiver_signed_with_its_own_secret(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    service, shop = Receiver(), Receiver()
    await service.start()
    await shop.start()
    apps = {
        **APPS,
        "shop": {**SHOP, "events_webhook_url": shop.url, "events_webhook_secret": SHOP_EVENTS_SECRET},
    }
    settings = apps_settings(
        apps=apps, events_webhook_url=service.url, events_webhook_secret=EVENTS_SECRET,
        resend_webhook_secret=RESEND_SECRET,
    )  # fmt: skip
    emails = {"shop": unique_email(), "merchant": unique_email(), "": unique_email()}
    try:
        async with open_app(settings) as app:
            for name, email in emails.items():
                send, verify = (app_path(name, SEND), app_path(name, VERIFY)) if name else (SEND, VERIFY)
                code = await code_sent(app, provider, send, email)
                res = await app.http.post(verify, json={"email": email, "code": code})
                assert res.status_code == 200, res.text
            # The provider's delivered event, matched to the shop's send through its message id.
            delivered = resend_event("email.delivered", emails["shop"])
            delivered["data"]["email_id"] = provider.sent_to(emails["shop"])[0].message_id
            body, headers = signed(delivered)
            res = await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
            assert res.status_code < 300, res.text
            async with asyncio.timeout(20):
                while len(shop.requests) < 3 or len(service.requests) < 4:
                    await asyncio.sleep(0.05)
    finally:
        await service.stop()
        await shop.stop()
    to_shop = events_of(shop, SHOP_EVENTS_SECRET)
    assert sorted((e["type"], e["data"]["app"], e["data"]["email"]) for e in to_shop) == [
        ("otp.delivered", "shop", emails["shop"]), ("otp.sent", "shop", emails["shop"]),
        ("otp.verified", "shop", emails["shop"]),
    ]  # fmt: skip
    to_service = events_of(service, EVENTS_SECRET)
    assert sorted((e["type"], e["data"]["app"] or "", e["data"]["email"]) for e in to_service) == sorted(
        [(kind, name, emails[name]) for kind in ("otp.sent", "otp.verified") for name in ("merchant", "")]
    )
    with pytest.raises(
        WebhookVerificationError
    ):  # the shop's events are not signed with the service's secret
        Webhook(EVENTS_SECRET).verify(*shop.requests[0])


async def test_without_applications_events_carry_no_app(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    receiver = Receiver()
    await receiver.start()
    settings = make_settings(
        email_provider="resend", resend_api_key="re_test", resend_api_url=provider.url,
        events_webhook_url=receiver.url, events_webhook_secret=EVENTS_SECRET, conversion_min_sends=1_000_000,
    )  # fmt: skip
    try:
        async with open_app(settings) as app:
            await code_sent(app, provider, SEND, unique_email())
            [event] = await receiver.wait_for(1)
    finally:
        await receiver.stop()
    assert "app" not in event["data"]


async def test_metrics_name_the_application_and_only_configured_ones(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings]
) -> None:
    email = unique_email()
    async with open_app(apps_settings(worker_enabled=False)) as app:
        await app.http.post(app_path("shop", SEND), json={"email": email})
        await app.http.post(app_path("shop", SEND), json={"email": email})  # cooldown
        for _ in range(3):
            await app.http.post(app_path("x-unknown-1", SEND), json={"email": unique_email()})
        text = (await app.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).text
    assert re.search(r'^otp_requests_total\{app="shop",endpoint="send"\} [1-9]', text, re.M)
    assert re.search(r'^otp_rejections_total\{app="shop",code="cooldown"\} [1-9]', text, re.M)
    assert re.search(r'^otp_rejections_total\{app="",code="not_found"\} [1-9]', text, re.M)
    assert "x-unknown-1" not in text  # a path's id is a label only when it is configured


async def test_log_lines_name_the_application(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.handler.setFormatter(JsonFormatter())
    shop, plain = unique_email(), unique_email()
    async with open_app(apps_settings()) as app:
        for email, send, verify in (
            (shop, app_path("shop", SEND), app_path("shop", VERIFY)),
            (plain, SEND, VERIFY),
        ):
            with caplog.at_level(logging.INFO, logger="otp_service"):
                code = await code_sent(app, provider, send, email)
                await app.http.post(verify, json={"email": email, "code": code})
    lines = [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]
    approved = [line for line in lines if line["event"] == "otp.verify_approved"]
    assert [line.get("app") for line in approved] == ["shop", None]
    sent = [line for line in lines if line["event"] == "delivery.sent"]
    assert [line.get("app") for line in sent] == ["shop", None]  # the worker's lines too


async def test_guesses_at_a_fixed_code_two_applications_share_count_once(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings]
) -> None:
    """An attacker cannot multiply the guesses at a test recipient's fixed code by the number of
    applications that inherit it: OTP_MAX_ATTEMPTS per lifetime in all."""
    reviewer = "review@fixed-code.example"
    settings = apps_settings(
        apps={"merchant": MERCHANT},
        test_recipients={reviewer: "135790"},
        max_attempts=3,
        worker_enabled=False,
    )
    async with open_app(settings) as app:
        paths = [(SEND, VERIFY), (app_path("merchant", SEND), app_path("merchant", VERIFY))]
        for send, _ in paths:
            assert (await app.http.post(send, json={"email": reviewer})).status_code == 202
        answers = []
        for guess in ("000001", "000002", "000003", "000004"):
            for _, verify in paths:
                res = await app.http.post(verify, json={"email": reviewer, "code": guess})
                answers.append(res.json()["code"])
        assert answers.count("invalid_code") == 2  # then the third wrong guess, anywhere, burns it
        assert answers[2] == "max_attempts_reached"
        for _, verify in paths:  # burnt for both until the next send
            res = await app.http.post(verify, json={"email": reviewer, "code": "135790"})
            assert res.json()["code"] == "code_expired"


async def test_a_token_names_its_application_even_when_the_audience_is_shared(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    email = unique_email()
    async with open_app(apps_settings(jwt_private_key=pem(key))) as app:
        code = await code_sent(app, provider, app_path("merchant", SEND), email)
        res = await app.http.post(app_path("merchant", VERIFY), json={"email": email, "code": code})
        token = res.json()["token"]
        plain = unique_email()
        code = await code_sent(app, provider, SEND, plain)
        plain_token = (await app.http.post(VERIFY, json={"email": plain, "code": code})).json()["token"]
    claims = jwt.decode(token, key.public_key(), algorithms=["EdDSA"], audience="otp-service-clients")
    assert claims["app"] == "merchant"  # merchant sets no token_audience: the claim tells it apart
    plain_claims = jwt.decode(
        plain_token, key.public_key(), algorithms=["EdDSA"], audience="otp-service-clients"
    )
    assert "app" not in plain_claims


async def test_a_verify_marks_its_own_applications_email_verified(
    open_app: Callable[..., Any], apps_settings: Callable[..., Settings], provider: ProviderFake
) -> None:
    """The sent-to-verified time (admin stats, the histogram) is measured from the application's
    own email, not from another application's later one to the same address."""
    email = unique_email()
    async with open_app(apps_settings()) as app:
        code = await code_sent(app, provider, SEND, email)
        await code_sent(app, provider, app_path("merchant", SEND), email)  # later, another application
        assert (await app.http.post(VERIFY, json={"email": email, "code": code})).status_code == 200
        async with asyncio.timeout(10):
            while True:
                async with app.db.connect() as db:
                    rows = (
                        await db.execute(
                            text(
                                "SELECT app, verified_at IS NOT NULL FROM deliveries WHERE email = :e ORDER BY id"
                            ),
                            {"e": email},
                        )
                    ).all()
                if any(verified for _, verified in rows):
                    break
                await asyncio.sleep(0.05)
    assert [tuple(r) for r in rows] == [("", True), ("merchant", False)]
