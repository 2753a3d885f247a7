"""poll_coverage: per integration, the creation times whose open orders a finished poll has recorded.

Revision ID: 0007_poll_coverage
Revises: 0006_alerts
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_poll_coverage"
down_revision: str | None = "0006_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "poll_coverage",
        sa.Column("integration_id", sa.String(255), nullable=False),
        sa.Column("created_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("covered_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", name=op.f("pk_poll_coverage")),
    )


def downgrade() -> None:
    op.drop_table("poll_coverage")
