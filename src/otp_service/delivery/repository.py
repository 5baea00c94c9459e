"""Every SQL statement on the deliveries table, among them those that match the provider events
(webhook_events) to the deliveries they answer: the evidence the reputation guard and the usage
report count; and the "not me" reports (CONTRACT §4), kept as events of their own kind matched to
the delivery they report, which count toward the requesting client's block and nothing else."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, case, func, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from otp_service.db.engine import delete_batch, dialect_insert, dialect_name
from otp_service.db.models import Delivery, WebhookEvent
from otp_service.webhooks.events import KINDS

_COLUMNS = (
    "job_id", "email", "outcome", "provider", "provider_message_id", "queued_at", "attempts", "source_subnet",
    "source_client",
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


async def page_for(
    db: AsyncSession | AsyncConnection, email: str, *, before_id: int | None, limit: int
) -> list[Delivery]:
    """An address's deliveries, newest first, keyset-paginated on the id."""
    query = select(Delivery).where(Delivery.email == email).order_by(Delivery.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
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
    db: AsyncSession | AsyncConnection, since: datetime, provider: str | None = None
) -> list[Traced]:
    """The bounces and complaints received since `since` (of one provider, or all), traced
    through the delivery each answers to its address, client and subnet: the one definition of
    the evidence that the usage report and the reputation guard share."""
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


STAGE_BOUNDS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds (seconds) of the buckets the admin stats count each stage's durations in: a
quantile is interpolated within its bucket (as Prometheus's histogram_quantile), so one scan
answers every group and groups add up exactly (the 20 largest domains and `other`)."""

STAGES = ("accepted_to_sent", "sent_to_delivered", "sent_to_verified")


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """The window's deliveries of one provider ("none": never handed to one) to one recipient
    domain: how many of each, and per stage the cumulative counts under each bound of
    STAGE_BOUNDS, then the total measured."""

    provider: str
    domain: str
    accepted: int
    sent: int
    delivered: int
    verified: int
    buckets: dict[str, list[int]]


def _seconds(db: AsyncSession | AsyncConnection, later: Any, earlier: Any) -> Any:
    if dialect_name(db) == "sqlite":  # timestamps are ISO text there
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _domain(db: AsyncSession | AsyncConnection) -> Any:
    if dialect_name(db) == "sqlite":
        return func.substr(Delivery.email, func.instr(Delivery.email, "@") + 1)
    return func.split_part(Delivery.email, "@", 2)


async def stats_groups(db: AsyncSession | AsyncConnection, since: datetime) -> list[StatsGroup]:
    """One pass over the window's rows (ix_deliveries_created_at), grouped by provider and
    recipient domain (the address's domain part). Each row's three durations are computed once,
    in a subquery that OFFSET 0 keeps the planner from folding into the aggregate (which would
    compute each again for every bucket it is compared with)."""
    d, sent = Delivery, Delivery.outcome == DeliveryOutcome.SENT
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
        .where(d.created_at >= since)
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
    per_stage = len(STAGE_BOUNDS) + 1
    groups = []
    for row in (await db.execute(query)).all():
        counts = [int(v or 0) for v in row[6:]]
        buckets = {s: counts[i * per_stage : (i + 1) * per_stage] for i, s in enumerate(STAGES)}
        groups.append(StatsGroup(str(row[0]), str(row[1]), int(row[2]), int(row[3] or 0), int(row[4]),
                                 int(row[5]), buckets))  # fmt: skip
    return groups


async def mark_verified(db: AsyncSession | AsyncConnection, email: str, at: datetime) -> datetime | None:
    """Mark the address's latest sent delivery verified (its code was just approved); when it
    was sent, or None when no email of it is recorded (a test recipient's)."""
    latest = (
        select(Delivery.id)
        .where(Delivery.email == email, Delivery.outcome == DeliveryOutcome.SENT)
        .order_by(Delivery.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    stmt = update(Delivery).where(Delivery.id == latest).values(verified_at=at).returning(Delivery.created_at)
    return (await db.execute(stmt)).scalar()


async def stats_events(
    db: AsyncSession | AsyncConnection, since: datetime
) -> list[tuple[str, str, str, int]]:
    """Bounces and complaints received since `since`, matched to their deliveries: (provider,
    recipient domain, "bounced" or "complained", count). Few rows: it starts from the events
    (ix_webhook_events_received_at) and finds each delivery by its message id."""
    kind = case((WebhookEvent.event_type.in_(COMPLAINT_TYPES), "complained"), else_="bounced")
    domain = _domain(db)
    query = (
        select(Delivery.provider, domain, kind, func.count())
        .select_from(WebhookEvent)
        .join(Delivery, _MATCHED)
        .where(
            WebhookEvent.received_at >= since, WebhookEvent.event_type.in_((*BOUNCE_TYPES, *COMPLAINT_TYPES))
        )
        .group_by(Delivery.provider, domain, kind)
    )
    return [(str(p), str(d), str(k), int(n)) for p, d, k, n in (await db.execute(query)).all()]
