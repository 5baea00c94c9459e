"""Sent to verified (otp_sent_to_verified_seconds, and the admin stats' verified): a verify
approved in Redis marks the address's latest email in the deliveries table verified, off the
verify's path, and observes the time since it was sent.

Why a database read and not a sent time kept beside the code in Redis: the deliveries row is
already written at the send and is the one durable record of it, the look-up is one indexed row
(ix_deliveries_email_id) updated per approved verify (a fraction of the requests), and it is never
awaited by the request, so the verify's single Redis round trip stays its only wait. Keeping
the time in Redis would mean a second write per email from the worker into the code's keys.
Under rotate the live code is the latest send's; under reuse the latest email carried the same
code, so the latest sent row is the email the person read."""

import asyncio
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.db.engine import session_scope
from otp_service.db.guard import FAILURES
from otp_service.delivery import repository as deliveries
from otp_service.logs import get_logger
from otp_service.metrics import SENT_TO_VERIFIED

log = get_logger("delivery")


class SentToVerified:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], timeout: float) -> None:
        self._sessions = sessions
        self._timeout = timeout
        self._pending: set[asyncio.Task[None]] = set()  # held, so no task is collected mid-way

    def verified(self, email: str, app: str = "") -> None:
        """Observe the time from the address's latest email (of application `app`) to now, in
        the background."""
        task = asyncio.create_task(self.observe(email, datetime.now(UTC), app))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def observe(self, email: str, at: datetime, app: str = "") -> None:
        try:
            async with asyncio.timeout(self._timeout), session_scope(self._sessions) as session:
                sent = await deliveries.mark_verified(session, email, at, app)
        except FAILURES as exc:  # (TimeoutError among them) a metric is not worth an error
            log.warning("delivery.sent_time_unavailable", extra={"error": type(exc).__name__})
            return
        if sent is None:  # a test recipient, or the row not written yet
            return
        if sent.tzinfo is None:  # SQLite keeps no zone; the column is written in UTC
            sent = sent.replace(tzinfo=UTC)
        SENT_TO_VERIFIED.observe(max(0.0, (at - sent).total_seconds()))

    async def aclose(self) -> None:
        """Wait for the observations under way (shutdown)."""
        await asyncio.gather(*self._pending, return_exceptions=True)
