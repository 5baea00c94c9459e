"""One normalised event model, whatever the provider: new providers plug in by producing it."""

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from typing import Any, Literal

SuppressReason = Literal["bounce", "complaint"]


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    # None: recorded only (a transient bounce, a delivery); else the suppression reason.
    suppress: SuppressReason | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    provider: str  # resend | ses
    event_id: str  # the provider's idempotency key: svix-id, SNS MessageId
    type: str  # e.g. email.bounced, bounce, complaint, subscription_confirmation
    occurred_at: datetime | None
    recipients: tuple[Recipient, ...]
    payload: dict[str, Any]
    message_id: str | None = None  # the provider's id of the email this event is about


def clean_address(value: object) -> str | None:
    """`Name <a@B.com>` or `a@B.com` to `a@b.com`; None when it is not an address."""
    if not isinstance(value, str):
        return None
    _, address = parseaddr(value)
    address = address.strip().lower()
    if address.count("@") != 1 or len(address) > 320:
        return None
    local, domain = address.split("@")
    return address if local and "." in domain else None


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


KINDS: dict[tuple[str, str], str] = {
    ("resend", "email.sent"): "sent",
    ("resend", "email.delivered"): "delivered",
    ("resend", "email.delivery_delayed"): "delayed",
    ("resend", "email.bounced"): "bounced",
    ("resend", "email.complained"): "complained",
    ("resend", "email.suppressed"): "suppressed",
    ("resend", "email.failed"): "failed",
    ("ses", "send"): "sent",
    ("ses", "delivery"): "delivered",
    ("ses", "deliverydelay"): "delayed",
    ("ses", "bounce"): "bounced",
    ("ses", "complaint"): "complained",
    ("ses", "reject"): "rejected",
    ("ses", "renderingfailure"): "failed",
}
"""What a provider's event type means for a delivery, as the delivery lookup shows it."""


def kind_of(provider: str, event_type: str) -> str:
    return KINDS.get((provider, event_type), event_type)
