"""result_outbox.maybe_applied: whether Kombo may hold this version of a result.

Set when an attempt got no answer (a lost reply, a timeout, a dropped connection) or the version was delivered;
a version whose every attempt got a definite error answer certainly did not reach Kombo. The read-back after a
lost reply compares what Kombo shows with the versions that may have been applied only.

Rows written before this revision do not know how their attempts ended: every attempted or delivered row is
taken as possibly applied, which is what the sender assumed before.

Revision ID: 0005_outbox_maybe_applied
Revises: 0004_duplicate_rule_indexes
Create Date: 2025-01-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_outbox_maybe_applied"
down_revision: str | None = "0004_duplicate_rule_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL with a constant default: SQLite adds it with a plain ALTER TABLE (no table copy), PostgreSQL 11+
    # without rewriting the table.
    with op.batch_alter_table("result_outbox") as batch:
        batch.add_column(sa.Column("maybe_applied", sa.Boolean(), nullable=False, server_default=sa.false()))
    outbox = sa.table(
        "result_outbox",
        sa.column("maybe_applied", sa.Boolean()),
        sa.column("attempts", sa.Integer()),
        sa.column("state", sa.String()),
    )
    op.execute(
        outbox.update()
        .where(sa.or_(outbox.c.attempts > 0, outbox.c.state == "sent"))
        .values(maybe_applied=sa.true())
    )


def downgrade() -> None:
    with op.batch_alter_table("result_outbox") as batch:
        batch.drop_column("maybe_applied")
