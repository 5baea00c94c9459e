"""Every SQL statement on the suppression table. A row suppresses the exact address it names
(CONTRACT §6): no look-up here compares mailboxes."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import dialect_insert
from otp_service.db.models import Suppression

COMPLAINTS_ONLY = (Suppression.reason == "complaint") & (Suppression.bounce_count == 0)
"""A row that only complaints made: its address still receives the codes its remembered sources
request (CONTRACT §6: the complaint may have been about codes someone else asked for). A bounce,
before or after the complaint, or an operator's entry suppresses everything."""

BOUNCED = (Suppression.reason == "bounce") | (Suppression.bounce_count > 0)
"""A row a bounce made (or joined): its address shows `undeliverable` (CONTRACT §3), as a fresh
hard bounce would."""

_SUPPRESSED_AMONG = select(Suppression.email, COMPLAINTS_ONLY, BOUNCED).where(
    Suppression.email.in_(bindparam("emails", expanding=True))
)
"""Built once: the worker runs it for every batch of emails."""


async def suppressed_among(db: AsyncSession | AsyncConnection, emails: list[str]) -> dict[str, bool]:
    """The suppressed among these addresses, each with whether its remembered sources still
    reach it (COMPLAINTS_ONLY): one statement for a batch."""
    return {email: found[0] for email, found in (await suppressions_among(db, emails)).items()}


async def suppressions_among(
    db: AsyncSession | AsyncConnection, emails: list[str]
) -> dict[str, tuple[bool, bool]]:
    """The suppressed among these addresses, each with (COMPLAINTS_ONLY, BOUNCED): one statement
    for a batch."""
    rows = (await db.execute(_SUPPRESSED_AMONG, {"emails": sorted(set(emails))})).all()
    return {email: (bool(complaints_only), bool(bounced)) for email, complaints_only, bounced in rows}


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


async def put_manual(session: AsyncSession, *, email: str, reason: str, note: str | None) -> bool:
    """An operator's suppression: True when it created the record. An existing record keeps
    everything it has (reason, source, the provider's event, message and details); only the note
    (when given) and the update time change."""
    now = datetime.now(UTC)
    inserted = await session.scalar(
        dialect_insert(session, Suppression)
        .values(
            email=email,
            reason=reason,
            source="admin",
            note=note,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(Suppression.id)
    )
    if inserted is not None:
        return True
    await session.execute(
        update(Suppression)
        .where(Suppression.email == email)
        .values(note=func.coalesce(note, Suppression.note), updated_at=now)
    )
    return False


async def upsert(
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


async def find(session: AsyncSession, email: str) -> Suppression | None:
    """The row that suppresses this address: its own only (CONTRACT §6)."""
    return await get(session, email)
