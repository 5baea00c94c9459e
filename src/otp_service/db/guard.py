"""Database failures as the service's errors, mapped here and nowhere else (as redisio/guard.py
maps Redis's): a database that is down, slow or busy is 503 `unavailable` with Retry-After, never
a 500 or a hang. The engine bounds connects, statements and pool waits (db/engine.py), so no
timer is set here."""

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError

from otp_service.errors import Unavailable
from otp_service.logs import get_logger

log = get_logger("database")

FAILURES: tuple[type[Exception], ...] = (SQLAlchemyError, OSError, TimeoutError)
"""What a database that cannot answer raises. SQLAlchemyError: every driver error SQLAlchemy
wraps (DBAPIError: OperationalError, among them SQLite's "database is locked", and InterfaceError,
among them asyncpg's connection that went away) and the pool's own timeout (no connection free
within pool_timeout). OSError: a connect refused or reset before the driver wraps it, and the
worker's ledger once closed (ConnectionError). TimeoutError: asyncpg's connect and statement
timeouts, and the callers' own asyncio.timeout."""

NOT_ANSWERING = "The database is not answering"


@contextlib.asynccontextmanager
async def database_guard(operation: str, *, detail: str = NOT_ANSWERING) -> AsyncIterator[None]:
    """Any database failure in the block as `Unavailable` (`detail` is the problem's detail)."""
    try:
        yield
    except FAILURES as exc:
        log.warning("database.unavailable", extra={"operation": operation, "error": type(exc).__name__})
        raise Unavailable(detail) from exc
