"""What became of one accepted send (CONTRACT §3): the status the send decision writes, the
worker and the provider's events move, and GET /api/v1/auth/otp/sends/{send_id} reads. A module
of its own, importing nothing: otp, delivery and webhooks all name it."""

from enum import StrEnum


class DeliveryStatus(StrEnum):
    """What became of one accepted send (CONTRACT §3, GET /api/v1/auth/otp/sends/{send_id})."""

    QUEUED = "queued"
    SENT = "sent"  # the provider took it
    DELIVERED = "delivered"  # the provider reported delivery
    DELAYED = "delayed"  # the provider reported a temporary failure and keeps trying
    UNDELIVERABLE = "undeliverable"  # hard bounce, or suppressed by an earlier bounce
    FAILED = "failed"  # the service gave up
    SUPERSEDED = "superseded"  # a newer send replaced this code
