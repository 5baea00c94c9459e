"""Every SQL statement on the webhook events table."""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch, dialect_insert
from otp_service.db.models import WebhookEvent
from otp_service.webhooks.events import KINDS, ProviderEvent

BOUNCE_TYPES = tuple(event_type for (_, event_type), kind in KINDS.items() if kind == "bounced")
COMPLAINT_TYPES = tuple(event_type for (_, event_type), kind in KINDS.items() if kind == "complained")


async def record_event(session: AsyncSession, event: ProviderEvent, outcome: str) -> bool:
    """Insert the event row; False when the provider already delivered this event id."""
    stmt = (
        dialect_insert(session, WebhookEvent)
        .values(
            provider=event.provider,
            event_id=event.event_id,
            event_type=event.type[:64],
            outcome=outcome,
            occurred_at=event.occurred_at,
            payload=event.payload,
            message_id=event.message_id[:255] if event.message_id else None,
        )
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(WebhookEvent.id)
    )
    return await session.scalar(stmt) is not None


async def count_bounces_and_complaints(
    db: AsyncSession | AsyncConnection, since: datetime, provider: str | None = None
) -> tuple[int, int]:
    """Bounces and complaints received since `since`: the one definition that the usage report
    and the reputation guard share. A bounce counts when it suppressed its recipient (a
    permanent bounce), as SES's reputation bounce rate counts hard bounces only; a transient
    bounce or a delivery delay does not."""
    query = select(
        func.count(WebhookEvent.id).filter(WebhookEvent.event_type.in_(BOUNCE_TYPES)),
        func.count(WebhookEvent.id).filter(WebhookEvent.event_type.in_(COMPLAINT_TYPES)),
    ).where(WebhookEvent.received_at >= since, WebhookEvent.outcome == "suppressed")
    if provider is not None:
        query = query.where(WebhookEvent.provider == provider)
    row = (await db.execute(query)).one()
    return int(row[0] or 0), int(row[1] or 0)


async def for_messages(db: AsyncSession | AsyncConnection, message_ids: list[str]) -> list[WebhookEvent]:
    """The events about these emails (by the provider's message id), oldest first."""
    if not message_ids:
        return []
    query = (
        select(WebhookEvent)
        .where(WebhookEvent.message_id.in_(message_ids))
        .order_by(WebhookEvent.occurred_at, WebhookEvent.id)
    )
    return list((await db.execute(query)).scalars().all())


async def delete_older(db: AsyncSession | AsyncConnection, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` events received older than `before`; how many went."""
    return await delete_batch(db, WebhookEvent.id, WebhookEvent.received_at, before, batch)
