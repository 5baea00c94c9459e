"""Deliveries keep when the provider reported the email delivered and when its code was verified
(issue 31), so GET /api/v1/admin/stats reads one range of one table: the window's rows by
created_at, the time of each stage beside them. Rows from before stay null (not delivered, not
verified, as far as the stats can tell).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("verified_at")
        batch.drop_column("delivered_at")
