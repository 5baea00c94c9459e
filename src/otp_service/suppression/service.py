"""Record a provider event exactly once and suppress its recipients, in one transaction."""

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from otp_service.db.engine import dialect_insert
from otp_service.db.models import Suppression, WebhookEvent
from otp_service.webhooks.events import ProviderEvent

Outcome = Literal["accepted", "duplicate"]


async def record_event(session: AsyncSession, event: ProviderEvent, outcome: str) -> Outcome:
    """Insert the event row; `duplicate` when the provider already delivered this event id."""
    stmt = (
        dialect_insert(session, WebhookEvent)
        .values(
            provider=event.provider,
            event_id=event.event_id,
            event_type=event.type[:64],
            outcome=outcome,
            occurred_at=event.occurred_at,
            payload=event.payload,
        )
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(WebhookEvent.id)
    )
    inserted = await session.scalar(stmt)
    return "accepted" if inserted is not None else "duplicate"


async def upsert_suppression(
    session: AsyncSession,
    *,
    email: str,
    reason: str,
    source: str,
    note: str | None = None,
    event_id: str | None = None,
    message_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Insert or update. A complaint after a bounce keeps the record (and its first reason) and
    counts the complaint; an operator's note is kept unless a new one is given."""
    now = datetime.now(UTC)
    counts = {"bounce_count": int(reason == "bounce"), "complaint_count": int(reason == "complaint")}
    stmt = dialect_insert(session, Suppression).values(
        email=email, reason=reason, source=source, note=note, provider_event_id=event_id,
        provider_message_id=message_id, details=details, created_at=now, updated_at=now, **counts,
    )  # fmt: skip
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["email"],
        set_={
            "bounce_count": Suppression.bounce_count + excluded.bounce_count,
            "complaint_count": Suppression.complaint_count + excluded.complaint_count,
            "updated_at": now,
            "provider_event_id": excluded.provider_event_id,
            "provider_message_id": excluded.provider_message_id,
            "details": excluded.details,
            "note": func.coalesce(excluded.note, Suppression.note),
        },
    )
    await session.execute(stmt)


async def apply_event(session: AsyncSession, event: ProviderEvent) -> tuple[Outcome, int]:
    """Record the event and suppress what it says to; (outcome, addresses suppressed)."""
    to_suppress = [r for r in event.recipients if r.suppress is not None]
    outcome = await record_event(session, event, "suppressed" if to_suppress else "recorded")
    if outcome == "duplicate":
        return outcome, 0
    for recipient in to_suppress:
        assert recipient.suppress is not None
        await upsert_suppression(
            session,
            email=recipient.email,
            reason=recipient.suppress,
            source=event.provider,
            event_id=event.event_id,
            message_id=event.message_id,
            details={"event_type": event.type, **recipient.detail},
        )
    return outcome, len(to_suppress)
