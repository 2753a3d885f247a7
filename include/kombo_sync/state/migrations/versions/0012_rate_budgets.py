"""One Kombo rate budget per API key across task processes (issue 14): `rate_budgets`, a row per key hash.

Used when `KOMBO_RATE_BUDGET=database` (kombo_sync.kombo.budgets): each request reserves its start time in a
short transaction on the key's row (the token bucket's `full_at`) and every process honours the pause Kombo
asked for (`paused_until`). The key itself is never stored, only its SHA-256.

Revision ID: 0012_rate_budgets
Revises: 0011_console_speed
Create Date: 2026-12-04 23:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_rate_budgets"
down_revision: str | None = "0011_console_speed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_budgets",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("full_at", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column("paused_until", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_rate_budgets")),
    )


def downgrade() -> None:
    op.drop_table("rate_budgets")
