"""Every SQL statement on the deliveries table."""

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    job_id: str
    email: str
    outcome: str  # sent | suppressed | superseded | expired | failed
    provider: str | None
    message_id: str | None


async def record_outcomes(db: AsyncSession | AsyncConnection, records: list[DeliveryRecord]) -> None:
    """Idempotent per job: a job reclaimed and handled again does not write a second row.
    One statement for a batch (no select-then-insert, no ORM unit of work)."""
    rows = [
        dict(zip(_COLUMNS, (r.job_id, r.email, r.outcome, r.provider, r.message_id), strict=True))
        for r in records
    ]
    await db.execute(_RECORD[dialect_name(db)], rows)


async def count_sent(
    db: AsyncSession | AsyncConnection, since: datetime, *, provider: str | None = None
) -> int:
    """Emails handed to a provider since `since` (all providers, or one)."""
    query = select(func.count(Delivery.id)).where(Delivery.created_at >= since, Delivery.outcome == "sent")
    if provider is not None:
        query = query.where(Delivery.provider == provider)
    return int(await db.scalar(query) or 0)
