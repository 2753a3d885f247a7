"""Reminders and expiry: the `reminders` record, and the expiry time and result hash on orders.

Revision ID: 0010_reminders_expiry
Revises: 0009_erasure
Create Date: 2026-11-30 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_reminders_expiry"
down_revision: str | None = "0009_erasure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("expiry_payload_hash", sa.String(128), nullable=True))
    op.create_table(
        "reminders",
        sa.Column("order_id", sa.String(255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("order_id", "number", name=op.f("pk_reminders")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_reminders_order_id_orders"), ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "state IN ('sending', 'sent', 'failed', 'skipped')", name=op.f("ck_reminders_state")
        ),
        sa.CheckConstraint("channel IN ('platform', 'email')", name=op.f("ck_reminders_channel")),
    )
    op.create_index("ix_reminders_state_lease_expires_at", "reminders", ["state", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_reminders_state_lease_expires_at", table_name="reminders")
    op.drop_table("reminders")
    # SQLite's batch mode copies the table and would lose this expression index: drop it and create it again.
    op.drop_index("ix_orders_duplicate_email", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("expiry_payload_hash")
        batch.drop_column("expired_at")
    op.create_index(
        "ix_orders_duplicate_email",
        "orders",
        ["integration_id", "package_id", sa.text("lower(candidate_email)")],
    )
