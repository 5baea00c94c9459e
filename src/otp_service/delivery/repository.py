"""Every SQL statement on the deliveries table."""

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import dialect_name
from otp_service.db.models import Delivery

_COLUMNS = ("job_id", "email", "outcome", "provider", "provider_message_id")
# Built once per dialect: the worker runs it for every email.
_RECORD: dict[str, Any] = {
    name: insert(Delivery)
    .values({c: bindparam(c) for c in _COLUMNS})
    .on_conflict_do_nothing(index_elements=["job_id"])
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


async def record_outcome(
    db: AsyncSession | AsyncConnection,
    *,
    job_id: str,
    email: str,
    outcome: str,
    provider: str | None,
    message_id: str | None,
) -> None:
    """Idempotent per job: a job reclaimed and handled again does not write a second row.
    One statement (no select-then-insert, no ORM unit of work): it runs once per email."""
    values = (job_id, email, outcome, provider, message_id)
    await db.execute(_RECORD[dialect_name(db)], dict(zip(_COLUMNS, values, strict=True)))


async def count_sent(
    db: AsyncSession | AsyncConnection, since: datetime, *, provider: str | None = None
) -> int:
    """Emails handed to a provider since `since` (all providers, or one)."""
    query = select(func.count(Delivery.id)).where(Delivery.created_at >= since, Delivery.outcome == "sent")
    if provider is not None:
        query = query.where(Delivery.provider == provider)
    return int(await db.scalar(query) or 0)
