"""The duplicate rule's lookups go through one index per way of being the same candidate (issue 14).

The webhook's duplicate lookup is a prepared statement; after five executions PostgreSQL may run it with a generic
plan, chosen without the values. On statistics taken while the table was small, every index that starts with
`integration_id` looked as good as the one meant for the branch, and the generic plan read every active order of
the package through (integration_id, state) or (integration_id, package_id): thousands of rows per webhook. The
lookup now leaves integration, package and state out of its index conditions (kombo_sync.state.orders
`_duplicate_query`), and each branch has one index on its own identity column: the lower-cased e-mail, the salted
e-mail hash (only erased orders carry one: a partial index), the ATS application id (already indexed).

Revision ID: 0013_duplicate_lookup_indexes
Revises: 0012_rate_budgets
Create Date: 2026-12-06 02:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_duplicate_lookup_indexes"
down_revision: str | None = "0012_rate_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_orders_duplicate_email", table_name="orders")
    op.drop_index("ix_orders_duplicate_email_hash", table_name="orders")
    op.drop_index("ix_orders_duplicate_application", table_name="orders")
    op.create_index("ix_orders_candidate_email", "orders", [sa.text("lower(candidate_email)")])
    erased = sa.text("candidate_email_hash IS NOT NULL")
    op.create_index(
        "ix_orders_candidate_email_hash",
        "orders",
        ["candidate_email_hash"],
        postgresql_where=erased,
        sqlite_where=erased,
    )


def downgrade() -> None:
    op.drop_index("ix_orders_candidate_email_hash", table_name="orders")
    op.drop_index("ix_orders_candidate_email", table_name="orders")
    op.create_index(
        "ix_orders_duplicate_application", "orders", ["integration_id", "package_id", "application_remote_id"]
    )
    op.create_index(
        "ix_orders_duplicate_email_hash", "orders", ["integration_id", "package_id", "candidate_email_hash"]
    )
    op.create_index(
        "ix_orders_duplicate_email",
        "orders",
        ["integration_id", "package_id", sa.text("lower(candidate_email)")],
    )
