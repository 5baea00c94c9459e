"""Suppressions by hand: the admin API's list, look-up, put and delete."""

import base64
import binascii
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.db.engine import database_session
from otp_service.db.models import Suppression
from otp_service.errors import InvalidRequest, NotFound
from otp_service.suppression import repository as repo
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


class SuppressionService:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @staticmethod
    def _address(raw: str) -> str:
        try:
            return normalize_email(raw)
        except Exception:
            raise InvalidRequest("email: not a valid address") from None

    async def list(self, *, email: str | None, limit: int, cursor: str | None) -> Page:
        before = decode_cursor(cursor) if cursor else None
        async with database_session(self._sessions) as session:
            rows = await repo.page(session, email=(email or "").strip().lower() or None, before_id=before,
                                   limit=limit + 1)  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)

    async def get(self, raw: str) -> Suppression:
        email = self._address(raw)
        async with database_session(self._sessions) as session:
            row = await repo.get(session, email)
        if row is None:
            raise NotFound(f"{email} is not suppressed")
        return row

    async def put(self, raw: str, *, reason: str, note: str | None) -> tuple[Suppression, bool]:
        """(record, created)."""
        email = self._address(raw)
        async with database_session(self._sessions) as session:
            existed = await repo.get(session, email) is not None
            await repo.upsert(session, email=email, reason=reason, source="admin", note=note)
        async with database_session(self._sessions) as session:
            row = await repo.get(session, email)
        assert row is not None
        return row, not existed

    async def delete(self, raw: str) -> None:
        email = self._address(raw)
        async with database_session(self._sessions) as session:
            removed = await repo.remove(session, email)
        if not removed:
            raise NotFound(f"{email} is not suppressed")
