"""The console (issue 11): discarded dead letters, resolution notes, and the indexes its pages read through.

* `result_outbox.state` may be `discarded` (a dead letter the team decided not to send), with the reason in
  `discard_reason`; `quarantine.resolution` keeps why a quarantined row was resolved.
* Indexes: orders by reception time (the overview's per-integration counts of the last 7 days, covering
  `integration_id` and `state`), by ATS application and by invitation id, invitations by the channel's id (the order lookup), webhook events by
  order (the order's history), results by the time they were sent (the overview's results written this week).

Revision ID: 0008_console
Revises: 0007_poll_coverage
Create Date: 2025-01-08 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_console"
down_revision: str | None = "0007_poll_coverage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of schema.OUTBOX_STATES before and after this revision.
OUTBOX_STATES_BEFORE = ("pending", "sending", "sent", "dead", "not_writable", "superseded")
OUTBOX_STATES = (*OUTBOX_STATES_BEFORE, "discarded")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    with op.batch_alter_table("result_outbox") as batch:
        batch.add_column(sa.Column("discard_reason", sa.Text(), nullable=True))
        batch.drop_constraint(op.f("ck_result_outbox_state"), type_="check")
        batch.create_check_constraint(op.f("ck_result_outbox_state"), _in("state", OUTBOX_STATES))
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))
    op.create_index(
        "ix_orders_received_at_integration_id", "orders", ["received_at", "integration_id", "state"]
    )
    op.create_index("ix_orders_application_remote_id", "orders", ["application_remote_id"])
    op.create_index("ix_orders_invitation_id", "orders", ["invitation_id"])
    op.create_index("ix_webhook_events_order_id", "webhook_events", ["order_id"])
    op.create_index("ix_invitations_external_id", "invitations", ["external_id"])
    op.create_index(
        "ix_result_outbox_sent_at_integration_id", "result_outbox", ["sent_at", "integration_id", "state"]
    )


def downgrade() -> None:
    op.drop_index("ix_result_outbox_sent_at_integration_id", table_name="result_outbox")
    op.drop_index("ix_invitations_external_id", table_name="invitations")
    op.drop_index("ix_webhook_events_order_id", table_name="webhook_events")
    op.drop_index("ix_orders_invitation_id", table_name="orders")
    op.drop_index("ix_orders_application_remote_id", table_name="orders")
    op.drop_index("ix_orders_received_at_integration_id", table_name="orders")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("resolution")
    op.execute(sa.text("UPDATE result_outbox SET state = 'dead' WHERE state = 'discarded'"))
    with op.batch_alter_table("result_outbox") as batch:
        batch.drop_constraint(op.f("ck_result_outbox_state"), type_="check")
        batch.create_check_constraint(op.f("ck_result_outbox_state"), _in("state", OUTBOX_STATES_BEFORE))
        batch.drop_column("discard_reason")
