"""SQLAlchemy 2 models. Every query lives in a repository module next to its domain."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so migrations are the same on PostgreSQL and SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Suppression(Base):
    """An address the service never emails again (until an operator deletes the row): the exact
    address the bounce, complaint or operator named, never another spelling of its mailbox
    (CONTRACT §6)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        CheckConstraint("email = lower(email)", name="email_lower"),
        CheckConstraint("reason IN ('bounce', 'complaint', 'manual')", name="reason"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    reason: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))  # resend | ses | admin
    note: Mapped[str | None] = mapped_column(Text, default=None)
    provider_event_id: Mapped[str | None] = mapped_column(String(255), default=None)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    bounce_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    complaint_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookEvent(Base):
    """One row per provider event processed: the unique key makes handling exactly-once."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event_id"),
        Index("ix_webhook_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The provider's id of the email the event is about: matches it to its delivery.
    message_id: Mapped[str | None] = mapped_column(String(255), default=None, index=True)


class Delivery(Base):
    """The outcome of one delivery job, with the provider's message id to match later bounces."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", name="uq_deliveries_job_id"),
        Index("ix_deliveries_provider_message_id", "provider_message_id"),
        Index("ix_deliveries_created_at", "created_at"),
        Index("ix_deliveries_email_id", "email", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    outcome: Mapped[str] = mapped_column(String(16))  # delivery.repository.DeliveryOutcome
    provider: Mapped[str | None] = mapped_column(String(32), default=None)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The client (net.Client.key) and subnet that requested the send: a bounce or complaint is
    # traced to them (CONTRACT §6). Null in rows from before migrations 0006 and 0008.
    source_subnet: Mapped[str | None] = mapped_column(String(64), default=None)
    source_client: Mapped[str | None] = mapped_column(String(64), default=None)
    # When the provider reported it delivered, and when its code was verified (issue 31, the
    # admin stats): null until then, and in rows from before migration 0009.
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # The application that sent it (CONTRACT §8); '' is the service-wide one, and every row from
    # before migration 0010.
    app: Mapped[str] = mapped_column(String(32), default="", server_default="")


STAGES = ("accepted_to_sent", "sent_to_delivered", "sent_to_verified")
"""The stages the admin stats time (CONTRACT §3): from the 202 to the provider's acceptance
(deliveries.queued_at to created_at, sent rows only), from there to the provider's delivered
event (delivered_at) and to the approved verify (verified_at)."""

STAGE_BOUNDS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds (seconds) of the buckets the admin stats count each stage's durations in: a
quantile is interpolated within its bucket (as Prometheus's histogram_quantile), so the hourly
roll-up answers every group and groups add up exactly (the 20 largest domains and `other`).
Migration 0010's triggers count with these bounds: a change needs a migration that rebuilds
delivery_stats."""

STATS_KEY = ("hour", "app", "provider", "domain")
STATS_COUNTS = (
    "accepted", "sent", "delivered", "verified",
    *(f"{stage}_{i}" for stage in STAGES for i in [*range(len(STAGE_BOUNDS)), "n"]),
)  # fmt: skip
"""delivery_stats' counts: rows, sent, delivered, verified, and per stage the durations at
most each bound (`<stage>_<i>`, STAGE_BOUNDS[i]) and all measured (`<stage>_n`)."""

_UNMERGED = text("state <> 1")
delivery_stats = Table(
    "delivery_stats",
    Base.metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # Hours since the epoch (UTC) of the rows' created_at; the rows' app, provider ('none':
    # never handed to one) and the part of the address after '@' (the answer groups those by
    # registrable domain, so a newer Public Suffix List regroups old hours too).
    Column("hour", Integer, nullable=False),
    Column("app", String(32), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("domain", String(255), nullable=False),
    # 0: a change written by deliveries' triggers, 1: the sum of one key's changes (compaction),
    # 2: being summed (inside one compaction's transaction only).
    Column("state", SmallInteger, nullable=False, server_default="0"),
    *(Column(name, Integer, nullable=False, server_default="0") for name in STATS_COUNTS),
    Index("ix_delivery_stats_app", "app", "hour", "provider", "domain"),
    Index("ix_delivery_stats_unmerged", "state", postgresql_where=_UNMERGED, sqlite_where=_UNMERGED),
)
"""The deliveries' hourly roll-up (GET /api/v1/admin/stats): what each row of deliveries adds,
kept exact by the database itself (migration 0010's triggers append each insert's, update's and
delete's difference, so every writer is counted, a retention purge included), and compacted to
one row per key by the worker (delivery/stats.StatsCompaction). A key's counts are the sum of
its rows, whatever their state."""


class VerifyFailureCount(Base):
    """Failed verifies by reason (otp_service/verifies.py), per hour, application, provider of
    the address's latest email ('none': none recorded) and domain part of the address: counted
    in each web process and added here every few seconds (delivery/verify_failures.py)."""

    __tablename__ = "verify_failures"
    __table_args__ = (
        UniqueConstraint("app", "hour", "provider", "domain", "reason", name="uq_verify_failures_app"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(32))
    hour: Mapped[int] = mapped_column(Integer)  # hours since the epoch (UTC) of the verifies
    provider: Mapped[str] = mapped_column(String(32))
    domain: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer)


class AuditEntry(Base):
    """One admin write: who (a key fingerprint, never the key), what, to which address, why."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    key_fingerprint: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(320))
    note: Mapped[str | None] = mapped_column(Text, default=None)
