"""SQL for delivery outcomes."""

from sqlalchemy.ext.asyncio import AsyncSession

from otp_service.db.engine import dialect_insert
from otp_service.db.models import Delivery


async def record_outcome(
    session: AsyncSession,
    *,
    job_id: str,
    email: str,
    outcome: str,
    provider: str | None,
    message_id: str | None,
) -> None:
    """Idempotent per job: a job reclaimed and handled again does not write a second row.
    One statement (no select-then-insert, no ORM unit of work): it runs once per email."""
    stmt = dialect_insert(session, Delivery).values(
        job_id=job_id, email=email, outcome=outcome, provider=provider, provider_message_id=message_id
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["job_id"]))
