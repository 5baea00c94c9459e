"""Suppression is exact (CONTRACT §6): a bounce, a complaint or an operator entry suppresses the
exact address it names, so suppressions lose the `mailbox` column that migration 0005 added and
by which a bounce for `victim+zz@yahoo.com` silenced `victim@yahoo.com` too.

Existing rows need no rewriting: every writer has always stored the address its event (or the
operator) named in `email`, normalised and lower-case (webhooks/service.py took the recipient as
the provider reported it, the admin PUT the address in its path); only the mailbox key sat beside
it, in `mailbox`, and the look-ups compared that key. With the column dropped nothing can compare
it, and each row keeps suppressing the one address it names. Rows are not merged, split or
deleted: two spellings of one mailbox that both bounced stay two records, each its own address.

The downgrade puts the column back, empty: the code of revision 0006 looks a row up by its own
address as well as by its mailbox, so every row still suppresses (at least) its own address.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_suppressions_mailbox", table_name="suppressions")
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("mailbox")


def downgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("mailbox", sa.String(320), nullable=True))
    op.create_index("ix_suppressions_mailbox", "suppressions", ["mailbox"])
