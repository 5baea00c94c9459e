"""The admin API with applications (CONTRACT §3, §8): `limits`, `usage` and `deliveries` take
`?app=`, answering for that application (an id OTP_APPS does not configure: 404 not_found), and
without it, or without OTP_APPS, answer as they always did. On Redis and PostgreSQL, and on the
embedded default."""

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from otp_service.settings import Settings
from tests.support import ProviderFake, drain, unique_email
from tests.test_apps import app_path
from tests.test_delivery_lookup import resend_event
from tests.test_resend_webhooks import SECRET

KEY = "apps-admin-key-0123456789-0123456789-01"
ADMIN = {"authorization": f"Bearer {KEY}"}
SEND, LIMITS = "/api/v1/auth/otp/send", "/api/v1/admin/limits"
USAGE, DELIVERIES = "/api/v1/admin/usage", "/api/v1/admin/deliveries"
WIDE = {"otp_send": "1000/minute", "otp_send_subnet": "1000/minute", "otp_verify": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip
SHOP = {"brand_name": "Shop Co", "email_from": "Shop <codes@shop.example>", "rate_limit_ttl": 120,
        "per_account_daily_limit": 4}  # fmt: skip
APPS = {"shop": SHOP, "merchant": {"brand_name": "Merchant Desk"}}
HOME = "203.0.113.7"
"""The address the tests' requests come from (conftest.open_app)."""


@pytest.fixture
def admin_settings(
    store: dict[str, Any], make_settings: Callable[..., Settings], provider: ProviderFake
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "apps": APPS, "admin_api_keys": [KEY], "email_provider": "resend", "resend_api_key": "re_test",
            "resend_api_url": provider.url, "conversion_min_sends": 1_000_000, "throttle_rates": WIDE,
            **store,
        }  # fmt: skip
        values.update(overrides)
        return make_settings(**values)

    return make


async def admin_get(client: Any, path: str, **params: str) -> dict[str, Any]:
    res = await client.http.get(path, params=params, headers=ADMIN)
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


def assert_not_found(res: Any) -> None:
    assert res.status_code == 404, res.text
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["code"] == "not_found"


# --- limits ------------------------------------------------------------------------------------


async def test_limits_answer_as_that_applications_send_would(
    open_app: Callable[..., Any], admin_settings: Callable[..., Settings]
) -> None:
    email = unique_email()
    async with open_app(admin_settings(worker_enabled=False)) as app:
        assert (await app.http.post(app_path("shop", SEND), json={"email": email})).status_code == 202
        shop = await admin_get(app, LIMITS, email=email, ip=HOME, app="shop")
        assert shop["app"] == "shop"
        assert shop["address"]["daily"] == {"count": 1, "limit": 4, "retry_after": 0}  # its own cap
        assert 119 <= shop["address"]["cooldown_remaining"] <= 120  # its own cooldown
        assert shop["address"]["code_expires_in"] > 0
        assert shop["would_refuse"] == "cooldown"
        assert shop["client"]["client_rate"]["count"] == 1
        refused = await app.http.post(app_path("shop", SEND), json={"email": email})
        assert (refused.status_code, refused.json()["code"]) == (429, "cooldown")
        assert abs(int(refused.headers["retry-after"]) - shop["retry_after"]) <= 1
        # The address's other applications have spent nothing, and their sends would pass.
        for elsewhere in ({}, {"app": ""}, {"app": "merchant"}):
            other = await admin_get(app, LIMITS, email=email, ip=HOME, **elsewhere)
            assert other["app"] == elsewhere.get("app", "")
            assert other["address"]["daily"] == {"count": 0, "limit": 10, "retry_after": 0}, elsewhere
            assert (other["address"]["cooldown_remaining"], other["address"]["code_expires_in"]) == (0, 0)
            assert other["would_refuse"] is None
            # What is shared reads the same: the client's rate and the global cap count every app.
            assert other["client"]["client_rate"]["count"] == 2  # the shop's two sends
            assert other["global_daily"]["count"] == shop["global_daily"]["count"] >= 1
        assert (await app.http.post(app_path("merchant", SEND), json={"email": email})).status_code == 202


async def test_limits_of_an_unknown_application_are_404(
    open_app: Callable[..., Any], admin_settings: Callable[..., Settings]
) -> None:
    async with open_app(admin_settings(worker_enabled=False)) as app:
        for params in (
            {"email": unique_email(), "app": "nope"},
            {"ip": HOME, "app": "shopx"},
            {"app": "nope"},
        ):
            assert_not_found(await app.http.get(LIMITS, params=params, headers=ADMIN))
        res = await app.http.get(LIMITS, params={"ip": HOME, "app": "Shop!"}, headers=ADMIN)
        assert (res.status_code, res.json()["code"]) == (422, "invalid_request")  # not an id at all


async def test_without_applications_limits_answer_as_before(
    open_app: Callable[..., Any], admin_settings: Callable[..., Settings]
) -> None:
    email = unique_email()
    async with open_app(admin_settings(apps={}, worker_enabled=False)) as app:
        assert (await app.http.post(SEND, json={"email": email})).status_code == 202
        body = await admin_get(app, LIMITS, email=email, ip=HOME)
        assert (body["app"], body["would_refuse"]) == ("", "cooldown")
        assert body["address"]["daily"] == {"count": 1, "limit": 10, "retry_after": 0}
        empty = await admin_get(app, LIMITS, email=email, ip=HOME, app="")
        assert {**empty, "retry_after": 0} == {**body, "retry_after": 0}
        assert_not_found(await app.http.get(LIMITS, params={"email": email, "app": "shop"}, headers=ADMIN))


# --- usage and deliveries: from the deliveries' `app` column -----------------------------------


@pytest.fixture
def ids() -> tuple[str, str]:
    """Two application ids of this test's own: the tests share one PostgreSQL database, whose
    deliveries other tests' applications also write."""
    tag = secrets.token_hex(4)
    return f"shop-{tag}", f"desk-{tag}"


def two_apps(ids: tuple[str, str]) -> dict[str, dict[str, Any]]:
    shop, desk = ids
    return {shop: {"brand_name": "Shop Co", "rate_limit_ttl": 0}, desk: {"brand_name": "Merchant Desk"}}


async def sent(app: Any, path: str, email: str) -> None:
    assert (await app.http.post(path, json={"email": email})).status_code == 202
    await drain(app)


async def test_usage_gives_an_applications_own_part_of_the_day(
    open_app: Callable[..., Any], admin_settings: Callable[..., Settings], provider: ProviderFake,
    ids: tuple[str, str],
) -> None:  # fmt: skip
    shop, desk = ids
    async with open_app(admin_settings(apps=two_apps(ids), resend_webhook_secret=SECRET)) as app:
        wide_before = (await admin_get(app, USAGE, app=""))["application"]
        shop_emails = [unique_email(), unique_email()]
        for email in shop_emails:
            await sent(app, app_path(shop, SEND), email)
        await sent(app, app_path(desk, SEND), unique_email())
        await sent(app, SEND, unique_email())
        bounced = provider.sent_to(shop_emails[0])[-1].message_id
        assert bounced is not None
        await resend_event(app, "email.bounced", shop_emails[0], bounced)

        whole = await admin_get(app, USAGE)
        assert whole["application"] is None  # not asked
        assert whole["channels"]["email"]["sent_24h"] == 4
        by_app = {a: await admin_get(app, USAGE, app=a) for a in (shop, desk, "")}
        for a, body in by_app.items():  # the shared parts are the whole service's, for each
            assert body["channels"] == whole["channels"], a
            assert body["application"]["app"] == a
        assert by_app[shop]["application"] == {
            "app": shop, "accepted_24h": 2, "sent_24h": 2, "bounces_24h": 1, "complaints_24h": 0,
            "bounce_rate": 0.5, "complaint_rate": 0.0,
        }  # fmt: skip
        assert by_app[desk]["application"] == {
            "app": desk, "accepted_24h": 1, "sent_24h": 1, "bounces_24h": 0, "complaints_24h": 0,
            "bounce_rate": 0.0, "complaint_rate": 0.0,
        }  # fmt: skip
        wide = by_app[""]["application"]  # the service-wide application's, beside other tests' rows
        assert wide["accepted_24h"] - wide_before["accepted_24h"] == 1
        assert wide["sent_24h"] - wide_before["sent_24h"] == 1
        assert_not_found(await app.http.get(USAGE, params={"app": "nope"}, headers=ADMIN))


async def test_deliveries_filter_by_application(
    open_app: Callable[..., Any], admin_settings: Callable[..., Settings], ids: tuple[str, str]
) -> None:
    shop, desk = ids
    email = unique_email()
    async with open_app(admin_settings(apps=two_apps(ids), rate_limit_ttl=0)) as app:
        for path in (app_path(shop, SEND), SEND, app_path(desk, SEND), app_path(shop, SEND)):
            await sent(app, path, email)
        every = (await admin_get(app, DELIVERIES, email=email))["items"]
        assert [d["app"] for d in every] == [shop, desk, "", shop]  # newest first, every application's
        mine = (await admin_get(app, DELIVERIES, email=email, app=shop))["items"]
        assert mine == [d for d in every if d["app"] == shop]
        assert (await admin_get(app, DELIVERIES, email=email, app=""))["items"] == [every[2]]
        # A page of one application continues within it.
        first = await admin_get(app, DELIVERIES, email=email, app=shop, limit="1")
        assert first["items"] == mine[:1]
        assert first["next_cursor"] is not None
        rest = await admin_get(app, DELIVERIES, email=email, app=shop, limit="1", cursor=first["next_cursor"])
        assert rest["items"] == mine[1:]
        assert_not_found(
            await app.http.get(DELIVERIES, params={"email": email, "app": "nope"}, headers=ADMIN)
        )


async def test_without_applications_usage_and_deliveries_answer_as_before(
    open_app: Callable[..., Any], admin_settings: Callable[..., Settings]
) -> None:
    email = unique_email()
    async with open_app(admin_settings(apps={})) as app:
        await sent(app, SEND, email)
        usage = await admin_get(app, USAGE)
        assert (usage["channels"]["email"]["sent_24h"], usage["application"]) == (1, None)
        items = (await admin_get(app, DELIVERIES, email=email))["items"]
        assert [(d["outcome"], d["app"]) for d in items] == [("sent", "")]
        assert (await admin_get(app, DELIVERIES, email=email, app=""))["items"] == items
        assert_not_found(await app.http.get(USAGE, params={"app": "shop"}, headers=ADMIN))
        assert_not_found(
            await app.http.get(DELIVERIES, params={"email": email, "app": "shop"}, headers=ADMIN)
        )
