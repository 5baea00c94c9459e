"""Async engine and session factory; built by the app lifespan, never at import time."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import delete, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from otp_service.db.guard import database_guard


def create_engine(url: str, *, timeout: float = 2.0) -> AsyncEngine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": timeout}
    else:
        # Fail fast when PostgreSQL is down: a bounded connect and statement time, and a
        # bounded wait for a pooled connection, so callers can answer 503 instead of hanging.
        kwargs["connect_args"] = {"timeout": timeout, "command_timeout": 5}
        kwargs.update(pool_size=10, max_overflow=10, pool_timeout=timeout, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Commit on success, roll back on error: services never commit themselves."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


@asynccontextmanager
async def database_session(
    factory: async_sessionmaker[AsyncSession], operation: str = "session"
) -> AsyncIterator[AsyncSession]:
    """`session_scope`, with the database's errors as the contract's 503 (db/guard.py)."""
    async with database_guard(operation), session_scope(factory) as session:
        yield session


def dialect_name(db: AsyncSession | AsyncConnection) -> str:
    if isinstance(db, AsyncConnection):
        return str(db.dialect.name)
    return str(db.bind.dialect.name) if db.bind is not None else "postgresql"


def dialect_insert(db: AsyncSession | AsyncConnection, table: Any) -> Any:
    """INSERT with the dialect's ON CONFLICT clauses (PostgreSQL and SQLite spell them alike)."""
    return (postgresql.insert if dialect_name(db) == "postgresql" else sqlite.insert)(table)


async def delete_batch(
    db: AsyncSession | AsyncConnection, id_column: Any, time_column: Any, before: Any, batch: int
) -> int:
    """Delete up to `batch` rows whose `time_column` is before `before` (retention): one short
    statement per batch, so a large backlog never holds a long lock. How many went."""
    table = id_column.class_
    ids = select(id_column).where(time_column < before).limit(batch).scalar_subquery()
    result = await db.execute(delete(table).where(id_column.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)
