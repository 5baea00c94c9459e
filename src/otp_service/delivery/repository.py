"""Every SQL statement on the deliveries table."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch, dialect_name
from otp_service.db.models import Delivery

_COLUMNS = (
    "job_id", "email", "outcome", "provider", "provider_message_id", "queued_at", "attempts", "source_subnet",
)  # fmt: skip
# Built once per dialect: the worker runs it for every email.
_RECORD: dict[str, Any] = {
    name: insert(Delivery)
    .values({c: bindparam(c) for c in _COLUMNS})
    .on_conflict_do_nothing(index_elements=["job_id"])
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


class DeliveryOutcome(StrEnum):
    """What became of a delivery job: the worker's outcome, the `deliveries` row's `outcome`,
    the `outcome` label of otp_deliveries_total and the admin delivery lookup's."""

    SENT = "sent"
    SUPPRESSED = "suppressed"  # the address is suppressed: not emailed
    SUPERSEDED = "superseded"  # a newer send replaced the code (or it was used): not emailed
    EXPIRED = "expired"  # the code expired before it could be sent
    FAILED = "failed"  # the provider refused it for good
    UNDECRYPTABLE = "undecryptable"  # sealed under another OTP_SECRET_KEY; never recorded (no address)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    job_id: str
    email: str
    outcome: DeliveryOutcome
    provider: str | None
    message_id: str | None
    queued_at: datetime | None = None
    attempts: int = 0
    subnet: str | None = None


async def record_outcomes(db: AsyncSession | AsyncConnection, records: list[DeliveryRecord]) -> None:
    """Idempotent per job: a job reclaimed and handled again does not write a second row.
    One statement for a batch (no select-then-insert, no ORM unit of work)."""
    rows = [
        dict(
            zip(
                _COLUMNS,
                (r.job_id, r.email, r.outcome, r.provider, r.message_id, r.queued_at, r.attempts, r.subnet),
                strict=True,
            )
        )
        for r in records
    ]
    await db.execute(_RECORD[dialect_name(db)], rows)


async def count_sent(
    db: AsyncSession | AsyncConnection, since: datetime, *, provider: str | None = None
) -> int:
    """Emails handed to a provider since `since` (all providers, or one)."""
    query = select(func.count(Delivery.id)).where(
        Delivery.created_at >= since, Delivery.outcome == DeliveryOutcome.SENT
    )
    if provider is not None:
        query = query.where(Delivery.provider == provider)
    return int(await db.scalar(query) or 0)


async def page_for(
    db: AsyncSession | AsyncConnection, email: str, *, before_id: int | None, limit: int
) -> list[Delivery]:
    """An address's deliveries, newest first, keyset-paginated on the id."""
    query = select(Delivery).where(Delivery.email == email).order_by(Delivery.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
    return list((await db.execute(query)).scalars().all())


async def delete_older(db: AsyncSession | AsyncConnection, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` records older than `before`; how many went."""
    return await delete_batch(db, Delivery.id, Delivery.created_at, before, batch)
