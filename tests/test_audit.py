"""The audit log of admin writes, through the admin API on PostgreSQL: what each write appends,
that a PUT keeps a provider's suppression fields and decides 201/200 atomically, and that the
log never holds a key."""

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from otp_service.settings import Settings
from tests.support import unique_email
from tests.test_resend_webhooks import SECRET, event, signed

KEY = "audit-key-0123456789-0123456789-0123"
OTHER = "other-key-abcdefgh-abcdefgh-abcdefgh"
AUTH = {"authorization": f"Bearer {KEY}"}
BASE = "/api/v1/admin"
FINGERPRINT = hashlib.sha256(KEY.encode()).hexdigest()[:16]


@pytest.fixture
async def app(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    settings = make_settings(admin_api_keys=[OTHER, KEY], worker_enabled=False, resend_webhook_secret=SECRET)
    async with open_app(settings) as client:
        yield client


async def entries_for(app: Any, target: str) -> list[dict[str, Any]]:
    """The audit entries about `target` (the database is shared with other tests), newest first,
    walking every page."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await app.http.get(f"{BASE}/audit", params=params, headers=AUTH)).json()
        found += [e for e in page["items"] if e["target"] == target]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_each_admin_write_is_audited_with_the_key_fingerprint_never_the_key(app: Any) -> None:
    email = unique_email()
    assert (await app.http.put(f"{BASE}/suppressions/{email}", json={"note": "user asked"},
                               headers=AUTH)).status_code == 201  # fmt: skip
    assert (await app.http.put(f"{BASE}/suppressions/{email}", json={"note": "again"},
                               headers=AUTH)).status_code == 200  # fmt: skip
    assert (await app.http.delete(f"{BASE}/suppressions/{email}", headers=AUTH)).status_code == 204
    entries = await entries_for(app, email)
    assert [(e["action"], e["note"]) for e in entries] == [
        ("suppression.delete", None),
        ("suppression.put", "again"),
        ("suppression.put", "user asked"),
    ]
    assert {e["key_fingerprint"] for e in entries} == {FINGERPRINT}
    assert entries[0]["at"] >= entries[1]["at"] >= entries[2]["at"]
    raw = (await app.http.get(f"{BASE}/audit", params={"limit": 500}, headers=AUTH)).text
    assert KEY not in raw
    assert OTHER not in raw


async def test_resuming_a_provider_is_audited(app: Any) -> None:
    res = await app.http.post(
        f"{BASE}/reputation/console/resume", headers={"authorization": f"Bearer {OTHER}"}
    )
    assert res.status_code == 200
    [latest, *_] = await entries_for(app, "console")
    assert latest["action"] == "reputation.resume"
    assert latest["key_fingerprint"] == hashlib.sha256(OTHER.encode()).hexdigest()[:16]


async def test_refused_writes_are_not_audited(app: Any) -> None:
    email = unique_email()
    assert (await app.http.delete(f"{BASE}/suppressions/{email}", headers=AUTH)).status_code == 404
    res = await app.http.put(f"{BASE}/suppressions/{email}", json={"reason": "bounce"}, headers=AUTH)
    assert res.status_code == 422
    res = await app.http.put(
        f"{BASE}/suppressions/{email}", json={}, headers={"authorization": "Bearer nope"}
    )
    assert res.status_code == 401
    assert (await app.http.post(f"{BASE}/reputation/nope/resume", headers=AUTH)).status_code == 404
    assert await entries_for(app, email) == []
    assert await entries_for(app, "nope") == []


async def test_concurrent_puts_on_a_new_address_give_one_201_and_every_put_is_audited(app: Any) -> None:
    email = unique_email()
    answers = await asyncio.gather(*(
        app.http.put(f"{BASE}/suppressions/{email}", json={"note": f"n{i}"}, headers=AUTH) for i in range(20)
    ))  # fmt: skip
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 19 + [201]
    assert len(await entries_for(app, email)) == 20


async def test_a_put_on_a_provider_suppression_keeps_its_provider_fields(app: Any) -> None:
    email = unique_email()
    bounced = event("email.bounced", email)
    body, headers = signed(bounced)
    assert (
        await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
    ).status_code == 200
    before = (await app.http.get(f"{BASE}/suppressions/{email}", headers=AUTH)).json()
    assert before["provider_event_id"] == headers["svix-id"]
    assert before["provider_message_id"] == bounced["data"]["email_id"]

    res = await app.http.put(
        f"{BASE}/suppressions/{email}", json={"note": "confirmed by support"}, headers=AUTH
    )
    assert res.status_code == 200
    after = res.json()
    assert after["note"] == "confirmed by support"
    for field in (
        "reason",
        "source",
        "provider_event_id",
        "provider_message_id",
        "bounce_count",
        "created_at",
    ):
        assert after[field] == before[field], field
    async with app.db.connect() as conn:
        details = await conn.scalar(text("SELECT details FROM suppressions WHERE email = :e"), {"e": email})
    assert details["event_type"] == "email.bounced"


async def test_audit_pages_newest_first_with_a_cursor(app: Any) -> None:
    emails = [unique_email() for _ in range(3)]
    for email in emails:
        assert (await app.http.put(f"{BASE}/suppressions/{email}", json={}, headers=AUTH)).status_code == 201
    first = (await app.http.get(f"{BASE}/audit", params={"limit": 2}, headers=AUTH)).json()
    assert [e["target"] for e in first["items"]] == [emails[2], emails[1]]
    second = (await app.http.get(f"{BASE}/audit", params={"limit": 2, "cursor": first["next_cursor"]},
                                 headers=AUTH)).json()  # fmt: skip
    assert second["items"][0]["target"] == emails[0]
    for bad in (
        "garbage!",
        base64.urlsafe_b64encode(b"a:x").decode(),
        base64.urlsafe_b64encode(b"d:5").decode(),
    ):
        res = await app.http.get(f"{BASE}/audit", params={"cursor": bad}, headers=AUTH)
        assert (res.status_code, res.json()["code"]) == (422, "invalid_request")
    suppressions_cursor = (
        await app.http.get(f"{BASE}/suppressions", params={"limit": 1}, headers=AUTH)
    ).json()
    res = await app.http.get(
        f"{BASE}/audit", params={"cursor": suppressions_cursor["next_cursor"]}, headers=AUTH
    )
    assert res.status_code == 422  # one list's cursor is not another's
    assert (await app.http.get(f"{BASE}/audit")).status_code == 401
