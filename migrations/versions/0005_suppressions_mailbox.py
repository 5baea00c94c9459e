"""Suppressions carry the mailbox they suppress (CONTRACT §6, "Mailboxes, not spellings"): every
spelling of a suppressed inbox is suppressed. Existing rows get theirs under the default rule
(no +tag; no dots on gmail.com and googlemail.com; googlemail.com is gmail.com); the worker looks
an address up by its mailbox and by the address itself, so a row keyed under another rule still
matches its own spelling.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DOTLESS = {"gmail.com", "googlemail.com"}


def _mailbox(email: str) -> str:
    """The rule as it stood at this revision (validation/mailbox.py, default settings)."""
    local, _, domain = email.rpartition("@")
    base = local.split("+", 1)[0] or local
    if domain in _DOTLESS:
        base = base.replace(".", "") or base
    return f"{base}@{'gmail.com' if domain == 'googlemail.com' else domain}"


def upgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("mailbox", sa.String(320), nullable=True))
    op.create_index("ix_suppressions_mailbox", "suppressions", ["mailbox"])
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, email FROM suppressions")).all()
    for row_id, email in rows:
        conn.execute(
            sa.text("UPDATE suppressions SET mailbox = :m WHERE id = :i"), {"m": _mailbox(email), "i": row_id}
        )


def downgrade() -> None:
    op.drop_index("ix_suppressions_mailbox", table_name="suppressions")
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("mailbox")
