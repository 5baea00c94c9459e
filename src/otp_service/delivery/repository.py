"""Every SQL statement on the deliveries table, among them those that match the provider events
(webhook_events) to the deliveries they answer: the evidence the reputation guard and the usage
report count; and the "not me" reports (CONTRACT §4), kept as events of their own kind matched to
the delivery they report, which count toward the requesting client's block and nothing else."""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import (
    Integer,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch, dialect_insert, dialect_name
from otp_service.db.models import (
    STAGE_BOUNDS,
    STAGES,
    STATS_COUNTS,
    STATS_KEY,
    Delivery,
    VerifyFailureCount,
    WebhookEvent,
    delivery_stats,
)
from otp_service.webhooks.events import KINDS

_COLUMNS = (
    "job_id", "email", "outcome", "provider", "provider_message_id", "queued_at", "attempts", "source_subnet",
    "source_client", "app",
)  # fmt: skip
# Built once per dialect: the worker runs it for every email.
_RECORD: dict[str, Any] = {
    name: insert(Delivery)
    .values({c: bindparam(c) for c in _COLUMNS})
    .on_conflict_do_nothing(index_elements=["job_id"])
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


class DeliveryOutcome(StrEnum):
    """What became of a delivery job: the worker's outcome, the `deliveries` row's `outcome`,
    the `outcome` label of otp_deliveries_total and the admin delivery lookup's."""

    SENT = "sent"
    SUPPRESSED = "suppressed"  # the address is suppressed: not emailed
    SUPERSEDED = "superseded"  # a newer send replaced the code (or it was used): not emailed
    EXPIRED = "expired"  # the code expired before it could be sent
    FAILED = "failed"  # the provider refused it for good
    UNDECRYPTABLE = "undecryptable"  # sealed under another OTP_SECRET_KEY; never recorded (no address)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    job_id: str
    email: str
    outcome: DeliveryOutcome
    provider: str | None
    message_id: str | None
    queued_at: datetime | None = None
    attempts: int = 0
    subnet: str | None = None
    client: str | None = None
    app: str = ""  # the application (CONTRACT §8); '' the service-wide one


async def record_outcomes(db: AsyncSession | AsyncConnection, records: list[DeliveryRecord]) -> None:
    """Idempotent per job: a job reclaimed and handled again does not write a second row.
    One statement for a batch (no select-then-insert, no ORM unit of work)."""
    rows = [
        dict(
            zip(
                _COLUMNS,
                (
                    r.job_id,
                    r.email,
                    r.outcome,
                    r.provider,
                    r.message_id,
                    r.queued_at,
                    r.attempts,
                    r.subnet,
                    r.client,
                    r.app,
                ),
                strict=True,
            )
        )
        for r in records
    ]
    await db.execute(_RECORD[dialect_name(db)], rows)


async def count_sent(
    db: AsyncSession | AsyncConnection, since: datetime, *, provider: str | None = None
) -> int:
    """Emails handed to a provider since `since` (all providers, or one)."""
    query = select(func.count(Delivery.id)).where(
        Delivery.created_at >= since, Delivery.outcome == DeliveryOutcome.SENT
    )
    if provider is not None:
        query = query.where(Delivery.provider == provider)
    return int(await db.scalar(query) or 0)


async def count_app(db: AsyncSession | AsyncConnection, since: datetime, app: str) -> tuple[int, int]:
    """Application `app`'s deliveries recorded since `since` (every outcome: the sends its worker
    handled), and how many of them were handed to a provider."""
    sent = func.sum(case((Delivery.outcome == DeliveryOutcome.SENT, 1), else_=0))
    query = select(func.count(Delivery.id), sent).where(Delivery.created_at >= since, Delivery.app == app)
    handled, emailed = (await db.execute(query)).one()
    return int(handled or 0), int(emailed or 0)


async def page_for(
    db: AsyncSession | AsyncConnection,
    email: str,
    *,
    before_id: int | None,
    limit: int,
    app: str | None = None,
) -> list[Delivery]:
    """An address's deliveries (of every application, or of `app`), newest first, keyset-paginated
    on the id."""
    query = select(Delivery).where(Delivery.email == email).order_by(Delivery.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
    if app is not None:
        query = query.where(Delivery.app == app)
    return list((await db.execute(query)).scalars().all())


async def delivery_for(db: AsyncSession | AsyncConnection, provider: str, message_id: str) -> Delivery | None:
    """The delivery an event is about (the provider's message id), if it was recorded."""
    query = select(Delivery).where(Delivery.provider == provider, Delivery.provider_message_id == message_id)
    return (await db.execute(query.limit(1))).scalars().first()


BOUNCE_TYPES = tuple(event_type for (_, event_type), kind in KINDS.items() if kind == "bounced")
COMPLAINT_TYPES = tuple(event_type for (_, event_type), kind in KINDS.items() if kind == "complained")


@dataclass(frozen=True, slots=True)
class Traced:
    """Bounces or complaints (`count` of them, of one provider event type) matched to the sends
    to one address that one client and subnet requested."""

    event_type: str
    email: str
    client: str | None
    subnet: str | None
    count: int

    @property
    def complaint(self) -> bool:
        return self.event_type in COMPLAINT_TYPES


def _suppressing(since: datetime) -> Any:
    """A bounce counts when it suppressed its recipient (a permanent bounce), as SES's
    reputation bounce rate counts hard bounces only; a transient bounce or a delay does not."""
    return (
        (WebhookEvent.received_at >= since)
        & (WebhookEvent.outcome == "suppressed")
        & WebhookEvent.event_type.in_((*BOUNCE_TYPES, *COMPLAINT_TYPES))
    )


_MATCHED = (Delivery.provider == WebhookEvent.provider) & (
    Delivery.provider_message_id == WebhookEvent.message_id
)
"""An event answers the delivery whose provider and provider message id it names (CONTRACT §6:
only those count; an event that matches no delivery the service made counts nowhere)."""

REPORTS = "not-me"
"""webhook_events.provider of the "not me" reports: no provider's name, so no provider's rates
(traced(), which matches a delivery's own provider) ever count one."""
REPORTED = "reported"

_REPORT_MATCHED = (WebhookEvent.provider == REPORTS) & (Delivery.job_id == WebhookEvent.message_id)
"""A report names its send by the job id (its token's), the delivery row's `job_id`."""


async def record_report(session: AsyncSession, job_id: str) -> bool:
    """Keep a "not me" report of one send, once: False when that send was reported already (the
    unique (provider, event_id) of webhook_events makes a token work once)."""
    row = {"provider": REPORTS, "event_id": job_id, "event_type": REPORTED, "outcome": REPORTED,
           "payload": {}, "message_id": job_id}  # fmt: skip
    stmt = (
        dialect_insert(session, WebhookEvent)
        .values(row)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(WebhookEvent.id)
    )
    return await session.scalar(stmt) is not None


async def delivery_of_job(db: AsyncSession | AsyncConnection, job_id: str) -> Delivery | None:
    query = select(Delivery).where(Delivery.job_id == job_id)
    return (await db.execute(query.limit(1))).scalars().first()


async def traced(
    db: AsyncSession | AsyncConnection,
    since: datetime,
    provider: str | None = None,
    *,
    app: str | None = None,
) -> list[Traced]:
    """The bounces and complaints received since `since` (of one provider, or all; about the
    deliveries of one application, or all), traced through the delivery each answers to its
    address, client and subnet: the one definition of the evidence that the usage report and the
    reputation guard share."""
    query = (
        select(
            WebhookEvent.event_type, Delivery.email, Delivery.source_client, Delivery.source_subnet,
            func.count(WebhookEvent.id),
        )
        .select_from(WebhookEvent)
        .join(Delivery, _MATCHED)
        .where(_suppressing(since))
        .group_by(WebhookEvent.event_type, Delivery.email, Delivery.source_client, Delivery.source_subnet)
    )  # fmt: skip
    if provider is not None:
        query = query.where(WebhookEvent.provider == provider)
    if app is not None:
        query = query.where(Delivery.app == app)
    return [Traced(*row) for row in (await db.execute(query)).all()]


@dataclass(frozen=True, slots=True)
class SourceEvents:
    """A client, its subnet, and the bounces + complaints traced to its sends."""

    client: str
    subnet: str | None
    events: int


async def clients_over(
    db: AsyncSession | AsyncConnection, since: datetime, limit: int, *, client: str | None = None
) -> list[SourceEvents]:
    """The clients (or the one given) whose sends drew at least `limit` bounces + complaints +
    "not me" reports received since `since`."""

    def events(matched: Any, counted: Any) -> Any:
        query = (
            select(Delivery.source_client, Delivery.source_subnet)
            .select_from(WebhookEvent)
            .join(Delivery, matched)
            .where(counted, Delivery.source_client.is_not(None))
        )
        return query if client is None else query.where(Delivery.source_client == client)

    reported = (WebhookEvent.provider == REPORTS) & (WebhookEvent.received_at >= since)
    found = union_all(events(_MATCHED, _suppressing(since)), events(_REPORT_MATCHED, reported)).subquery()
    query = (
        select(found.c.source_client, found.c.source_subnet, func.count())
        .group_by(found.c.source_client, found.c.source_subnet)
        .having(func.count() >= limit)
    )
    return [SourceEvents(str(c), s, int(n)) for c, s, n in (await db.execute(query)).all()]


async def delete_older(db: AsyncSession | AsyncConnection, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` records older than `before`; how many went."""
    return await delete_batch(db, Delivery.id, Delivery.created_at, before, batch)


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """The deliveries of one provider ("none": never handed to one) to one recipient domain (the
    address's part after '@'), or of either (the other ''): how many of each, and per stage the
    cumulative counts under each bound of STAGE_BOUNDS, then the total measured."""

    provider: str
    domain: str
    accepted: int
    sent: int
    delivered: int
    verified: int
    buckets: dict[str, list[int]]


def hour_of(at: datetime) -> int:
    """Hours since the epoch (UTC): delivery_stats' and verify_failures' `hour`."""
    return int(at.timestamp()) // 3600


def _seconds(db: AsyncSession | AsyncConnection, later: Any, earlier: Any) -> Any:
    if dialect_name(db) == "sqlite":  # timestamps are ISO text there
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _domain(db: AsyncSession | AsyncConnection) -> Any:
    if dialect_name(db) == "sqlite":
        return func.substr(Delivery.email, func.instr(Delivery.email, "@") + 1)
    return func.split_part(Delivery.email, "@", 2)


def _hour(db: AsyncSession | AsyncConnection) -> Any:
    """deliveries.created_at's hour, as migration 0010's triggers compute it."""
    if dialect_name(db) == "sqlite":
        return cast(func.strftime("%s", Delivery.created_at), Integer) // 3600
    return cast(func.floor(func.extract("epoch", Delivery.created_at) / 3600), Integer)


def _group(row: Any) -> StatsGroup:
    """(provider, domain, then STATS_COUNTS in order) as a StatsGroup."""
    counts = [int(v or 0) for v in row[2:]]
    per_stage = len(STAGE_BOUNDS) + 1
    buckets = {s: counts[4 + i * per_stage : 4 + (i + 1) * per_stage] for i, s in enumerate(STAGES)}
    accepted, sent, delivered, verified = counts[:4]
    return StatsGroup(str(row[0]), str(row[1]), accepted, sent, delivered, verified, buckets)


async def stats_groups(
    db: AsyncSession | AsyncConnection, since_hour: int, *, app: str = ""
) -> list[StatsGroup]:
    """The recount: the same groups as rollup_groups, from the deliveries rows themselves, in one
    pass over the window's rows (ix_deliveries_created_at). The rule migration 0010's triggers
    count by, in SQLAlchemy; tests/test_admin_stats.py holds the two equal. Each row's three
    durations are computed once, in a subquery that OFFSET 0 keeps the planner from folding into
    the aggregate (which would compute each again for every bucket it is compared with)."""
    d, sent = Delivery, Delivery.outcome == DeliveryOutcome.SENT
    since = datetime.fromtimestamp(since_hour * 3600, UTC)
    rows = (
        select(
            func.coalesce(d.provider, "none").label("provider"), _domain(db).label("domain"),
            case((sent, 1), else_=0).label("sent"),
            case((d.delivered_at.is_not(None), 1), else_=0).label("delivered"),
            case((d.verified_at.is_not(None), 1), else_=0).label("verified"),
            case((sent, _seconds(db, d.created_at, d.queued_at))).label("accepted_to_sent"),
            _seconds(db, d.delivered_at, d.created_at).label("sent_to_delivered"),
            _seconds(db, d.verified_at, d.created_at).label("sent_to_verified"),
        )
        # created_at bounds the index range; the hour decides, as the triggers do (SQLite
        # compares the text, and a server-default time carries no fraction of a second).
        .where(d.created_at >= since - timedelta(seconds=1), _hour(db) >= since_hour, d.app == app)
        .offset(0)
        .subquery()
    )  # fmt: skip
    columns: list[Any] = []
    for stage in STAGES:
        seconds = rows.c[stage]
        columns += [func.sum(case((seconds <= bound, 1), else_=0)) for bound in STAGE_BOUNDS]
        columns.append(func.count(seconds))
    query = select(
        rows.c.provider, rows.c.domain, func.count(), func.sum(rows.c.sent), func.sum(rows.c.delivered),
        func.sum(rows.c.verified), *columns,
    ).group_by(rows.c.provider, rows.c.domain)  # fmt: skip
    return [_group(row) for row in (await db.execute(query)).all()]


async def rollup_groups(
    db: AsyncSession | AsyncConnection,
    since_hour: int,
    *,
    app: str = "",
    by: Sequence[Literal["provider", "domain"]] = ("provider", "domain"),
) -> list[StatsGroup]:
    """The application's deliveries created from the hour `since_hour` on, grouped `by` provider,
    domain or both ('' in a group's field not grouped by), summed from delivery_stats
    (ix_delivery_stats_app): at most one row per key and hour once compacted, whatever the
    number of deliveries."""
    t = delivery_stats
    keys = [t.c[name] if name in by else literal("") for name in ("provider", "domain")]
    query = (
        select(*keys, *(func.sum(t.c[name]) for name in STATS_COUNTS))
        .where(t.c.app == app, t.c.hour >= since_hour)
        .group_by(*(t.c[name] for name in by))
    )
    return [_group(row) for row in (await db.execute(query)).all()]


_COMPACTING = 0x0D15_7A75
"""PostgreSQL advisory lock of the compaction: one at a time across workers (two would wait on
each other's rows, and could deadlock)."""


async def compact_stats(db: AsyncSession | AsyncConnection, *, keys: int) -> int | None:
    """Sum the rows of up to `keys` keys of delivery_stats that have changes into one row each
    (state 1); how many keys, or None when another compaction is under way. Exact whatever runs
    beside it: the rows summed are exactly those claimed (state 2) by this transaction, and a
    change appended meanwhile is left for the next. A key whose sum is all zero (a retention
    purge took its hour) keeps no row. Every condition names `state <> 1`, the partial index's
    predicate, which SQLite uses only when it is stated."""
    if dialect_name(db) == "postgresql" and not await db.scalar(
        select(func.pg_try_advisory_xact_lock(_COMPACTING))
    ):
        return None
    t = delivery_stats
    key = (t.c.hour, t.c.app, t.c.provider, t.c.domain)
    changed = select(*key).where(t.c.state == 0, t.c.state != 1).distinct().limit(keys)
    claimed = await db.execute(update(t).where(t.c.state != 1, tuple_(*key).in_(changed)).values(state=2))
    if not getattr(claimed, "rowcount", 0):
        return 0
    claimed_keys = select(*key).where(t.c.state == 2, t.c.state != 1).distinct().subquery()
    done = int(await db.scalar(select(func.count()).select_from(claimed_keys)) or 0)
    sums = [func.sum(t.c[name]) for name in STATS_COUNTS]
    merged = (
        select(*key, literal(1), *sums)
        .where(t.c.state == 2, t.c.state != 1)
        .group_by(*key)
        .having(or_(*(total != 0 for total in sums)))
    )
    await db.execute(t.insert().from_select([*STATS_KEY, "state", *STATS_COUNTS], merged))
    await db.execute(delete(t).where(t.c.state == 2, t.c.state != 1))
    return done


async def mark_verified(
    db: AsyncSession | AsyncConnection, email: str, at: datetime, app: str = ""
) -> datetime | None:
    """Mark the address's latest sent delivery of application `app` verified (its code was just
    approved); when it was sent, or None when no email of it is recorded (a test recipient's)."""
    latest = (
        select(Delivery.id)
        .where(Delivery.email == email, Delivery.outcome == DeliveryOutcome.SENT, Delivery.app == app)
        .order_by(Delivery.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    stmt = update(Delivery).where(Delivery.id == latest).values(verified_at=at).returning(Delivery.created_at)
    return (await db.execute(stmt)).scalar()


async def stats_events(
    db: AsyncSession | AsyncConnection, since: datetime, *, app: str = ""
) -> list[tuple[str, str, str, int]]:
    """Bounces and complaints received since `since`, matched to the application's deliveries:
    (provider, recipient domain, "bounced" or "complained", count). Few rows: it starts from the
    events (ix_webhook_events_received_at) and finds each delivery by its message id."""
    kind = case((WebhookEvent.event_type.in_(COMPLAINT_TYPES), "complained"), else_="bounced")
    domain = _domain(db)
    query = (
        select(Delivery.provider, domain, kind, func.count())
        .select_from(WebhookEvent)
        .join(Delivery, _MATCHED)
        .where(
            WebhookEvent.received_at >= since,
            WebhookEvent.event_type.in_((*BOUNCE_TYPES, *COMPLAINT_TYPES)),
            Delivery.app == app,
        )
        .group_by(Delivery.provider, domain, kind)
    )
    return [(str(p), str(d), str(k), int(n)) for p, d, k, n in (await db.execute(query)).all()]


FailureKey = tuple[str, int, str, str, str]
"""verify_failures' key: (app, hour, provider, domain, reason)."""


async def latest_providers(
    db: AsyncSession | AsyncConnection, app: str, emails: Collection[str]
) -> dict[str, str]:
    """The provider of each address's latest sent email of the application (ix_deliveries_email_id);
    an address with none is left out."""
    latest = (
        select(func.max(Delivery.id))
        .where(Delivery.email.in_(emails), Delivery.app == app, Delivery.outcome == DeliveryOutcome.SENT)
        .group_by(Delivery.email)
    )
    query = select(Delivery.email, Delivery.provider).where(Delivery.id.in_(latest))
    return {str(e): str(p or "none") for e, p in (await db.execute(query)).all()}


async def add_verify_failures(db: AsyncSession | AsyncConnection, counts: Mapping[FailureKey, int]) -> None:
    """Add `counts` to verify_failures, one statement, keys in order (two processes adding the
    same keys lock them in the same order, so never wait on each other in a cycle)."""
    if not counts:
        return
    rows = [
        {"app": a, "hour": h, "provider": p, "domain": d, "reason": r, "count": n}
        for (a, h, p, d, r), n in sorted(counts.items())
    ]
    stmt = dialect_insert(db, VerifyFailureCount).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["app", "hour", "provider", "domain", "reason"],
        set_={"count": VerifyFailureCount.count + stmt.excluded["count"]},
    )
    await db.execute(stmt)


async def verify_failures(
    db: AsyncSession | AsyncConnection, since_hour: int, *, app: str = ""
) -> list[tuple[str, str, str, int]]:
    """The application's failed verifies from the hour `since_hour` on (uq_verify_failures_app):
    (provider, domain, reason, count)."""
    v = VerifyFailureCount
    query = (
        select(v.provider, v.domain, v.reason, func.sum(v.count))
        .where(v.app == app, v.hour >= since_hour)
        .group_by(v.provider, v.domain, v.reason)
    )
    return [(str(p), str(d), str(r), int(n)) for p, d, r, n in (await db.execute(query)).all()]


async def delete_verify_failures_older(
    db: AsyncSession | AsyncConnection, before: datetime, batch: int
) -> int:
    """Retention: up to `batch` hours of counts wholly before `before`; how many rows went."""
    return await delete_batch(db, VerifyFailureCount.id, VerifyFailureCount.hour, hour_of(before), batch)
