"""The admin stats' hourly roll-up (issue 31): deliveries carry their application (CONTRACT §8,
'' = the service-wide one); delivery_stats holds, per hour, application, provider and domain
part, the counts and duration buckets GET /api/v1/admin/stats sums; verify_failures the failed
verifies by reason.

delivery_stats is kept by the database: triggers on deliveries append what each insert, update
and delete changes (on PostgreSQL one row per key and statement, from the statement's transition
tables; on SQLite one per row), so every writer is counted, the worker's inserts, the webhooks'
and the verify's updates, retention's deletes, and any written by hand. Appending never waits on
another writer (no row is updated in place, so no lock is taken on a shared counter and no two
transactions can deadlock on one); the worker sums each key's rows into one
(delivery/stats.StatsCompaction). The rows already there are summed in once, here.

The counting rule is written out below, frozen as it stood at this revision; the live recount
(delivery/repository.stats_groups) states the same rule in SQLAlchemy, and tests/test_admin_stats.py
holds the two equal on both databases. A later migration that recreates deliveries on SQLite
(batch mode's copy-and-rename) drops these triggers with the old table and must create them again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGES = ("accepted_to_sent", "sent_to_delivered", "sent_to_verified")
BOUNDS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
KEY = ("hour", "app", "provider", "domain")
BUCKETS = [f"{stage}_{i}" for stage in STAGES for i in [*range(len(BOUNDS)), "n"]]
COUNTS = ["accepted", "sent", "delivered", "verified", *BUCKETS]
WATCHED = ("created_at", "queued_at", "delivered_at", "verified_at", "outcome", "provider", "email", "app")
"""The columns of deliveries the stats read: an update of any other changes nothing counted."""


def _seconds(dialect: str, later: str, earlier: str) -> str:
    if dialect == "sqlite":  # timestamps are ISO text there
        return f"((julianday({later}) - julianday({earlier})) * 86400.0)"
    return f"EXTRACT(EPOCH FROM {later} - {earlier})"


def _each(dialect: str, row: str, sign: int, source: str = "") -> str:
    """One SELECT of each row's key, sign, flags and stage durations (seconds, or null when not
    measured): `row` is NEW, OLD or the alias of `source`."""
    if dialect == "sqlite":
        hour = f"CAST(strftime('%s', {row}.created_at) AS INTEGER) / 3600"
        domain = f"substr({row}.email, instr({row}.email, '@') + 1)"
    else:
        hour = f"CAST(FLOOR(EXTRACT(EPOCH FROM {row}.created_at) / 3600) AS INTEGER)"
        domain = f"split_part({row}.email, '@', 2)"
    sent = f"{row}.outcome = 'sent'"
    # Built from this module's constants and the callers' literal aliases only: nothing outside.
    return (
        f"SELECT {hour} AS hour, {row}.app AS app, COALESCE({row}.provider, 'none') AS provider, "  # noqa: S608
        f"{domain} AS domain, {sign} AS s, "
        f"CASE WHEN {sent} THEN 1 ELSE 0 END AS sent, "
        f"CASE WHEN {row}.delivered_at IS NOT NULL THEN 1 ELSE 0 END AS delivered, "
        f"CASE WHEN {row}.verified_at IS NOT NULL THEN 1 ELSE 0 END AS verified, "
        f"CASE WHEN {sent} THEN {_seconds(dialect, f'{row}.created_at', f'{row}.queued_at')} END "
        "AS accepted_to_sent, "
        f"{_seconds(dialect, f'{row}.delivered_at', f'{row}.created_at')} AS sent_to_delivered, "
        f"{_seconds(dialect, f'{row}.verified_at', f'{row}.created_at')} AS sent_to_verified"
        + (f" FROM {source} AS {row}" if source else "")
    )


def _sums(rows: str, state: int = 0) -> str:
    """INSERT INTO delivery_stats the sums per key of `rows` (one or more _each, UNION ALL),
    leaving out keys whose sums are all zero (an update that changed nothing counted)."""
    sums = ["SUM(s)", "SUM(s * sent)", "SUM(s * delivered)", "SUM(s * verified)"]
    for stage in STAGES:
        sums += [f"SUM(CASE WHEN {stage} <= {bound} THEN s ELSE 0 END)" for bound in BOUNDS]
        sums.append(f"SUM(CASE WHEN {stage} IS NOT NULL THEN s ELSE 0 END)")
    return (
        f"INSERT INTO delivery_stats ({', '.join((*KEY, 'state', *COUNTS))}) "  # noqa: S608 (as _each)
        f"SELECT {', '.join(KEY)}, {state}, {', '.join(sums)} FROM ({rows}) AS changes "
        f"GROUP BY {', '.join(KEY)} HAVING {' OR '.join(f'{s} <> 0' for s in sums)}"
    )


def _postgresql_triggers() -> list[str]:
    statements = []
    changed = " OR ".join(f"o.{c} IS DISTINCT FROM n.{c}" for c in WATCHED)
    old = _each("postgresql", "o", -1, "old_rows")
    new = _each("postgresql", "n", 1, "new_rows")
    bodies = {
        "insert": _sums(new),
        "delete": _sums(old),
        # Both transition tables, joined so that only rows whose counted columns changed count.
        "update": _sums(
            f"{_each('postgresql', 'o', -1, 'old_rows')} JOIN new_rows AS n ON n.id = o.id WHERE {changed} "
            f"UNION ALL {_each('postgresql', 'n', 1, 'new_rows')} JOIN old_rows AS o ON o.id = n.id "
            f"WHERE {changed}"
        ),
    }
    tables = {"insert": "NEW TABLE AS new_rows", "delete": "OLD TABLE AS old_rows",
              "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}  # fmt: skip
    for event, body in bodies.items():
        statements.append(
            f"CREATE FUNCTION delivery_stats_{event}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body}; RETURN NULL; END $$"
        )
        statements.append(
            f"CREATE TRIGGER delivery_stats_{event} AFTER {event.upper()} ON deliveries "
            f"REFERENCING {tables[event]} FOR EACH STATEMENT EXECUTE FUNCTION delivery_stats_{event}()"
        )
    return statements


def _sqlite_triggers() -> list[str]:
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in WATCHED)
    bodies = {
        "insert": ("AFTER INSERT", [_sums(_each("sqlite", "NEW", 1))]),
        "delete": ("AFTER DELETE", [_sums(_each("sqlite", "OLD", -1))]),
        "update": (
            f"AFTER UPDATE OF {', '.join(WATCHED)}",
            [_sums(f"{_each('sqlite', 'OLD', -1)} UNION ALL {_each('sqlite', 'NEW', 1)}")],
        ),
    }
    return [
        f"CREATE TRIGGER delivery_stats_{event} {when} ON deliveries FOR EACH ROW"
        + (f" WHEN {changed}" if event == "update" else "")
        + f" BEGIN {'; '.join(body)}; END"
        for event, (when, body) in bodies.items()
    ]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("app", sa.String(32), nullable=False, server_default=""))
    op.create_table(
        "delivery_stats",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("app", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False, server_default="0"),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in COUNTS),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_stats"),
    )
    op.create_index("ix_delivery_stats_app", "delivery_stats", ["app", "hour", "provider", "domain"])
    unmerged = sa.text("state <> 1")
    op.create_index(
        "ix_delivery_stats_unmerged",
        "delivery_stats",
        ["state"],
        postgresql_where=unmerged,
        sqlite_where=unmerged,
    )
    op.create_table(
        "verify_failures",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("app", sa.String(32), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_verify_failures"),
        sa.UniqueConstraint("app", "hour", "provider", "domain", "reason", name="uq_verify_failures_app"),
    )
    # The triggers first: on PostgreSQL, creating them locks deliveries against writes until this
    # migration commits, so no row escapes both the triggers and the sum below.
    for statement in _sqlite_triggers() if dialect == "sqlite" else _postgresql_triggers():
        op.execute(statement)
    op.execute(_sums(_each(dialect, "d", 1, "deliveries"), state=1))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for event in ("insert", "update", "delete"):
        op.execute(
            f"DROP TRIGGER IF EXISTS delivery_stats_{event}"
            + ("" if dialect == "sqlite" else " ON deliveries")
        )
        if dialect != "sqlite":
            op.execute(f"DROP FUNCTION IF EXISTS delivery_stats_{event}()")
    op.drop_table("verify_failures")
    op.drop_index("ix_delivery_stats_unmerged", table_name="delivery_stats")
    op.drop_index("ix_delivery_stats_app", table_name="delivery_stats")
    op.drop_table("delivery_stats")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("app")
