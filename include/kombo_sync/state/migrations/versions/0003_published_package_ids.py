"""integrations.published_package_ids: the package ids last published to Kombo (the webhook's package rule).

Revision ID: 0003_published_package_ids
Revises: 0002_wakeups
Create Date: 2025-01-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_published_package_ids"
down_revision: str | None = "0002_wakeups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: SQLite adds it with a plain ALTER TABLE (no table copy), PostgreSQL without a rewrite.
    with op.batch_alter_table("integrations") as batch:
        batch.add_column(sa.Column("published_package_ids", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.drop_column("published_package_ids")
