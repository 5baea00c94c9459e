"""Resend webhooks, signed by Svix (https://resend.com/docs/dashboard/webhooks/verify-webhooks-requests).

svix 2.x `verify()` returns nothing and raises a plain ValueError (not WebhookVerificationError)
on a malformed `svix-signature` header: every failure of verification is a 400 here.
"""

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from svix.webhooks import Webhook

from otp_service.errors import WebhookRejected
from otp_service.webhooks.events import ProviderEvent, Recipient, SuppressReason, clean_address, parse_time

SVIX_TOLERANCE = timedelta(minutes=5)
"""How far svix-timestamp may be from now: the svix library's own window (it delegates to
standardwebhooks, which fixes it at five minutes), stated here for the trust page;
tests/test_resend_webhooks.py holds the library to it."""

SUPPRESSING: dict[str, SuppressReason] = {
    "email.bounced": "bounce",
    "email.complained": "complaint",
    "email.suppressed": "bounce",
}


class ResendWebhook:
    def __init__(self, secret: str | None) -> None:
        self._webhook = Webhook(secret) if secret else None

    def verify(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if self._webhook is None:
            raise WebhookRejected("not_configured", "OTP_RESEND_WEBHOOK_SECRET is not set")
        wanted = {k: headers.get(k, "") for k in ("svix-id", "svix-timestamp", "svix-signature")}
        if not all(wanted.values()):
            raise WebhookRejected("missing_signature_headers")
        try:
            self._webhook.verify(body, wanted)
        except Exception as exc:
            raise WebhookRejected(
                "bad_signature", f"signature verification failed ({type(exc).__name__})"
            ) from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("malformed_body", "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise WebhookRejected("malformed_body", "the body is not a JSON object")
        return self.normalise(wanted["svix-id"], payload)

    @staticmethod
    def normalise(event_id: str, payload: dict[str, Any]) -> ProviderEvent:
        event_type = payload.get("type")
        event_type = event_type if isinstance(event_type, str) and event_type else "unknown"
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        assert isinstance(data, dict)
        reason = SUPPRESSING.get(event_type)
        to = data.get("to")
        addresses = to if isinstance(to, list) else [to]
        detail: dict[str, Any] = {}
        for key in ("bounce", "complaint", "suppressed"):
            if isinstance(data.get(key), dict):
                detail[key] = data[key]
        recipients = tuple(
            Recipient(email, reason, detail)
            for email in dict.fromkeys(clean_address(a) for a in addresses)
            if email
        )
        message_id = data.get("email_id")
        return ProviderEvent(
            provider="resend",
            event_id=event_id,
            type=event_type,
            occurred_at=parse_time(payload.get("created_at")),
            recipients=recipients,
            payload=payload,
            message_id=message_id if isinstance(message_id, str) else None,
        )
