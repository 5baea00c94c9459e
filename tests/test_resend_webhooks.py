"""Resend webhooks with genuinely signed payloads (svix's own signer)."""

import base64
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from svix.webhooks import Webhook

from otp_service.settings import Settings
from tests.support import console_emails, drain, unique_email

URL = "/api/v1/auth/resend-events/"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def signed(payload: dict[str, Any] | str, *, secret: str = SECRET, msg_id: str | None = None,
           when: datetime | None = None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    body = payload if isinstance(payload, str) else json.dumps(payload)
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    when = when or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, when, body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }
    return body.encode(), headers


def event(kind: str, *to: str) -> dict[str, Any]:
    data: dict[str, Any] = {"email_id": f"re-{secrets.token_hex(4)}", "from": "noreply@example.com", "to": list(to),
                            "subject": "code", "created_at": "2026-11-22T10:00:00.000Z"}  # fmt: skip
    if kind == "email.bounced":
        data["bounce"] = {"message": "mailbox does not exist", "subType": "General", "type": "Permanent"}
    return {"type": kind, "created_at": datetime.now(UTC).isoformat(), "data": data}


@pytest.fixture
async def app(open_app: Callable[..., Any], make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    settings = make_settings(
        resend_webhook_secret=SECRET,
        conversion_min_sends=1_000_000,
        throttle_rates={
            "otp_send": "1000/minute",
            "otp_verify": "1000/minute",
            "otp_send_subnet": "1000/minute",
            "otp_verify_subnet": "1000/minute",
        },
    )
    async with open_app(settings) as client:
        yield client


async def counts(app: Any) -> tuple[int, int]:
    async with app.db.connect() as conn:
        events = await conn.scalar(text("SELECT count(*) FROM webhook_events"))
        rows = await conn.scalar(text("SELECT count(*) FROM suppressions"))
    return int(events or 0), int(rows or 0)


async def suppression(app: Any, email: str) -> dict[str, Any] | None:
    async with app.db.connect() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM suppressions WHERE email = :e"), {"e": email}))
            .mappings()
            .first()
        )
    return dict(row) if row else None


@pytest.mark.parametrize(("kind", "reason"), [("email.bounced", "bounce"), ("email.complained", "complaint"),
                                              ("email.suppressed", "bounce")])  # fmt: skip
async def test_suppressing_events_suppress_every_recipient(app: Any, kind: str, reason: str) -> None:
    a, b = unique_email(), unique_email()
    body, headers = signed(event(kind, a, f"Someone <{b.upper()}>"))
    res = await app.http.post(URL, content=body, headers=headers)
    assert (res.status_code, res.json()) == (200, {"status": "accepted"})
    for email in (a, b):
        row = await suppression(app, email)
        assert row is not None
        assert (row["reason"], row["source"]) == (reason, "resend")
        assert row["provider_event_id"] == headers["svix-id"]
    if kind == "email.bounced":
        assert row is not None
        details = row["details"] if isinstance(row["details"], dict) else json.loads(row["details"])
        assert details["bounce"]["type"] == "Permanent"


@pytest.mark.parametrize("kind", ["email.delivered", "email.sent", "email.opened", "email.from.the.future"])
async def test_other_types_are_accepted_and_change_nothing(app: Any, kind: str) -> None:
    email = unique_email()
    body, headers = signed(event(kind, email))
    res = await app.http.post(URL, content=body, headers=headers)
    assert res.status_code == 200
    assert await suppression(app, email) is None


async def test_repeated_svix_id_is_processed_once(app: Any) -> None:
    email = unique_email()
    body, headers = signed(event("email.bounced", email))
    assert (await app.http.post(URL, content=body, headers=headers)).json() == {"status": "accepted"}
    before = await counts(app)
    again = await app.http.post(URL, content=body, headers=headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert await counts(app) == before
    row = await suppression(app, email)
    assert row is not None
    assert row["bounce_count"] == 1


async def test_complaint_after_bounce_keeps_the_record_and_notes_it(app: Any) -> None:
    email = unique_email()
    for kind in ("email.bounced", "email.complained"):
        body, headers = signed(event(kind, email))
        assert (await app.http.post(URL, content=body, headers=headers)).status_code == 200
    row = await suppression(app, email)
    assert row is not None
    assert (row["reason"], row["bounce_count"], row["complaint_count"]) == ("bounce", 1, 1)


def _tampered() -> list[tuple[str, Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]]]:
    def body_changed(b: bytes, h: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return b.replace(b"email.bounced", b"email.complained"), h

    def wrong_secret(b: bytes, h: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        return signed(b.decode(), secret=other, msg_id=h["svix-id"])

    def stale(b: bytes, h: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return signed(b.decode(), msg_id=h["svix-id"], when=datetime.now(UTC) - timedelta(minutes=6))

    def future(b: bytes, h: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return signed(b.decode(), msg_id=h["svix-id"], when=datetime.now(UTC) + timedelta(minutes=6))

    def other_id(b: bytes, h: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return b, {**h, "svix-id": "msg_other"}

    def drop(name: str) -> Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
        return lambda b, h: (b, {k: v for k, v in h.items() if k != name})

    def sig(value: str) -> Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
        return lambda b, h: (b, {**h, "svix-signature": value})

    def ts(value: str) -> Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
        return lambda b, h: (b, {**h, "svix-timestamp": value})

    return [
        ("body changed", body_changed), ("wrong secret", wrong_secret), ("stale timestamp", stale),
        ("future timestamp", future), ("signature of another id", other_id), ("no svix-id", drop("svix-id")),
        ("no timestamp", drop("svix-timestamp")), ("no signature", drop("svix-signature")),
        ("garbage signature", sig("garbage")), ("empty v1", sig("v1,")), ("not base64", sig("v1,!!!!")),
        ("unknown scheme", sig("v9,abcd")), ("timestamp not a number", ts("yesterday")),
        ("timestamp huge", ts("99999999999999999999")),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "tamper"), _tampered(), ids=[n for n, _ in _tampered()])
async def test_tampered_requests_are_400_and_write_nothing(app: Any, name: str, tamper: Any) -> None:
    before = await counts(app)
    body, headers = tamper(*signed(event("email.bounced", unique_email())))
    res = await app.http.post(URL, content=body, headers=headers)
    assert res.status_code == 400, name
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["code"] == "webhook_rejected"
    assert await counts(app) == before


async def test_without_a_secret_everything_is_rejected(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_app(make_settings()) as app:
        body, headers = signed(event("email.bounced", unique_email()))
        res = await app.http.post(URL, content=body, headers=headers)
        assert (res.status_code, res.json()["reason"]) == (400, "not_configured")


async def test_bounced_address_then_gets_the_normal_202_and_no_email(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bounced, other = unique_email(), unique_email()
    body, headers = signed(event("email.bounced", bounced))
    assert (await app.http.post(URL, content=body, headers=headers)).status_code == 200
    answers = [await app.http.post("/api/v1/auth/otp/send", json={"email": e}) for e in (bounced, other)]
    assert [a.status_code for a in answers] == [202, 202]
    # The same bytes but for each send's own random id, of the same length.
    masked = [a.content.replace(a.json()["send_id"].encode(), b"-") for a in answers]
    assert masked[0] == masked[1]
    await drain(app)
    assert [e.to for e in console_emails(capsys.readouterr().out)] == [other]


async def test_database_down_is_503_so_resend_retries(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        resend_webhook_secret=SECRET, database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none",
        worker_enabled=False,
    )  # fmt: skip
    async with open_app(settings) as app:
        body, headers = signed(event("email.bounced", unique_email()))
        res = await app.http.post(URL, content=body, headers=headers)
        assert res.status_code == 503
        assert res.json()["code"] == "unavailable"
        assert int(res.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("offset", "accepted"), [(-1, True), (1, False)])
@pytest.mark.parametrize("direction", [-1, 1])
def test_the_svix_window_is_the_one_the_trust_page_states(
    offset: int, accepted: bool, direction: int
) -> None:
    from otp_service.errors import WebhookRejected
    from otp_service.webhooks.resend import SVIX_TOLERANCE, ResendWebhook

    # 30 s inside or outside the stated window, in the past and in the future.
    when = datetime.now(UTC) + direction * (SVIX_TOLERANCE + timedelta(seconds=30 * offset))
    body, headers = signed(event("email.delivered", "a@example.org"), when=when)
    webhook = ResendWebhook(SECRET)
    if accepted:
        webhook.verify(body, headers)
    else:
        with pytest.raises(WebhookRejected):
            webhook.verify(body, headers)
