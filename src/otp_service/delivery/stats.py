"""GET /api/v1/admin/stats (CONTRACT §3): a window's sends, by provider and by recipient domain
(the 20 largest, the rest as `other`), from the deliveries table alone.

Each stage's p50 and p95 are interpolated within the bucket of delivery/repository.STAGE_BOUNDS
they fall in (as Prometheus's histogram_quantile does): one scan answers every group, and the
groups merged into `other` and the totals add up exactly, which exact percentiles would not."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from otp_service.clock import Clock, system_clock
from otp_service.db.engine import database_session
from otp_service.delivery import repository as deliveries
from otp_service.delivery.repository import STAGE_BOUNDS, STAGES, StatsGroup

TOP_DOMAINS = 20
OTHER = "other"


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

    @property
    def conversion(self) -> float | None:
        return self.verified / self.sent if self.sent else None

    def percentiles(self, stage: str) -> tuple[float | None, float | None]:
        return quantile(0.5, self.buckets[stage]), quantile(0.95, self.buckets[stage])


@dataclass(frozen=True, slots=True)
class Stats:
    hours: int
    since: datetime
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
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], clock: Clock = system_clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def stats(self, hours: int) -> Stats:
        since = datetime.fromtimestamp(self._clock(), UTC) - timedelta(hours=hours)
        async with database_session(self._sessions, "admin.stats") as session:
            groups = await deliveries.stats_groups(session, since)
            events = await deliveries.stats_events(session, since)
        return summarise(hours, since, groups, events)


def summarise(
    hours: int, since: datetime, groups: Iterable[StatsGroup], events: Iterable[tuple[str, str, str, int]]
) -> Stats:
    total, by_provider, by_domain = Tally(), dict[str, Tally](), dict[str, Tally]()
    for group in groups:
        for tally in (total, by_provider.setdefault(group.provider, Tally()),
                      by_domain.setdefault(group.domain, Tally())):  # fmt: skip
            tally.add(group)
    for provider, domain, kind, count in events:
        for tally in (
            total,
            by_provider.setdefault(provider, Tally()),
            by_domain.setdefault(domain, Tally()),
        ):
            if kind == "complained":
                tally.complained += count
            else:
                tally.bounced += count
    return Stats(hours, since, total, by_provider, _top(by_domain))
