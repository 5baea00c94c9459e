"""Every SQL query on the suppression table."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from otp_service.db.models import Suppression


async def is_suppressed(session: AsyncSession, email: str) -> bool:
    found = await session.scalar(select(Suppression.id).where(Suppression.email == email).limit(1))
    return found is not None
