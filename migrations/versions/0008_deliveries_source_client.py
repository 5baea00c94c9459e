"""Deliveries keep the client that requested them (CONTRACT §6, §2a: an IPv4 address or an IPv6
/64, as net.Client.key names it) beside its subnet: the reputation guard blames the client, and
blocks a subnet only once enough of its clients are blocked. Rows from before stay null: their
events still count toward a provider's rates, but toward no client's block.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("source_client", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("source_client")
