"""Initial state store: integrations, orders, invitations, result outbox, webhook events, quarantine, runs.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("tool", sa.String(100), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("customer_key", sa.String(255), nullable=True),
        sa.Column("organization_name", sa.String(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("setup_status", sa.String(32), nullable=True),
        sa.Column("qa_status", sa.String(32), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("invitation_channel", sa.String(16), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("packages_hash", sa.String(128), nullable=True),
        sa.Column("packages_published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        sa.CheckConstraint(
            _in("status", ["ACTIVE", "INACTIVE", "INVALID", "DELETED"]), name=op.f("ck_integrations_status")
        ),
        sa.CheckConstraint(
            _in("source", ["webhook", "bootstrap", "admin", "api"]), name=op.f("ck_integrations_source")
        ),
    )
    op.create_index("ix_integrations_customer_key", "integrations", ["customer_key"])

    op.create_table(
        "orders",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("integration_id", sa.String(255), nullable=False),
        sa.Column("package_id", sa.String(255), nullable=False),
        sa.Column("kombo_status", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("first_seen_via", sa.String(16), nullable=False),
        sa.Column("candidate_email", sa.String(), nullable=True),
        sa.Column("candidate_first_name", sa.String(), nullable=True),
        sa.Column("candidate_last_name", sa.String(), nullable=True),
        sa.Column("candidate_phone", sa.String(), nullable=True),
        sa.Column("candidate_remote_id", sa.String(), nullable=True),
        sa.Column("application_remote_id", sa.String(), nullable=True),
        sa.Column("job_remote_id", sa.String(), nullable=True),
        sa.Column("job_name", sa.String(), nullable=True),
        sa.Column("order_json", sa.JSON(), nullable=False),
        sa.Column("duplicate_of", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invitation_id", sa.String(), nullable=True),
        sa.Column("invitation_url", sa.Text(), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.ForeignKeyConstraint(
            ["duplicate_of"], ["orders.id"], name=op.f("fk_orders_duplicate_of_orders"), ondelete="SET NULL"
        ),
        sa.CheckConstraint(
            _in("state", ["received", "inviting", "invited", "rejected", "duplicate", "cancelled", "failed"]),
            name=op.f("ck_orders_state"),
        ),
        sa.CheckConstraint(_in("first_seen_via", ["webhook", "poll"]), name=op.f("ck_orders_first_seen_via")),
    )
    op.create_index("ix_orders_integration_id_state", "orders", ["integration_id", "state"])
    op.create_index("ix_orders_duplicate_rule", "orders", ["integration_id", "package_id", "candidate_email"])
    op.create_index("ix_orders_state_next_attempt_at", "orders", ["state", "next_attempt_at"])

    op.create_table(
        "invitations",
        sa.Column("order_id", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_invitations")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_invitations_order_id_orders"), ondelete="CASCADE"
        ),
        sa.CheckConstraint(_in("channel", ["platform", "email"]), name=op.f("ck_invitations_channel")),
    )

    op.create_table(
        "result_outbox",
        sa.Column("order_id", sa.String(255), nullable=False),
        sa.Column("payload_hash", sa.String(128), nullable=False),
        sa.Column("integration_id", sa.String(255), nullable=False),
        sa.Column("payload_json", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("log_url", sa.Text(), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("order_id", "payload_hash", name=op.f("pk_result_outbox")),
        sa.CheckConstraint(
            _in("state", ["pending", "sending", "sent", "dead", "not_writable", "superseded"]),
            name=op.f("ck_result_outbox_state"),
        ),
    )
    op.create_index("ix_result_outbox_state_next_attempt_at", "result_outbox", ["state", "next_attempt_at"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("integration_id", sa.String(255), nullable=True),
        sa.Column("order_id", sa.String(255), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index("ix_webhook_events_received_at", "webhook_events", ["received_at"])

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("source_key", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("row_json", sa.JSON(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index("ix_quarantine_job_resolved_at", "quarantine", ["job", "resolved_at"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_job_started_at", "runs", ["job", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_job_started_at", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_quarantine_job_resolved_at", table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_index("ix_webhook_events_received_at", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_result_outbox_state_next_attempt_at", table_name="result_outbox")
    op.drop_table("result_outbox")
    op.drop_table("invitations")
    op.drop_index("ix_orders_state_next_attempt_at", table_name="orders")
    op.drop_index("ix_orders_duplicate_rule", table_name="orders")
    op.drop_index("ix_orders_integration_id_state", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_integrations_customer_key", table_name="integrations")
    op.drop_table("integrations")
