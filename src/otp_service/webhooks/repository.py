"""Every SQL statement on the webhook events table alone (those joining the deliveries are
delivery/repository.py's)."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch, dialect_insert
from otp_service.db.models import WebhookEvent
from otp_service.webhooks.events import ProviderEvent


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
