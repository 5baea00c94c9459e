""" "Why didn't my user get the code?": GET /api/v1/admin/deliveries, end to end. Codes are sent
through the real providers (Resend at its HTTP boundary, SES against moto_server), the
providers' events come back as genuinely signed webhooks (svix; SNS with a test certificate),
and the lookup shows each delivery with the events matched to it by the provider's message id."""

import asyncio
import base64
import json
import secrets
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from otp_service.settings import Settings
from tests.support import drain, unique_email
from tests.test_delivery import moto_url, ses_client  # noqa: F401 - fixtures
from tests.test_resend_webhooks import SECRET, signed
from tests.test_sns_webhooks import CERT_PEM, CERT_URL, TOPIC, notification, sign

KEY = "lookup-key-0123456789-0123456789-012"
AUTH = {"authorization": f"Bearer {KEY}"}
DELIVERIES = "/api/v1/admin/deliveries"
SEND = "/api/v1/auth/otp/send"
WIDE = {"otp_send": "1000/minute", "otp_verify": "1000/minute", "otp_send_subnet": "1000/minute",
        "otp_verify_subnet": "1000/minute"}  # fmt: skip


def common(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(
        admin_api_keys=[KEY], resend_webhook_secret=SECRET, sns_topic_arns=[TOPIC], throttle_rates=WIDE,
        conversion_min_sends=1_000_000, rate_limit_ttl=0, **overrides,
    )  # fmt: skip


@pytest.fixture
def resend() -> Any:
    """Resend's API at the HTTP boundary: each accepted email gets a fresh id; the CA of the SNS
    certificate is served too."""
    with respx.mock(assert_all_called=False, using="httpx") as mock:
        mock.route(host="otp.test").pass_through()  # the test's own client to the app
        mock.post("https://api.resend.test/emails").mock(
            side_effect=lambda request: httpx.Response(200, json={"id": f"re-{secrets.token_hex(6)}"})
        )
        mock.get(CERT_URL).mock(return_value=httpx.Response(200, content=CERT_PEM))
        yield mock


async def deliveries(app: Any, email: str, **params: Any) -> dict[str, Any]:
    res = await app.http.get(DELIVERIES, params={"email": email, **params}, headers=AUTH)
    assert res.status_code == 200, res.text
    page: dict[str, Any] = res.json()
    return page


async def send(app: Any, email: str) -> None:
    assert (await app.http.post(SEND, json={"email": email})).status_code == 202
    await drain(app)


async def resend_event(app: Any, kind: str, email: str, message_id: str) -> str:
    payload = {"type": kind, "created_at": "2026-11-23T10:00:00.000Z",
               "data": {"email_id": message_id, "from": "noreply@example.com", "to": [email], "subject": "code",
                        "created_at": "2026-11-23T10:00:00.000Z"}}  # fmt: skip
    if kind == "email.bounced":
        payload["data"]["bounce"] = {"message": "mailbox does not exist", "type": "Permanent"}  # type: ignore[index]
    body, headers = signed(payload)
    res = await app.http.post("/api/v1/auth/resend-events/", content=body, headers=headers)
    assert res.status_code == 200, res.text
    return headers["svix-id"]


async def test_resend_events_are_matched_to_their_delivery(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], resend: Any
) -> None:
    settings = common(make_settings, email_provider="resend", resend_api_key="re_test",
                      resend_api_url="https://api.resend.test")  # fmt: skip
    email, other = unique_email(), unique_email()
    async with open_app(settings) as app:
        await send(app, email)
        await send(app, other)
        [item] = (await deliveries(app, email))["items"]
        assert (item["outcome"], item["provider"], item["attempts"], item["events"]) == (
            "sent",
            "resend",
            1,
            [],
        )
        assert item["queued_at"] <= item["sent_at"] == item["recorded_at"]
        message_id = item["provider_message_id"]
        assert message_id.startswith("re-")

        for kind in ("email.sent", "email.delivery_delayed", "email.delivered"):
            await resend_event(app, kind, email, message_id)
        complaint_id = await resend_event(app, "email.complained", email, message_id)
        [other_item] = (await deliveries(app, other))["items"]
        await resend_event(app, "email.bounced", other, other_item["provider_message_id"])

        [item] = (await deliveries(app, email))["items"]
        kinds = [(e["kind"], e["type"], e["suppressed"]) for e in item["events"]]
        assert kinds == [
            ("sent", "email.sent", False), ("delayed", "email.delivery_delayed", False),
            ("delivered", "email.delivered", False), ("complained", "email.complained", True),
        ]  # fmt: skip
        assert {e["provider"] for e in item["events"]} == {"resend"}
        [other_item] = (await deliveries(app, other))["items"]
        assert [e["kind"] for e in other_item["events"]] == ["bounced"]

        # The suppression links the event that caused it.
        record = (await app.http.get(f"/api/v1/admin/suppressions/{email}", headers=AUTH)).json()
        assert (record["reason"], record["provider_event_id"], record["provider_message_id"]) == (
            "complaint", complaint_id, message_id,
        )  # fmt: skip
        assert complaint_id in [e["event_id"] for e in item["events"]]

        # Now suppressed: the next send is answered 202 as ever, and the lookup says why no email came.
        await send(app, email)
        newest = (await deliveries(app, email))["items"][0]
        assert (newest["outcome"], newest["provider"], newest["attempts"], newest["sent_at"]) == (
            "suppressed", None, 0, None,
        )  # fmt: skip


def ses_event(event_type: str, message_id: str, email: str, **body: Any) -> dict[str, Any]:
    key = event_type[0].lower() + event_type[1:]
    return {"eventType": event_type, "mail": {"messageId": message_id, "destination": [email]},
            key: {"timestamp": "2026-11-23T10:00:00.000Z", **body}}  # fmt: skip


async def test_ses_events_are_matched_to_their_delivery(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], moto_url: str,  # noqa: F811
    ses_client: Any, resend: Any,  # noqa: F811
) -> None:  # fmt: skip
    settings = common(make_settings, email_provider="ses", ses_endpoint_url=moto_url)
    email = unique_email()
    async with open_app(settings) as app:
        await send(app, email)
        [item] = (await deliveries(app, email))["items"]
        assert (item["outcome"], item["provider"], item["attempts"]) == ("sent", "ses", 1)
        message_id = item["provider_message_id"]
        assert message_id

        recipient = {
            "emailAddress": email,
            "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
        }
        events = [
            ses_event("Delivery", message_id, email, recipients=[email], smtpResponse="250 ok"),
            ses_event("DeliveryDelay", message_id, email, delayType="MailboxFull",
                      delayedRecipients=[{"emailAddress": email}]),
            ses_event("Bounce", message_id, email, bounceType="Transient", bounceSubType="MailboxFull",
                      bouncedRecipients=[{"emailAddress": email}]),
            ses_event("Bounce", message_id, email, bounceType="Permanent", bounceSubType="General",
                      bouncedRecipients=[recipient]),
            ses_event("Complaint", message_id, email, complainedRecipients=[{"emailAddress": email}],
                      complaintFeedbackType="abuse"),
        ]  # fmt: skip
        for i, ses in enumerate(events):
            ses[next(k for k in ses if k not in ("eventType", "mail"))]["timestamp"] = (
                f"2026-11-23T10:00:0{i}.000Z"
            )
            message = sign(notification(ses))
            res = await app.http.post("/api/v1/auth/ses-events/", content=json.dumps(message).encode(),
                                      headers={"content-type": "text/plain", "x-amz-sns-message-type": "Notification"})  # fmt: skip
            assert res.status_code == 200, res.text

        [item] = (await deliveries(app, email))["items"]
        assert [(e["kind"], e["type"], e["suppressed"]) for e in item["events"]] == [
            ("delivered", "delivery", False), ("delayed", "deliverydelay", False),
            ("bounced", "bounce", False), ("bounced", "bounce", True), ("complained", "complaint", True),
        ]  # fmt: skip
        assert item["events"][0]["occurred_at"].startswith("2026-11-23T10:00:00")
        assert {e["provider"] for e in item["events"]} == {"ses"}


async def test_newest_first_in_pages_and_bad_input_refused(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], resend: Any
) -> None:
    settings = common(make_settings, email_provider="resend", resend_api_key="re_test",
                      resend_api_url="https://api.resend.test")  # fmt: skip
    email = unique_email()
    async with open_app(settings) as app:
        for _ in range(3):
            await send(app, email)
        everything = (await deliveries(app, email.upper()))["items"]  # the address, normalised
        assert len(everything) == 3
        assert len({d["job_id"] for d in everything}) == 3
        assert [d["queued_at"] for d in everything] == sorted(
            (d["queued_at"] for d in everything), reverse=True
        )
        first = await deliveries(app, email, limit=2)
        second = await deliveries(app, email, limit=2, cursor=first["next_cursor"])
        assert [d["job_id"] for d in first["items"] + second["items"]] == [d["job_id"] for d in everything]
        assert second["next_cursor"] is None
        assert (await deliveries(app, unique_email()))["items"] == []

        audit_cursor = base64.urlsafe_b64encode(b"a:99").decode()
        for params in ({}, {"email": "not-an-address"}, {"email": email, "limit": 0},
                       {"email": email, "cursor": audit_cursor}, {"email": "a\x00b@example.org"}):  # fmt: skip
            res = await app.http.get(DELIVERIES, params=params, headers=AUTH)
            assert (res.status_code, res.json()["code"]) == (422, "invalid_request"), params
        assert (await app.http.get(DELIVERIES, params={"email": email})).status_code == 401


@pytest.mark.parametrize("path", [DELIVERIES, "/api/v1/admin/audit"])
async def test_database_down_is_503(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], path: str
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(admin_api_keys=[KEY], worker_enabled=False,
                             database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none")  # fmt: skip
    async with open_app(settings) as app:
        res = await asyncio.wait_for(
            app.http.get(path, params={"email": unique_email()}, headers=AUTH), timeout=10
        )
        assert (res.status_code, res.json()["code"]) == (503, "unavailable")
