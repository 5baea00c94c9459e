"""Suppressions lose `permanent`: every suppression is permanent (only an operator removes one),
and the column was always true.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("permanent")


def downgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("permanent", sa.Boolean(), nullable=False, server_default=sa.true()))
