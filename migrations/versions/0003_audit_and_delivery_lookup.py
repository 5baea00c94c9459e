"""Admin audit log; the delivery lookup (queued time and attempts on deliveries, the provider's
message id on webhook events to match them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("key_fingerprint", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(320), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_deliveries_email_id", "deliveries", ["email", "id"])
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("message_id", sa.String(255), nullable=True))
    op.create_index("ix_webhook_events_message_id", "webhook_events", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_message_id", table_name="webhook_events")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("message_id")
    op.drop_index("ix_deliveries_email_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("attempts")
        batch.drop_column("queued_at")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_table("audit_log")
