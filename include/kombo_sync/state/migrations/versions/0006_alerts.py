"""Alerts already sent (kombo_sync.alerts): one row per alerted condition, for de-duplication and repeats.

Revision ID: 0006_alerts
Revises: 0005_outbox_maybe_applied
Create Date: 2025-01-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_alerts"
down_revision: str | None = "0005_outbox_maybe_applied"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of schema.ALERT_KINDS at this revision: a later kind needs a migration of the constraint.
ALERT_KINDS = ("failed_run", "dead_letter", "order_not_invited", "integration_failing", "quarantined_row")


def upgrade() -> None:
    allowed = ", ".join(f"'{kind}'" for kind in ALERT_KINDS)
    op.create_table(
        "alerts_sent",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(600), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("times_sent", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.CheckConstraint(f"kind IN ({allowed})", name=op.f("ck_alerts_sent_kind")),
        sa.PrimaryKeyConstraint("kind", "subject", name=op.f("pk_alerts_sent")),
    )


def downgrade() -> None:
    op.drop_table("alerts_sent")
