"""GET /api/v1/admin/stats (CONTRACT §3): a window's sends, failed verifies by reason, bounces and
complaints of one application, in total, by provider and by registrable recipient domain (the
20 largest, the rest as `other`).

The window is whole hours: from the start of the hour `hours` hours ago to now (the answer's
`since`). The deliveries' counts and stage buckets come from their hourly roll-up
(delivery_stats, kept exact by the database's triggers, migration 0010), so a window reads at
most one row per hour, provider and domain, however many emails it holds; the failed verifies
from verify_failures (delivery/verify_failures.py), by the hour too; bounces and complaints
from the provider events received since `since`, matched to their deliveries.

Each stage's p50 and p95 are interpolated within the bucket of db/models.STAGE_BOUNDS they
fall in (as Prometheus's histogram_quantile does): the groups merged into a registrable
domain, into `other` and into the totals add up exactly, which exact percentiles would not.
Domains are grouped by registrable domain as the answer is built (the rows keep the address's
part after '@'), so `mail.example.co.uk` and `example.co.uk` are one row, by the ICANN section of
the Public Suffix List the recipient-domain limit uses (CONTRACT §6)."""

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.background import Background
from otp_service.clock import Clock, system_clock
from otp_service.db.engine import database_session
from otp_service.db.models import STAGE_BOUNDS, STAGES
from otp_service.delivery import repository as deliveries
from otp_service.delivery.repository import StatsGroup
from otp_service.delivery.verify_failures import VerifyFailures
from otp_service.errors import NotFound
from otp_service.logs import get_logger
from otp_service.supervise import Loop
from otp_service.validation.domains import registrable
from otp_service.verifies import VerifyFailure

log = get_logger("delivery")

Row = TypeVar("Row")

TOP_DOMAINS = 20
OTHER = "other"
COMPACT_EVERY = 30.0
"""Seconds between compactions: the changes a window's read sums beside the compacted rows are
at most this old (a few thousand rows at a million emails a day)."""
COMPACT_KEYS = 5_000
"""Keys summed per transaction: a backlog (a worker that was down) is worked off in short ones."""


def quantile(q: float, cumulative: list[int]) -> float | None:
    """The q-quantile of durations counted as `cumulative` (counts under each bound of
    STAGE_BOUNDS, then the total); None when nothing was measured. Past the last bound: that
    bound (the value is known only to exceed it)."""
    total = cumulative[-1]
    if total == 0:
        return None
    rank = q * total
    lower, below = 0.0, 0
    for bound, count in zip(STAGE_BOUNDS, cumulative, strict=False):
        if count >= rank and count > below:
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = float(bound), count
    return float(STAGE_BOUNDS[-1])


_REASONS = tuple(VerifyFailure)  # iterating an Enum class is slow, and a Tally is made per domain


def _no_failures() -> dict[VerifyFailure, int]:
    return dict.fromkeys(_REASONS, 0)


@dataclass(slots=True)
class Tally:
    accepted: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    complained: int = 0
    verified: int = 0
    buckets: dict[str, list[int]] = field(
        default_factory=lambda: {s: [0] * (len(STAGE_BOUNDS) + 1) for s in STAGES}
    )
    failures: dict[VerifyFailure, int] = field(default_factory=_no_failures)

    def add(self, group: StatsGroup) -> None:
        self.accepted += group.accepted
        self.sent += group.sent
        self.delivered += group.delivered
        self.verified += group.verified
        for stage, counts in group.buckets.items():
            self.buckets[stage] = [a + b for a, b in zip(self.buckets[stage], counts, strict=True)]

    def merge(self, other: "Tally") -> None:
        self.accepted += other.accepted
        self.sent += other.sent
        self.delivered += other.delivered
        self.bounced += other.bounced
        self.complained += other.complained
        self.verified += other.verified
        for stage, counts in other.buckets.items():
            self.buckets[stage] = [a + b for a, b in zip(self.buckets[stage], counts, strict=True)]
        for reason, n in other.failures.items():
            self.failures[reason] += n

    @property
    def conversion(self) -> float | None:
        return self.verified / self.sent if self.sent else None

    def percentiles(self, stage: str) -> tuple[float | None, float | None]:
        return quantile(0.5, self.buckets[stage]), quantile(0.95, self.buckets[stage])


@dataclass(frozen=True, slots=True)
class Stats:
    hours: int
    since: datetime
    app: str
    total: Tally
    by_provider: dict[str, Tally]
    by_domain: dict[str, Tally]


def _top(tallies: dict[str, Tally]) -> dict[str, Tally]:
    """The TOP_DOMAINS largest by accepted sends, the rest merged as `other`."""
    ranked = sorted(tallies.items(), key=lambda kv: (-kv[1].accepted, kv[0]))
    top = dict(ranked[:TOP_DOMAINS])
    if len(ranked) > TOP_DOMAINS:
        rest = Tally()
        for _, tally in ranked[TOP_DOMAINS:]:
            rest.merge(tally)
        top[OTHER] = rest
    return top


class DeliveryStats:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = system_clock,
        failures: VerifyFailures | None = None,
        apps: Collection[str] | None = None,
    ) -> None:
        """`failures`: this process's counter, added to the database before each answer, so that
        an answer holds every verify this process refused. `apps`: the application ids that exist
        ('' among them); None: any id is asked about as given."""
        self._sessions = sessions
        self._clock = clock
        self._failures = failures
        self._apps = apps

    async def stats(self, hours: int, app: str = "") -> Stats:
        if self._apps is not None and app not in self._apps:
            raise NotFound(f"no application {app!r}")
        if self._failures is not None:
            await self._failures.flush()
        since_hour = int(self._clock()) // 3600 - hours
        since = datetime.fromtimestamp(since_hour * 3600, UTC)
        # Side by side, each on a connection of its own: the roll-up's sums and the events' join
        # to their deliveries (ix_webhook_events_received_at) take about as long as each other.
        providers, domains, events, failures = await asyncio.gather(
            self._read(deliveries.rollup_groups, since_hour, app, by=("provider",)),
            self._read(deliveries.rollup_groups, since_hour, app, by=("domain",)),
            self._read(deliveries.stats_events, since, app),
            self._read(deliveries.verify_failures, since_hour, app),
        )
        return summarise(hours, since, app, providers, domains, events, failures)

    async def _read(
        self, query: Callable[..., Awaitable[list[Row]]], since: int | datetime, app: str, **options: object
    ) -> list[Row]:
        async with database_session(self._sessions, "admin.stats") as session:
            return await query(session, since, app=app, **options)


def summarise(
    hours: int,
    since: datetime,
    app: str,
    providers: Iterable[StatsGroup],
    domains: Iterable[StatsGroup],
    events: Iterable[tuple[str, str, str, int]],
    failures: Iterable[tuple[str, str, str, int]] = (),
) -> Stats:
    """The answer from the rows: the deliveries grouped by provider (whose sum is the total) and
    by domain part, each counted under its registrable domain; events and failures by both."""
    total, by_provider, by_domain = Tally(), dict[str, Tally](), dict[str, Tally]()

    def tallies(provider: str, domain: str) -> tuple[Tally, Tally, Tally]:
        return (
            total,
            by_provider.setdefault(provider, Tally()),
            by_domain.setdefault(registrable(domain), Tally()),
        )

    for group in providers:
        total.add(group)
        by_provider.setdefault(group.provider, Tally()).add(group)
    for group in domains:
        by_domain.setdefault(registrable(group.domain), Tally()).add(group)
    for provider, domain, kind, count in events:
        for tally in tallies(provider, domain):
            if kind == "complained":
                tally.complained += count
            else:
                tally.bounced += count
    for provider, domain, reason, count in failures:
        for tally in tallies(provider, domain):
            tally.failures[VerifyFailure(reason)] += count
    return Stats(hours, since, app, total, by_provider, _top(by_domain))


class StatsCompaction(Background):
    """The worker's loop that sums delivery_stats' changes into one row per key: the answer is
    exact without it (it sums every row), and as fast as the roll-up is small with it."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        every: float = COMPACT_EVERY,
        keys: int = COMPACT_KEYS,
    ) -> None:
        self._sessions = sessions
        self._every = every
        self._keys = keys
        super().__init__()

    def loops(self) -> dict[str, Loop]:
        return {"stats-compaction": self.every(self._every, self.compact, failed="stats.compaction_failed")}

    async def compact(self) -> int:
        """Compact every key with changes, COMPACT_KEYS per transaction; how many keys (another
        worker's compaction under way: none, it does them)."""
        done = 0
        while not self.stopping:
            async with database_session(self._sessions, "stats.compact") as session:
                n = await deliveries.compact_stats(session, keys=self._keys)
            done += n or 0
            if n is None or n < self._keys:
                break
        return done
