"""Failed verifies by reason (GET /api/v1/admin/stats, CONTRACT §3), counted without touching the
verify's path: the verify already knows its outcome (otp/service.py tells `failed`, a dict
update in this process, no I/O), and a loop adds what was counted to the verify_failures table
every FLUSH_EVERY seconds, one statement per pass.

Why in process and not in Redis beside the code: the code's keys share the address's hash tag
(one slot on Redis Cluster), so a counter shared by all addresses could not be written by the
verify's script, and a second Redis command per verify would be a second round trip. Why not a
row per verify: a guessing attack would become as many database writes. What is counted and
not yet added when a process dies (at most FLUSH_EVERY seconds of its verifies) is lost; a
process that stops adds it first.

Each failure is attributed when it is added: to the provider of the address's latest sent email
of its application (an indexed look-up, ix_deliveries_email_id, LOOKUP_BATCH addresses a query),
'none' when there is none (an address never emailed, a test recipient), and to its domain part,
which the stats group by registrable domain. At most LOOKUP_LIMIT addresses are looked up a pass,
those with the most failures first; the others' failures count as 'none'. Measured
(bench/run.py, 2 Dec 2026): looking up every address of a wrong-code flood (~4,000 distinct
addresses a second) cost the web process 15% more CPU per verify, so a guessing attack would
have turned this count into database load; with the limit a pass costs the same whatever the
flood, and in ordinary traffic (far fewer failed addresses in 5 s) every failure is attributed."""

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.background import Background, failure
from otp_service.clock import Clock, system_clock
from otp_service.db.engine import database_session
from otp_service.delivery import repository as deliveries
from otp_service.delivery.repository import FailureKey
from otp_service.errors import Unavailable
from otp_service.logs import get_logger
from otp_service.supervise import Beat, Loop
from otp_service.verifies import VerifyFailure

log = get_logger("delivery")

FLUSH_EVERY = 5.0
"""Seconds between two additions to the database: the most a process that dies can lose, and
how late the admin stats may be about another process's verifies."""
FLUSH_AT = 50_000
"""Distinct (application, hour, address, reason) counted that wake the loop early: under a
guessing attack over many addresses, memory stays bounded by the rate of passes."""
LOOKUP_BATCH = 500
"""Addresses per look-up of their latest email's provider."""
LOOKUP_LIMIT = 500
"""Addresses looked up a pass at most (one query); the rest are attributed to 'none'."""

Pending = tuple[str, int, str, VerifyFailure]
"""(application, hour, address, reason)."""


@dataclass(frozen=True, slots=True)
class AppVerifyFailures:
    """One application's view (otp/service.VerifyFailureObserver): what its OtpService tells."""

    counter: "VerifyFailures"
    app: str = ""

    def failed(self, email: str, reason: VerifyFailure) -> None:
        self.counter.failed(email, reason, self.app)


class VerifyFailures(Background):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = system_clock,
        flush_every: float = FLUSH_EVERY,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._every = flush_every
        self._pending: Counter[Pending] = Counter()
        self._full = asyncio.Event()
        self._flushing = asyncio.Lock()
        super().__init__()

    def of(self, app: str = "") -> AppVerifyFailures:
        return AppVerifyFailures(self, app)

    def failed(self, email: str, reason: VerifyFailure, app: str = "") -> None:
        """Count one failed verify now; never waits."""
        self._pending[(app, int(self._clock()) // 3600, email, reason)] += 1
        if len(self._pending) >= FLUSH_AT:
            self._full.set()

    def loops(self) -> dict[str, Loop]:
        return {"verify-failures": self._passes}

    async def _passes(self, beat: Beat) -> None:
        while not self.stopping:
            try:
                async with asyncio.timeout(self._every):
                    await self.until_stopped(self._full)
            except TimeoutError:
                pass
            self._full.clear()
            try:
                await self.flush()
                beat.ok()
            except Unavailable as exc:
                log.warning("delivery.verify_failures_unavailable", extra={"error": failure(exc)})

    async def flush(self) -> int:
        """Add what was counted to the database; how many failures. The database down: they are
        counted again for the next pass (Unavailable raised)."""
        async with self._flushing:  # the loop, the admin stats and the shutdown may each ask
            taken, self._pending = self._pending, Counter()
            if not taken:
                return 0
            try:
                async with database_session(self._sessions, "verify_failures.add") as session:
                    providers = await self._providers(session, taken)
                    counts: Counter[FailureKey] = Counter()
                    for (app, hour, email, reason), n in taken.items():
                        provider = providers.get((app, email), "none")
                        counts[(app, hour, provider, email.rpartition("@")[2], reason.value)] += n
                    await deliveries.add_verify_failures(session, counts)
            except Unavailable:
                self._pending.update(taken)
                raise
            return sum(taken.values())

    @staticmethod
    async def _providers(session: AsyncSession, taken: Counter[Pending]) -> dict[tuple[str, str], str]:
        per_address: Counter[tuple[str, str]] = Counter()
        for (app, _, email, _), n in taken.items():
            per_address[(app, email)] += n
        by_app: dict[str, set[str]] = {}
        for app, email in (key for key, _ in per_address.most_common(LOOKUP_LIMIT)):
            by_app.setdefault(app, set()).add(email)
        found: dict[tuple[str, str], str] = {}
        for app, emails in by_app.items():
            ordered = sorted(emails)
            for start in range(0, len(ordered), LOOKUP_BATCH):
                batch = ordered[start : start + LOOKUP_BATCH]
                for email, provider in (await deliveries.latest_providers(session, app, batch)).items():
                    found[(app, email)] = provider
        return found


@contextlib.asynccontextmanager
async def counting_failures(failures: VerifyFailures) -> AsyncIterator[VerifyFailures]:
    """The loop running while the context is open; at its end, the loop stopped (after its pass
    in progress) and what is left added (the database down: lost, and logged)."""
    task = asyncio.create_task(failures.run(), name="verify-failures")
    try:
        yield failures
    finally:
        failures.stop()
        await task
        try:
            await failures.flush()
        except Unavailable as exc:
            log.warning("delivery.verify_failures_lost", extra={"error": failure(exc)})
