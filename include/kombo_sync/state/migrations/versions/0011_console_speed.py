"""The console at volume (issue 11): indexes for the funnel and trends, the run history and the erasures page.

* `orders (received_at, integration_id, state)` (0008) gains `invited_at`: the funnel's counts and invitation
  latency of a period are read from the index alone (no row lookups over a month of orders), and the overview
  keeps reading its per-integration counts from it; one index rather than two for the writers to maintain.
* `result_outbox (created_at, state)`: results queued (candidates finished) per period.
* `webhook_events (received_at, response_status)`: webhook answers by status per period, from the index alone.
* `quarantine (resolved_at, id)`: the open quarantined rows, newest first, without reading the resolved ones.
* `runs (started_at, id)`, `erasures (erased_at, id)`: the newest first for the run history and erasures pages,
  in the pages' exact order (PostgreSQL sorted 100,000 runs for the page without the `id`).

Revision ID: 0011_console_speed
Revises: 0010_reminders_expiry
Create Date: 2026-11-30 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011_console_speed"
down_revision: str | None = "0010_reminders_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECEIVED_INDEX = "ix_orders_received_at_integration_id"
INDEXES = (
    ("ix_result_outbox_created_at_state", "result_outbox", ["created_at", "state"]),
    ("ix_webhook_events_received_at_status", "webhook_events", ["received_at", "response_status"]),
    ("ix_quarantine_resolved_at_id", "quarantine", ["resolved_at", "id"]),
    ("ix_runs_started_at", "runs", ["started_at", "id"]),
    ("ix_erasures_erased_at", "erasures", ["erased_at", "id"]),
)


def upgrade() -> None:
    op.drop_index(RECEIVED_INDEX, table_name="orders")
    op.create_index(RECEIVED_INDEX, "orders", ["received_at", "integration_id", "state", "invited_at"])
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index(RECEIVED_INDEX, table_name="orders")
    op.create_index(RECEIVED_INDEX, "orders", ["received_at", "integration_id", "state"])
