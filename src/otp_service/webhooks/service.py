"""Webhook handling: verify, normalise, apply once, count."""

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service import tracing
from otp_service.db.engine import session_scope
from otp_service.db.guard import database_guard
from otp_service.db.models import Delivery
from otp_service.errors import Unavailable, WebhookRejected
from otp_service.events.outbox import EventOutbox, EventType
from otp_service.logs import get_logger, mask_email
from otp_service.metrics import SENT_TO_DELIVERED, WEBHOOK_EVENTS
from otp_service.sends import DeliveryStatus
from otp_service.suppression import repository as suppressions
from otp_service.webhooks import repository as events
from otp_service.webhooks.events import ProviderEvent, kind_of
from otp_service.webhooks.resend import ResendWebhook
from otp_service.webhooks.sns import SnsVerifier, normalise_ses

log = get_logger("webhooks")

_EVENT_OF: dict[str, EventType] = {"delivered": "otp.delivered", "delayed": "otp.delayed",
                                   "bounced": "otp.bounced", "complained": "otp.complained"}  # fmt: skip

Outcome = Literal["accepted", "duplicate"]


class SendStatuses(Protocol):
    """Each send's status for GET /api/v1/auth/otp/sends/{send_id} (otp/store.py answers)."""

    async def mark_message(
        self, provider: str, message_id: str, status: DeliveryStatus | None
    ) -> str | None: ...

    async def message_trace(self, provider: str, message_id: str) -> str | None:
        """Tracing on: the trace context of the provider call that sent this message."""
        ...


_STATUS_OF: dict[str, DeliveryStatus] = {
    "delivered": DeliveryStatus.DELIVERED,
    "delayed": DeliveryStatus.DELAYED,  # Resend email.delivery_delayed, SES DeliveryDelay
}
"""A provider's event as the send's status (CONTRACT §3); a hard bounce (a recipient it
suppresses) is `undeliverable`, a transient one changes nothing."""


def _status_of(event: ProviderEvent) -> DeliveryStatus | None:
    kind = kind_of(event.provider, event.type)
    if kind == "bounced":
        hard = any(r.suppress == "bounce" for r in event.recipients)
        return DeliveryStatus.UNDELIVERABLE if hard else None
    return _STATUS_OF.get(kind)


AGAIN_LATER = "The database is not answering; deliver the event again later"

DeliveryFor = Callable[[AsyncSession, str, str], Awaitable[Delivery | None]]
"""The delivery a provider's event is about, by (provider, message id), in the event's own
transaction: delivery/repository.py's delivery_for, handed in by the assembly (the delivery
package reads the webhook events, so this one does not import it back)."""


async def apply_event(session: AsyncSession, event: ProviderEvent) -> tuple[Outcome, int]:
    """Record the event once and suppress what it says to, each recipient's exact address
    (CONTRACT §6: no other spelling of its mailbox); (outcome, addresses suppressed)."""
    to_suppress = [r for r in event.recipients if r.suppress is not None]
    if not await events.record_event(session, event, "suppressed" if to_suppress else "recorded"):
        return "duplicate", 0
    for recipient in to_suppress:
        assert recipient.suppress is not None
        await suppressions.upsert(
            session,
            email=recipient.email,
            reason=recipient.suppress,
            source=event.provider,
            event_id=event.event_id,
            message_id=event.message_id,
            details={"event_type": event.type, **recipient.detail},
        )
    return "accepted", len(to_suppress)


def _delivered_at(event: ProviderEvent) -> datetime:
    """The provider's own time of delivery when it names one (a retried webhook arrives late)."""
    at = event.occurred_at or datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _observe_delivered(event: ProviderEvent, delivery: Delivery) -> None:
    """Sent to delivered: the delivery row is written as the provider accepts the email, so its
    created_at is the sent time; the provider's own time of delivery when it names one (a
    retried webhook arrives late), else now. Counted once: a duplicate event is not accepted."""
    sent = delivery.created_at
    if sent.tzinfo is None:  # SQLite keeps no zone; the column is written in UTC
        sent = sent.replace(tzinfo=UTC)
    at = _delivered_at(event)
    SENT_TO_DELIVERED.labels(event.provider).observe(max(0.0, (at - sent).total_seconds()))


class WebhookService:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], resend: ResendWebhook, sns: SnsVerifier,
        delivery_for: DeliveryFor, events: EventOutbox | None = None, statuses: SendStatuses | None = None,
    ) -> None:  # fmt: skip
        self._statuses = statuses
        self._sessions = sessions
        self._delivery_for = delivery_for
        self._events = events
        self._resend = resend
        self._sns = sns

    async def _apply(self, event: ProviderEvent) -> str:
        if tracing.hooks is None:
            return await self._applied(event)
        # OpenTelemetry configured: the event is a span of this request's trace, linked to the
        # send's provider call through the message id (otp_service/tracing)
        with tracing.hooks.provider_event(event.provider, event.type) as span:
            outcome = await self._applied(event)
            span.outcome(outcome)
            if event.message_id is not None:
                span.matched(event.message_id, await self._trace_of(event.provider, event.message_id))
        return outcome

    async def _trace_of(self, provider: str, message_id: str) -> str | None:
        """The context of the provider call that sent this message; None when not known (not
        ours, expired, sent untraced, or Redis down: a missing link never refuses an event)."""
        if self._statuses is None:
            return None
        try:
            return await self._statuses.message_trace(provider, message_id)
        except Unavailable:
            return None

    async def _applied(self, event: ProviderEvent) -> str:
        delivery = None
        try:
            async with (
                database_guard("webhooks.apply", detail=AGAIN_LATER),
                session_scope(self._sessions) as session,
            ):
                outcome, suppressed = await apply_event(session, event)
                delivered = kind_of(event.provider, event.type) == "delivered"
                wanted = self._events is not None or delivered  # delivered: for its time to inbox
                if wanted and outcome == "accepted" and event.message_id is not None:
                    delivery = await self._delivery_for(session, event.provider, event.message_id)
                    if delivered and delivery is not None and delivery.delivered_at is None:
                        delivery.delivered_at = _delivered_at(event)  # the admin stats read it
        except Unavailable as exc:
            WEBHOOK_EVENTS.labels(event.provider, event.type, "unavailable").inc()
            log.warning(
                "webhook.database_unavailable",
                extra={"provider": event.provider, "error": type(exc.__cause__).__name__},
            )
            raise
        WEBHOOK_EVENTS.labels(event.provider, event.type, outcome).inc()
        recipients = [mask_email(r.email) for r in event.recipients]
        log.info(
            "webhook.event_" + outcome,
            extra={"provider": event.provider, "type": event.type, "event_id": event.event_id,
                   "suppressed": suppressed, "recipients": recipients},
        )  # fmt: skip
        if outcome == "accepted":
            if delivered and delivery is not None:
                _observe_delivered(event, delivery)
            send_id = await self._mark(event)
            await self._publish(event, delivery, send_id)
        return outcome

    async def _mark(self, event: ProviderEvent) -> str | None:
        """The send's status, found through the provider's message id; its send_id (None: not
        one of ours, or expired), which every event out names (CONTRACT §7), one that moves no
        status (a complaint) too. Redis down: the status stays behind, the event is not refused
        (it is recorded, and a repeat would be a duplicate)."""
        if self._statuses is None or event.message_id is None:
            return None
        status = _status_of(event)
        goes_out = self._events is not None and kind_of(event.provider, event.type) in _EVENT_OF
        if status is None and not goes_out:
            return None
        try:
            return await self._statuses.mark_message(event.provider, event.message_id, status)
        except Unavailable as exc:
            log.warning(
                "webhook.status_failed", extra={"provider": event.provider, "error": type(exc).__name__}
            )
            return None

    async def _publish(
        self, event: ProviderEvent, delivery: Delivery | None, send_id: str | None = None
    ) -> None:
        """Events out (CONTRACT §7): delivered, delayed, bounced, complained, matched to the send through
        the provider's message id. The webhook-id follows the provider's event id: a provider
        that delivers its event twice (processed once here) cannot make two."""
        kind = _EVENT_OF.get(kind_of(event.provider, event.type))
        if self._events is None or kind is None:
            return
        addresses = [r.email for r in event.recipients] or ([delivery.email] if delivery is not None else [])
        for n, email in enumerate(addresses):
            data = {
                "email": email, "job_id": delivery.job_id if delivery is not None else None,
                "provider": event.provider, "message_id": event.message_id, "provider_event": event.type,
                "send_id": send_id,
            }  # fmt: skip
            event_id = f"{event.provider}_{event.event_id}_{n}"
            await self._events.publish(
                kind, data, event_id=event_id, app=delivery.app if delivery is not None else ""
            )

    async def resend(self, body: bytes, headers: Mapping[str, str]) -> str:
        try:
            event = self._resend.verify(body, headers)
        except WebhookRejected as exc:
            WEBHOOK_EVENTS.labels("resend", "unverified", f"rejected_{exc.reason}").inc()
            log.warning("webhook.resend_rejected", extra={"reason": exc.reason})
            raise
        return await self._apply(event)

    async def ses(self, body: bytes, header_type: str | None) -> str:
        try:
            message = await self._sns.verify(body, header_type)
        except WebhookRejected as exc:
            WEBHOOK_EVENTS.labels("ses", "unverified", f"rejected_{exc.reason}").inc()
            log.warning("webhook.sns_rejected", extra={"reason": exc.reason})
            raise
        kind = message["Type"]
        if kind == "Notification":
            return await self._apply(normalise_ses(message))
        event = ProviderEvent(
            provider="ses", event_id=str(message["MessageId"]), type=kind, occurred_at=None, recipients=(),
            payload=dict(message),
        )  # fmt: skip
        if kind == "UnsubscribeConfirmation":
            log.warning("webhook.sns_unsubscribed", extra={"topic": message.get("TopicArn")})
            return await self._apply(event)
        return await self._confirm(event, message)

    async def _confirm(self, event: ProviderEvent, message: Mapping[str, Any]) -> str:
        """Visit SubscribeURL once: the event row is written in the same transaction, and a
        failed visit rolls it back so that SNS's retry can try again."""
        async with (
            database_guard("webhooks.confirm", detail=AGAIN_LATER),
            session_scope(self._sessions) as session,
        ):
            fresh = await events.record_event(session, event, "confirmed")
            outcome = "accepted" if fresh else "duplicate"
            if fresh:
                await self._visit(event, message)
        WEBHOOK_EVENTS.labels("ses", event.type, outcome).inc()
        log.info("webhook.sns_subscription_" + outcome, extra={"topic": message.get("TopicArn")})
        return outcome

    async def _visit(self, event: ProviderEvent, message: Mapping[str, Any]) -> None:
        """A visit that fails is 503 of its own (not the database's), and rolls the row back."""
        try:
            await self._sns.confirm_subscription(message)
        except ConnectionError as exc:
            WEBHOOK_EVENTS.labels("ses", event.type, "confirm_failed").inc()
            log.warning("webhook.sns_confirm_failed", extra={"error": str(exc)})
            raise Unavailable("Could not confirm the subscription; deliver it again later") from exc
