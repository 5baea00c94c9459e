"""Alembic environment: the same migrations on PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from otp_service.db.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    from otp_service.db.engine import create_engine

    engine = create_engine(url, timeout=10)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    # Called from otp_service.db.migrate inside a running event loop.
    _run(connection)
elif context.is_offline_mode():
    context.configure(
        url=os.environ.get("OTP_DATABASE_URL", "sqlite:///./otp_service.db"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online(os.environ.get("OTP_DATABASE_URL", "sqlite+aiosqlite:///./otp_service.db")))
