"""Every SQL query on the suppression table (and the counts the usage report needs)."""

from datetime import datetime

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.models import Delivery, Suppression, WebhookEvent

BOUNCE_TYPES = ("email.bounced", "bounce")
COMPLAINT_TYPES = ("email.complained", "complaint")


_IS_SUPPRESSED = select(Suppression.id).where(Suppression.email == bindparam("email")).limit(1)
"""Built once: the worker runs it for every email."""


async def is_suppressed(db: AsyncSession | AsyncConnection, email: str) -> bool:
    found = await db.scalar(_IS_SUPPRESSED, {"email": email})
    return found is not None


async def get(session: AsyncSession, email: str) -> Suppression | None:
    result: Suppression | None = await session.scalar(select(Suppression).where(Suppression.email == email))
    return result


async def page(
    session: AsyncSession, *, email: str | None, before_id: int | None, limit: int
) -> list[Suppression]:
    """Newest first, keyset-paginated on the id (stable under concurrent inserts)."""
    query = select(Suppression).order_by(Suppression.id.desc()).limit(limit)
    if email:
        if "@" in email:
            query = query.where(Suppression.email == email)
        else:
            escaped = email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Suppression.email.like(f"%{escaped}%", escape="\\"))
    if before_id is not None:
        query = query.where(Suppression.id < before_id)
    return list((await session.scalars(query)).all())


async def remove(session: AsyncSession, email: str) -> bool:
    result = await session.execute(delete(Suppression).where(Suppression.email == email))
    return bool(getattr(result, "rowcount", 0))


async def events_since(session: AsyncSession, since: datetime, types: tuple[str, ...]) -> int:
    count = await session.scalar(
        select(func.count(WebhookEvent.id)).where(
            WebhookEvent.received_at >= since, WebhookEvent.event_type.in_(types)
        )
    )
    return int(count or 0)


async def deliveries_since(session: AsyncSession, since: datetime, outcome: str = "sent") -> int:
    count = await session.scalar(
        select(func.count(Delivery.id)).where(Delivery.created_at >= since, Delivery.outcome == outcome)
    )
    return int(count or 0)
