"""Suppressions by hand: the admin API's list, look-up, put and delete, each of the exact address
given (normalised, lower-case; CONTRACT §6): `victim+zz@yahoo.com` is its own record."""

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.audit import repository as audit
from otp_service.db.engine import database_session
from otp_service.db.models import Suppression
from otp_service.errors import InvalidRequest, NotFound
from otp_service.keyset import Page, decode_cursor, page_of
from otp_service.suppression import repository as repo
from otp_service.validation.address import normalize_email


class SuppressionService:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @staticmethod
    def _address(raw: str) -> str:
        try:
            return normalize_email(raw)
        except Exception:
            raise InvalidRequest("email: not a valid address") from None

    async def list(self, *, email: str | None, limit: int, cursor: str | None) -> Page[Suppression]:
        before = decode_cursor(cursor, "s") if cursor else None
        async with database_session(self._sessions) as session:
            rows = await repo.page(session, email=(email or "").strip().lower() or None, before_id=before,
                                   limit=limit + 1)  # fmt: skip
        return page_of(rows, limit, "s", lambda r: r.id)

    async def get(self, raw: str) -> Suppression:
        email = self._address(raw)
        async with database_session(self._sessions) as session:
            row = await repo.get(session, email)
        if row is None:
            raise NotFound(f"{email} is not suppressed")
        return row

    async def put(self, raw: str, *, reason: str, note: str | None, actor: str) -> tuple[Suppression, bool]:
        """(record, created). Created or not is decided by the insert itself (the unique email),
        so two concurrent PUTs give one 201 and one 200. An existing record keeps its reason,
        source and provider fields; the note is replaced when one is given. Audited in the same
        transaction."""
        email = self._address(raw)
        async with database_session(self._sessions) as session:
            created = await repo.put_manual(session, email=email, reason=reason, note=note)
            await audit.append(session, actor=actor, action="suppression.put", target=email, note=note)
            row = await repo.get(session, email)
        assert row is not None
        return row, created

    async def delete(self, raw: str, *, actor: str) -> None:
        email = self._address(raw)
        async with database_session(self._sessions) as session:
            removed = await repo.remove(session, email)
            if removed:
                await audit.append(session, actor=actor, action="suppression.delete", target=email, note=None)
        if not removed:
            raise NotFound(f"{email} is not suppressed")
