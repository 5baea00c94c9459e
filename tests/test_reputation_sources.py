"""The reputation guard blames the source (CONTRACT §6), end to end: codes sent through Resend
(a fake at the HTTP boundary) from two subnets, Svix-signed bounce events for one subnet's
emails, the guard's check. The attacker's subnet is blocked for 24 h and its bounces stop
counting, so the provider is not paused and everyone else keeps getting codes."""

import itertools
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import text

from otp_service.settings import Settings
from tests.support import drain, unique_email
from tests.test_delivery import moto_url, ses_client  # noqa: F401 - fixtures
from tests.test_resend_webhooks import SECRET, signed
from tests.test_sns_webhooks import CERT_PEM, CERT_URL, TOPIC, notification, sign

SEND = "/api/v1/auth/otp/send"
ATTACKER, USER = "198.51.100.7", "203.0.113.50"
PROXY = "203.0.113.7"  # the test client's address: the trusted proxy


@pytest.mark.parametrize("store", [{}, {"redis_url": None}], ids=["redis", "embedded"])
async def test_bounces_from_one_source_block_it_and_do_not_pause_the_provider(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
    tmp_path: Path, store: dict[str, Any],
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="otp_service")
    settings = make_settings(
        # A database of this test's own (SQLite, migrated at start-up): the shared test database
        # holds other tests' Resend deliveries and bounces, which the guard would count.
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}",
        email_provider="resend", resend_api_key="re_test", resend_api_url="https://api.resend.test",
        resend_webhook_secret=SECRET, trusted_proxies=[f"{PROXY}/32"], conversion_min_sends=1_000_000,
        throttle_rates={"otp_send": "100/minute", "otp_send_subnet": "100/minute"},
        reputation_min_volume=5, reputation_min_bounces=2, reputation_source_limit=3, **store,
    )  # fmt: skip
    ids = (f"re-{n}" for n in itertools.count())
    sent: dict[str, str] = {}  # message id -> recipient

    def resend(request: httpx.Request) -> httpx.Response:
        message_id = next(ids)
        sent[message_id] = json.loads(request.content)["to"][0]
        return httpx.Response(200, json={"id": message_id})

    with respx.mock(using="httpx") as mock:
        mock.route(host="otp.test").pass_through()
        mock.post("https://api.resend.test/emails").mock(side_effect=resend)
        async with open_app(settings) as app:
            made_up = [unique_email() for _ in range(4)]  # an attacker's sends to made-up mailboxes
            for email in made_up:
                res = await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ATTACKER})
                assert res.status_code == 202
            for _ in range(4):
                res = await app.http.post(
                    SEND, json={"email": unique_email()}, headers={"x-forwarded-for": USER}
                )
                assert res.status_code == 202
            await drain(app)
            for message_id, to in sent.items():  # each made-up address bounces
                if to in made_up:
                    payload = {"type": "email.bounced", "created_at": datetime.now(UTC).isoformat(),
                               "data": {"email_id": message_id, "to": [to], "from": "noreply@example.com",
                                        "subject": "code", "created_at": datetime.now(UTC).isoformat(),
                                        "bounce": {"type": "Permanent", "subType": "General", "message": "no such user"}}}  # fmt: skip
                    body, headers = signed(payload)
                    assert (
                        await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
                    ).status_code == 200
            guard = app.web.reputation
            guard.providers = ["resend"]
            [health] = await guard.check()
            # Without the source's block: 4 bounces from 4 mailboxes in 8 sends, 50%, would pause.
            assert not health.paused, health
            assert health.bounces == 0
            blocked = await app.http.post(
                SEND, json={"email": unique_email()}, headers={"x-forwarded-for": ATTACKER}
            )
            assert (blocked.status_code, blocked.json()["code"]) == (429, "rate_limited")
            assert int(blocked.headers["retry-after"]) > 86_000
            ok = await app.http.post(SEND, json={"email": unique_email()}, headers={"x-forwarded-for": USER})
            assert ok.status_code == 202
            await guard.check()  # blocked once, logged once
    assert [r.getMessage() for r in caplog.records].count("abuse.source_blocked") == 1


@pytest.mark.parametrize("evidence", [{}, {"reputation_min_bounces": 1, "reputation_min_complaints": 1}],
                         ids=["default-evidence", "evidence-of-one"])  # fmt: skip
async def test_one_complaint_and_nine_bounces_over_sns_do_not_pause_ses(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path,
    moto_url: str, ses_client: Any, evidence: dict[str, int],  # noqa: F811
) -> None:  # fmt: skip
    """Issue 19's attack through SES: an attacker's subnet asks for a code at its own mailbox and
    at nine made-up ones, then reports the one as spam; SES tells us over SNS (genuinely signed).
    With the default evidence minimums those ten events are not evidence enough; with minimums of
    one, the source's block alone keeps them from counting. Either way SES is not paused, the
    attacker's subnet is refused and everyone else still gets codes."""
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'otp.db'}",  # this test's deliveries only
        email_provider="ses", ses_endpoint_url=moto_url, sns_topic_arns=[TOPIC],
        trusted_proxies=[f"{PROXY}/32"], conversion_min_sends=1_000_000,
        throttle_rates={"otp_send": "100/minute", "otp_send_subnet": "100/minute"},
        reputation_min_volume=10, reputation_source_limit=3, **evidence,
    )  # fmt: skip
    with respx.mock(assert_all_called=False, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()
        mock.get(CERT_URL).mock(return_value=httpx.Response(200, content=CERT_PEM))
        async with open_app(settings) as app:
            own, made_up = unique_email(), [unique_email() for _ in range(9)]
            for email in [own, *made_up]:
                res = await app.http.post(SEND, json={"email": email}, headers={"x-forwarded-for": ATTACKER})
                assert res.status_code == 202
            for _ in range(5):
                res = await app.http.post(
                    SEND, json={"email": unique_email()}, headers={"x-forwarded-for": USER}
                )
                assert res.status_code == 202
            await drain(app)
            async with app.db.connect() as conn:
                rows = await conn.execute(text("SELECT email, provider_message_id FROM deliveries"))
                message_ids = {email: message_id for email, message_id in rows}
            assert len(message_ids) == 15
            assert all(message_ids.values())
            events = [sns_event("Bounce", message_ids[email], email, bounceType="Permanent",
                                bounceSubType="General", bouncedRecipients=[{"emailAddress": email}])
                      for email in made_up]  # fmt: skip
            events.append(sns_event("Complaint", message_ids[own], own, complaintFeedbackType="abuse",
                                    complainedRecipients=[{"emailAddress": own}]))  # fmt: skip
            for event in events:
                res = await app.http.post(
                    "/api/v1/auth/ses-events/", content=json.dumps(sign(notification(event))).encode(),
                    headers={"content-type": "text/plain", "x-amz-sns-message-type": "Notification"},
                )  # fmt: skip
                assert res.status_code == 200, res.text
            guard = app.web.reputation
            guard.providers = ["ses"]
            [health] = await guard.check()
            assert not health.paused, health
            assert (health.bounces, health.complaints) == (0, 0)  # the blocked source's events
            assert (await app.http.get("/readyz")).status_code == 200
            blocked = await app.http.post(
                SEND, json={"email": unique_email()}, headers={"x-forwarded-for": ATTACKER}
            )
            assert (blocked.status_code, blocked.json()["code"]) == (429, "rate_limited")
            ok = await app.http.post(SEND, json={"email": unique_email()}, headers={"x-forwarded-for": USER})
            assert ok.status_code == 202


def sns_event(event_type: str, message_id: str, email: str, **body: Any) -> dict[str, Any]:
    """An SES event as SES publishes it to SNS (the event-publishing form, `eventType`)."""
    key = event_type[0].lower() + event_type[1:]
    return {"eventType": event_type, "mail": {"messageId": message_id, "destination": [email]},
            key: {"timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  **body}}  # fmt: skip
