"""The operators' view: suppressions by hand, and usage against the limits."""

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.db.engine import session_scope
from otp_service.db.models import Suppression
from otp_service.errors import InvalidRequest, NotFound, Unavailable
from otp_service.limits.base import LimitStore
from otp_service.suppression import repository as repo
from otp_service.suppression.service import upsert_suppression
from otp_service.validation.address import normalize_email


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"s:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "s":
            raise ValueError(cursor)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor: not a cursor this service issued") from None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Suppression]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    sent_24h: dict[str, int]
    limits: dict[str, int]
    delivered_24h: int
    sent_last_minute: int
    send_rate_limit: int
    bounces_24h: int
    complaints_24h: int


@contextlib.asynccontextmanager
async def _database(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose database errors are the contract's 503."""
    try:
        async with session_scope(factory) as session:
            yield session
    except SQLAlchemyError as exc:
        raise Unavailable("The database is not answering") from exc


class AdminService:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], store: LimitStore, global_limits: dict[str, int],
        send_rate: int,
    ) -> None:  # fmt: skip
        self._sessions = sessions
        self._store = store
        self._limits = global_limits
        self._send_rate = send_rate

    @staticmethod
    def _address(raw: str) -> str:
        try:
            return normalize_email(raw)
        except Exception:
            raise InvalidRequest("email: not a valid address") from None

    async def list(self, *, email: str | None, limit: int, cursor: str | None) -> Page:
        before = decode_cursor(cursor) if cursor else None
        async with _database(self._sessions) as session:
            rows = await repo.page(session, email=(email or "").strip().lower() or None, before_id=before,
                                   limit=limit + 1)  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)

    async def get(self, raw: str) -> Suppression:
        email = self._address(raw)
        async with _database(self._sessions) as session:
            row = await repo.get(session, email)
        if row is None:
            raise NotFound(f"{email} is not suppressed")
        return row

    async def put(self, raw: str, *, reason: str, note: str | None) -> tuple[Suppression, bool]:
        """(record, created)."""
        email = self._address(raw)
        async with _database(self._sessions) as session:
            existed = await repo.get(session, email) is not None
            await upsert_suppression(session, email=email, reason=reason, source="admin", note=note)
        async with _database(self._sessions) as session:
            row = await repo.get(session, email)
        assert row is not None
        return row, not existed

    async def delete(self, raw: str) -> None:
        email = self._address(raw)
        async with _database(self._sessions) as session:
            removed = await repo.remove(session, email)
        if not removed:
            raise NotFound(f"{email} is not suppressed")

    async def usage(self) -> Usage:
        now = datetime.now(UTC)
        day, minute = now - timedelta(days=1), now - timedelta(minutes=1)
        sent = {channel: await self._store.global_usage(channel) for channel in self._limits}
        async with _database(self._sessions) as session:
            delivered = await repo.deliveries_since(session, day)
            last_minute = await repo.deliveries_since(session, minute)
            bounces = await repo.events_since(session, day, repo.BOUNCE_TYPES)
            complaints = await repo.events_since(session, day, repo.COMPLAINT_TYPES)
        return Usage(sent, dict(self._limits), delivered, last_minute, self._send_rate, bounces, complaints)
