"""The audit log of admin writes (suppression put and delete, reputation resume): when, which
key (a fingerprint, never the key), the action, the target and the note."""

import hashlib

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.audit import repository as repo
from otp_service.db.engine import database_session
from otp_service.db.models import AuditEntry
from otp_service.keyset import Page, decode_cursor, page_of


def key_fingerprint(key: bytes) -> str:
    """Names a key in the log without revealing it: the first 16 hex digits of its SHA-256 (an
    admin key has at least 32 characters, so the digest cannot be walked back)."""
    return hashlib.sha256(key).hexdigest()[:16]


class AuditLog:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, *, actor: str, action: str, target: str, note: str | None = None) -> None:
        """For writes outside the database (the reputation guard's pause state lives in Redis);
        database writes append in their own transaction (repository.append)."""
        async with database_session(self._sessions, "audit.record") as session:
            await repo.append(session, actor=actor, action=action, target=target, note=note)

    async def list(self, *, limit: int, cursor: str | None) -> Page[AuditEntry]:
        before = decode_cursor(cursor, "a") if cursor else None
        async with database_session(self._sessions, "audit.list") as session:
            rows = await repo.page(session, before_id=before, limit=limit + 1)
        return page_of(rows, limit, "a", lambda r: r.id)
