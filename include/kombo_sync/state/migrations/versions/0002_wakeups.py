"""Wake-up requests: the webhook asks, the triggerer's WakeupTrigger consumes (compare-and-set).

Revision ID: 0002_wakeups
Revises: 0001_initial
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_wakeups"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wakeups",
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("requested", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("consumed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_wakeups")),
    )


def downgrade() -> None:
    op.drop_table("wakeups")
