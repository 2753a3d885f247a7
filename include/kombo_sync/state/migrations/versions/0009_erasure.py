"""Retention and erasure: the salted e-mail hash and erasure time on orders, and the `erasures` record.

Revision ID: 0009_erasure
Revises: 0008_console
Create Date: 2026-11-30 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_erasure"
down_revision: str | None = "0008_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("candidate_email_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_orders_duplicate_email_hash", "orders", ["integration_id", "package_id", "candidate_email_hash"]
    )
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("integration_id", sa.String(255), nullable=True),
        sa.Column("order_ids", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("counts", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('retention', 'request', 'integration_deleted')", name=op.f("ck_erasures_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index("ix_erasures_kind_erased_at", "erasures", ["kind", "erased_at"])


def downgrade() -> None:
    op.drop_index("ix_erasures_kind_erased_at", table_name="erasures")
    op.drop_table("erasures")
    op.drop_index("ix_orders_duplicate_email_hash", table_name="orders")
    # SQLite's batch mode copies the table and would lose this expression index: drop it and create it again.
    op.drop_index("ix_orders_duplicate_email", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("erased_at")
        batch.drop_column("candidate_email_hash")
    op.create_index(
        "ix_orders_duplicate_email",
        "orders",
        ["integration_id", "package_id", sa.text("lower(candidate_email)")],
    )
