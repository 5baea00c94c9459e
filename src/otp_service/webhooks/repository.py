"""Every SQL statement on the webhook events table."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch, dialect_insert
from otp_service.db.models import Delivery, WebhookEvent
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


@dataclass(frozen=True, slots=True)
class Evidence:
    """Bounces and complaints in a window, and how many distinct mailboxes they came from."""

    bounces: int = 0
    complaints: int = 0
    bounced_mailboxes: int = 0
    complained_mailboxes: int = 0


def _suppressing(since: datetime) -> Any:
    """A bounce counts when it suppressed its recipient (a permanent bounce), as SES's
    reputation bounce rate counts hard bounces only; a transient bounce or a delay does not."""
    return (WebhookEvent.received_at >= since) & (WebhookEvent.outcome == "suppressed")


async def bounces_and_complaints(
    db: AsyncSession | AsyncConnection, since: datetime, provider: str | None = None,
    *, exclude_sources: Sequence[str] = (),
) -> Evidence:  # fmt: skip
    """Bounces and complaints received since `since`: the one definition that the usage report
    and the reputation guard share. Each is traced through the delivery it answers (the
    provider's message id) to its mailbox and its source subnet; those of `exclude_sources`
    (blocked subnets) do not count. An event no delivery matches is a mailbox of its own."""
    bounce = WebhookEvent.event_type.in_(BOUNCE_TYPES)
    complaint = WebhookEvent.event_type.in_(COMPLAINT_TYPES)
    mailbox = func.coalesce(Delivery.email, WebhookEvent.event_id)
    query = (
        select(
            func.count(WebhookEvent.id).filter(bounce),
            func.count(WebhookEvent.id).filter(complaint),
            func.count(distinct(mailbox)).filter(bounce),
            func.count(distinct(mailbox)).filter(complaint),
        )
        .select_from(WebhookEvent)
        .outerjoin(Delivery, Delivery.provider_message_id == WebhookEvent.message_id)
        .where(_suppressing(since))
    )
    if provider is not None:
        query = query.where(WebhookEvent.provider == provider)
    if exclude_sources:
        query = query.where(Delivery.source_subnet.is_(None) | Delivery.source_subnet.not_in(exclude_sources))
    row = (await db.execute(query)).one()
    return Evidence(*(int(v or 0) for v in row))


async def sources_over(db: AsyncSession | AsyncConnection, since: datetime, limit: int) -> list[str]:
    """The subnets whose sends drew at least `limit` bounces + complaints since `since`."""
    query = (
        select(Delivery.source_subnet)
        .select_from(WebhookEvent)
        .join(Delivery, Delivery.provider_message_id == WebhookEvent.message_id)
        .where(
            _suppressing(since),
            WebhookEvent.event_type.in_((*BOUNCE_TYPES, *COMPLAINT_TYPES)),
            Delivery.source_subnet.is_not(None),
        )
        .group_by(Delivery.source_subnet)
        .having(func.count(WebhookEvent.id) >= limit)
    )
    return [str(s) for s in (await db.scalars(query)).all()]


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


async def delivery_for(db: AsyncSession | AsyncConnection, provider: str, message_id: str) -> Delivery | None:
    """The delivery an event is about (the provider's message id), if it was recorded."""
    query = select(Delivery).where(Delivery.provider == provider, Delivery.provider_message_id == message_id)
    return (await db.execute(query.limit(1))).scalars().first()
