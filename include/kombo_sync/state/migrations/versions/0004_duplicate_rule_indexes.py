"""Indexes for the duplicate rule: the same candidate by lower-case e-mail or by ATS application.

Without them every accepted order scanned all active orders of its integration and package.

Revision ID: 0004_duplicate_rule_indexes
Revises: 0003_published_package_ids
Create Date: 2025-01-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_duplicate_rule_indexes"
down_revision: str | None = "0003_published_package_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_orders_duplicate_rule", table_name="orders")
    op.create_index(
        "ix_orders_duplicate_email",
        "orders",
        ["integration_id", "package_id", sa.text("lower(candidate_email)")],
    )
    op.create_index(
        "ix_orders_duplicate_application", "orders", ["integration_id", "package_id", "application_remote_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_orders_duplicate_application", table_name="orders")
    op.drop_index("ix_orders_duplicate_email", table_name="orders")
    op.create_index("ix_orders_duplicate_rule", "orders", ["integration_id", "package_id", "candidate_email"])
