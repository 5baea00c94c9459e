"""SQL for delivery outcomes."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
    """Idempotent per job: a job reclaimed and handled again does not write a second row."""
    exists = await session.scalar(select(Delivery.id).where(Delivery.job_id == job_id))
    if exists is None:
        session.add(
            Delivery(job_id=job_id, email=email, outcome=outcome, provider=provider,
                     provider_message_id=message_id)
        )  # fmt: skip
