"""Every SQL statement on the audit log."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch
from otp_service.db.models import AuditEntry


async def append(session: AsyncSession, *, actor: str, action: str, target: str, note: str | None) -> None:
    session.add(AuditEntry(key_fingerprint=actor, action=action, target=target, note=note))
    await session.flush()


async def page(session: AsyncSession, *, before_id: int | None, limit: int) -> list[AuditEntry]:
    """Newest first, keyset-paginated on the id."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list((await session.scalars(query)).all())


async def delete_older(db: AsyncSession | AsyncConnection, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` entries older than `before`; how many went."""
    return await delete_batch(db, AuditEntry.id, AuditEntry.created_at, before, batch)
