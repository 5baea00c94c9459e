import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from otp_service.settings import Settings
from tests.support import unique_email

KEY = "admin-key-0123456789-0123456789-01"
AUTH = {"authorization": f"Bearer {KEY}"}
BASE = "/api/v1/admin"


@pytest.fixture
async def app(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    settings = make_settings(
        admin_api_keys=["other-key-abcdefgh-abcdefgh-abcdefgh", KEY], worker_enabled=False
    )
    async with open_app(settings) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer"}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {KEY}"},
     {"authorization": f"Bearer {KEY}x"}, {"authorization": f"Bearer {KEY[:-1]}"}, {"authorization": KEY}],
)  # fmt: skip
async def test_missing_or_wrong_key_is_401(app: Any, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/suppressions"), ("GET", "/usage"), ("DELETE", "/suppressions/a@b.org")):
        res = await app.http.request(method, BASE + path, headers=headers)
        assert res.status_code == 401
        assert res.json()["code"] == "unauthorized"
        assert res.headers["www-authenticate"] == "Bearer"


async def test_no_keys_configured_means_no_admin(open_app: Callable[..., Any], make_settings: Any) -> None:
    async with open_app(make_settings(worker_enabled=False)) as app:
        assert (await app.http.get(BASE + "/usage", headers={"authorization": "Bearer "})).status_code == 401


async def test_every_configured_key_works(app: Any) -> None:
    for key in ("other-key-abcdefgh-abcdefgh-abcdefgh", KEY):
        assert (
            await app.http.get(BASE + "/usage", headers={"authorization": f"Bearer {key}"})
        ).status_code == 200


async def test_put_get_delete_round_trip(app: Any) -> None:
    email = unique_email()
    res = await app.http.put(
        f"{BASE}/suppressions/{email.upper()}", json={"reason": "manual", "note": "asked"}, headers=AUTH
    )
    assert res.status_code == 201
    assert res.json()["email"] == email
    assert (res.json()["reason"], res.json()["source"], res.json()["note"]) == ("manual", "admin", "asked")
    again = await app.http.put(f"{BASE}/suppressions/{email}", json={"note": "still"}, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["note"] == "still"
    got = await app.http.get(f"{BASE}/suppressions/{email}", headers=AUTH)
    assert got.status_code == 200
    assert got.json()["created_at"]
    assert (await app.http.delete(f"{BASE}/suppressions/{email}", headers=AUTH)).status_code == 204
    missing = await app.http.get(f"{BASE}/suppressions/{email}", headers=AUTH)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (await app.http.delete(f"{BASE}/suppressions/{email}", headers=AUTH)).status_code == 404


async def test_bad_input_is_refused_and_changes_nothing(app: Any) -> None:
    res = await app.http.put(f"{BASE}/suppressions/not-an-address", json={"reason": "manual"}, headers=AUTH)
    assert (res.status_code, res.json()["code"]) == (422, "invalid_request")
    res = await app.http.put(f"{BASE}/suppressions/{unique_email()}", json={"reason": "bounce"}, headers=AUTH)
    assert res.status_code == 422
    res = await app.http.get(f"{BASE}/suppressions", params={"cursor": "garbage!"}, headers=AUTH)
    assert (res.status_code, res.json()["code"]) == (422, "invalid_request")
    res = await app.http.get(f"{BASE}/suppressions", params={"limit": 0}, headers=AUTH)
    assert res.status_code == 422
    for control in ("a\x00b", "a\x1fb", "\x7f"):  # PostgreSQL refuses a NUL: the caller's error, not a 503
        res = await app.http.get(f"{BASE}/suppressions", params={"email": control}, headers=AUTH)
        assert (res.status_code, res.json()["code"]) == (422, "invalid_request"), control
    email = unique_email()
    res = await app.http.put(f"{BASE}/suppressions/{email}", json={"note": "a\x00b"}, headers=AUTH)
    assert (res.status_code, res.json()["code"]) == (422, "invalid_request")
    assert (
        await app.http.get(f"{BASE}/suppressions/{email}", headers=AUTH)
    ).status_code == 404  # nothing written


async def test_pagination_is_newest_first_and_stable_under_inserts(app: Any) -> None:
    tag = unique_email().split("@")[0]
    emails = [f"{tag}-{i:02d}@example.org" for i in range(7)]
    for email in emails:
        await app.http.put(f"{BASE}/suppressions/{email}", json={}, headers=AUTH)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"email": tag, "limit": 3, **({"cursor": cursor} if cursor else {})}
        res = (await app.http.get(f"{BASE}/suppressions", params=params, headers=AUTH)).json()
        seen += [item["email"] for item in res["items"]]
        # Inserts while paging land before the cursor: never duplicated, never skipped.
        await app.http.put(f"{BASE}/suppressions/{tag}-new-{len(seen)}@example.org", json={}, headers=AUTH)
        cursor = res["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(emails))


async def test_exact_address_filter(app: Any) -> None:
    a, b = unique_email(), unique_email()
    for email in (a, b):
        await app.http.put(f"{BASE}/suppressions/{email}", json={}, headers=AUTH)
    res = (await app.http.get(f"{BASE}/suppressions", params={"email": b.upper()}, headers=AUTH)).json()
    assert [i["email"] for i in res["items"]] == [b]


async def test_usage_counts_accepted_sends_against_the_cap(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(admin_api_keys=[KEY], global_daily_limits={"email": 100}, send_rate=20,
                             conversion_min_sends=1_000_000, throttle_rates={"otp_send": "100/minute", "otp_verify": "100/minute", "otp_send_subnet": "100/minute", "otp_verify_subnet": "100/minute"})  # fmt: skip
    async with open_app(settings) as app:
        await asyncio.gather(
            *(app.http.post("/api/v1/auth/otp/send", json={"email": unique_email()}) for _ in range(7))
        )
        body = (await app.http.get(f"{BASE}/usage", headers=AUTH)).json()
    assert body["channels"]["email"] == {"sent_24h": 7, "limit_24h": 100, "remaining": 93}
    assert body["send_rate"]["limit_per_second"] == 20
    assert {"bounces_24h", "complaints_24h", "bounce_rate", "complaint_rate", "delivered_24h"} <= body.keys()
