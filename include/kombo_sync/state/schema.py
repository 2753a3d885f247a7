"""Tables of the pipeline's own state store (SQLAlchemy 2 Core, portable between SQLite and PostgreSQL).

Every timestamp is stored as UTC and read back timezone-aware (`UTCDateTime`); JSON columns use `sa.JSON`, with
Python None stored as SQL NULL.
The repositories in this package are the only writers of these tables. The migrations in
`migrations/versions/` (0001_initial and the later ones) must produce exactly this metadata (a test compares
them).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# Alembic's version table; named here so the store, the env and the tests agree.
VERSION_TABLE = "schema_info"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite has no time zones and returns naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            # A naive timestamp is ambiguous; refusing it keeps local times out of the store.
            raise ValueError("naive datetime given for a UTC timestamp column")
        value = value.astimezone(UTC)
        # SQLite stores the text without an offset; every stored value is UTC so text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _states_check(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


INTEGRATION_STATUSES = ("ACTIVE", "INACTIVE", "INVALID", "DELETED")
INTEGRATION_SOURCES = ("webhook", "bootstrap", "admin", "api")
ORDER_STATES = ("received", "inviting", "invited", "rejected", "duplicate", "cancelled", "failed")
ORDER_SEEN_VIA = ("webhook", "poll")
INVITATION_CHANNELS = ("platform", "email")
# `discarded` (migration 0008): a dead letter the team chose not to send, with its `discard_reason`.
OUTBOX_STATES = ("pending", "sending", "sent", "dead", "not_writable", "superseded", "discarded")
# Known values only: other jobs may quarantine rows too, so the column is not constrained.
QUARANTINE_JOBS = ("catalog", "writeback", "intake")


integrations = sa.Table(
    "integrations",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # Kombo integration id, tool:xxx
    sa.Column("tool", sa.String(100), nullable=False),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("customer_key", sa.String(255), nullable=True),  # Kombo end_user.origin_id
    sa.Column("organization_name", sa.String(), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("setup_status", sa.String(32), nullable=True),
    sa.Column("qa_status", sa.String(32), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("invitation_channel", sa.String(16), nullable=True),
    sa.Column("settings", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("packages_hash", sa.String(128), nullable=True),
    sa.Column("packages_published_at", UTCDateTime(), nullable=True),
    # The package ids of that list (migration 0003): the webhook rejects orders for any other package.
    sa.Column("published_package_ids", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
    _states_check("status", INTEGRATION_STATUSES, "status"),
    _states_check("source", INTEGRATION_SOURCES, "source"),
    sa.Index("ix_integrations_customer_key", "customer_key"),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("integration_id", sa.String(255), nullable=False),
    sa.Column("package_id", sa.String(255), nullable=False),
    sa.Column("kombo_status", sa.String(32), nullable=True),  # as last seen
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
    sa.Column("order_json", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("duplicate_of", sa.String(255), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Column("invitation_id", sa.String(), nullable=True),
    sa.Column("invitation_url", sa.Text(), nullable=True),
    sa.Column("channel", sa.String(16), nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("invited_at", UTCDateTime(), nullable=True),
    # Set when the candidate's personal data was erased (migration 0009): the e-mail, names and phone are NULL
    # from then on, and the candidate block of order_json holds ids only. The salted hash of the e-mail keeps
    # the duplicate rule working for an erased order that is still active (kombo_sync.housekeeping).
    sa.Column("candidate_email_hash", sa.String(64), nullable=True),
    sa.Column("erased_at", UTCDateTime(), nullable=True),
    # Set when the order expired without a result (migration 0010, kombo_sync.lifecycle): the order is then
    # `cancelled`, and its CANCELLED result with the expiry attribute waits in the outbox under this hash.
    sa.Column("expired_at", UTCDateTime(), nullable=True),
    sa.Column("expiry_payload_hash", sa.String(128), nullable=True),
    sa.ForeignKeyConstraint(["duplicate_of"], ["orders.id"], ondelete="SET NULL"),
    _states_check("state", ORDER_STATES, "state"),
    _states_check("first_seen_via", ORDER_SEEN_VIA, "first_seen_via"),
    # (integration_id, state) also serves every lookup by integration_id alone (leading column).
    sa.Index("ix_orders_integration_id_state", "integration_id", "state"),
    sa.Index("ix_orders_state_next_attempt_at", "state", "next_attempt_at"),
    # The console (migration 0008): counts of recent orders per integration and state, and the order lookup.
    # invited_at (migration 0011): the funnel's invitation latency of a period from the same index alone.
    sa.Index("ix_orders_received_at_integration_id", "received_at", "integration_id", "state", "invited_at"),
    # The duplicate rule finds the same candidate through one of these three, by its identity column alone
    # (migration 0013, `orders._duplicate_query`): the ATS application, the e-mail (case-insensitive, below),
    # the salted e-mail hash of an erased order (below).
    sa.Index("ix_orders_application_remote_id", "application_remote_id"),
    sa.Index("ix_orders_invitation_id", "invitation_id"),
)
sa.Index("ix_orders_candidate_email", sa.func.lower(orders.c.candidate_email))
# Only erased orders carry the hash: a small partial index.
sa.Index(
    "ix_orders_candidate_email_hash",
    orders.c.candidate_email_hash,
    postgresql_where=orders.c.candidate_email_hash.is_not(None),
    sqlite_where=orders.c.candidate_email_hash.is_not(None),
)

invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("order_id", sa.String(255), primary_key=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("external_id", sa.String(), nullable=True),  # platform invitation id or SMTP Message-ID
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("sent_at", UTCDateTime(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(["order_id"], ["orders.id"], ondelete="CASCADE"),
    _states_check("channel", INVITATION_CHANNELS, "channel"),
    sa.Index("ix_invitations_external_id", "external_id"),  # the console's order lookup (migration 0008)
)

result_outbox = sa.Table(
    "result_outbox",
    metadata,
    sa.Column("order_id", sa.String(255), primary_key=True),
    sa.Column("payload_hash", sa.String(128), primary_key=True),
    sa.Column("integration_id", sa.String(255), nullable=False),
    sa.Column("payload_json", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Column("last_error_code", sa.String(64), nullable=True),
    sa.Column("last_error_message", sa.Text(), nullable=True),
    sa.Column("log_url", sa.Text(), nullable=True),
    sa.Column("source_updated_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    # Kombo may hold this version (migration 0005): an attempt got no answer (a lost reply, a timeout, a dropped
    # connection) or the version was delivered. A definite error answer on every attempt leaves it false.
    sa.Column("maybe_applied", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("discard_reason", sa.Text(), nullable=True),  # why the team discarded it (migration 0008)
    _states_check("state", OUTBOX_STATES, "state"),
    sa.Index("ix_result_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    # The console's results written per integration this week (migration 0008).
    sa.Index("ix_result_outbox_sent_at_integration_id", "sent_at", "integration_id", "state"),
    sa.Index("ix_result_outbox_created_at_state", "created_at", "state"),  # results queued per period (0011)
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("integration_id", sa.String(255), nullable=True),
    sa.Column("order_id", sa.String(255), nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_body", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_webhook_events_received_at", "received_at"),
    sa.Index("ix_webhook_events_order_id", "order_id"),  # an order's history in the console (0008)
    sa.Index("ix_webhook_events_received_at_status", "received_at", "response_status"),  # answers (0011)
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(32), nullable=False),
    sa.Column("source_key", sa.String(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("row_json", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("run_id", sa.String(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolution", sa.Text(), nullable=True),  # why it was resolved, e.g. discarded (migration 0008)
    sa.Index("ix_quarantine_job_resolved_at", "job", "resolved_at"),
    sa.Index("ix_quarantine_resolved_at_id", "resolved_at", "id"),  # the console's open rows (0011)
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_runs_job_started_at", "job", "started_at"),
    sa.Index("ix_runs_started_at", "started_at", "id"),  # the console's run history, newest first (0011)
)

ALL_TABLES: tuple[sa.Table, ...] = (
    integrations,
    orders,
    invitations,
    result_outbox,
    webhook_events,
    quarantine,
    runs,
)


# Wake-up requests from the webhook to the triggerer (kombo_sync.wakeups; migration 0002_wakeups).
wakeups = sa.Table(
    "wakeups",
    metadata,
    sa.Column("topic", sa.String(64), primary_key=True),
    sa.Column("requested", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("consumed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("requested_at", UTCDateTime(), nullable=True),
    sa.Column("consumed_at", UTCDateTime(), nullable=True),
)
ALL_TABLES = (*ALL_TABLES, wakeups)


# Alerts already sent, so a condition is not re-sent on every run (kombo_sync.alerts; migration 0006_alerts).
# One row per (kind, subject): an order id, "order_id:payload_hash", "job:integration_id", a quarantine id, or
# "dag_id/run_id/task_id"; cleared when the condition no longer holds, so a comeback is alerted again.
ALERT_KINDS = ("failed_run", "dead_letter", "order_not_invited", "integration_failing", "quarantined_row")

alerts_sent = sa.Table(
    "alerts_sent",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("subject", sa.String(600), primary_key=True),
    sa.Column("first_sent_at", UTCDateTime(), nullable=False),
    sa.Column("last_sent_at", UTCDateTime(), nullable=False),
    sa.Column("times_sent", sa.Integer(), nullable=False, server_default=sa.text("1")),
    _states_check("kind", ALERT_KINDS, "kind"),
)
ALL_TABLES = (*ALL_TABLES, alerts_sent)


# Per integration, the creation times [created_after, covered_until) whose open orders a finished poll recorded
# (kombo_sync.state.coverage; migration 0007_poll_coverage): a backfill skips a window inside it.
poll_coverage = sa.Table(
    "poll_coverage",
    metadata,
    sa.Column("integration_id", sa.String(255), primary_key=True),
    sa.Column("created_after", UTCDateTime(), nullable=False),
    sa.Column("covered_until", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
ALL_TABLES = (*ALL_TABLES, poll_coverage)


# Every erasure of candidate personal data (kombo_sync.housekeeping; migration 0009_erasure): what kind, when,
# why, the counts, and the order ids or the integration id. Never the personal data itself.
ERASURE_KINDS = ("retention", "request", "integration_deleted")

erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("requested_by", sa.String(255), nullable=True),
    sa.Column("run_id", sa.String(), nullable=True),
    sa.Column("integration_id", sa.String(255), nullable=True),
    sa.Column("order_ids", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("counts", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("erased_at", UTCDateTime(), nullable=False),
    _states_check("kind", ERASURE_KINDS, "kind"),
    sa.Index("ix_erasures_kind_erased_at", "kind", "erased_at"),
    sa.Index("ix_erasures_erased_at", "erased_at", "id"),  # the console's erasures page, newest first (0011)
)
ALL_TABLES = (*ALL_TABLES, erasures)


# Reminders to candidates who have not finished (kombo_sync.lifecycle; migration 0010_reminders_expiry): one row
# per (order, reminder number), claimed with a lease like an invitation and committed `sent` fenced by it.
# `sending` with no live lease is claimable (a dead worker's claim, or a retry whose time has come).
REMINDER_STATES = ("sending", "sent", "failed", "skipped")

reminders = sa.Table(
    "reminders",
    metadata,
    sa.Column("order_id", sa.String(255), primary_key=True),
    sa.Column("number", sa.Integer(), primary_key=True),  # 1 = the first reminder
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(300), nullable=False),
    sa.Column("external_id", sa.String(), nullable=True),  # the platform's reminder id or the Message-ID
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["order_id"], ["orders.id"], ondelete="CASCADE"),
    _states_check("state", REMINDER_STATES, "state"),
    _states_check("channel", INVITATION_CHANNELS, "channel"),
    sa.Index("ix_reminders_state_lease_expires_at", "state", "lease_expires_at"),
)
ALL_TABLES = (*ALL_TABLES, reminders)


# The Kombo rate budget shared by every task process (kombo_sync.kombo.budgets, backend `database`; migration
# 0012_rate_budgets): one row per API key, keyed by a hash of the key (never the key itself). Times are seconds
# since the epoch: `full_at` when the token bucket would be full again (GCRA), `paused_until` when Kombo's
# 429 / `ratelimit-reset` pause ends.
rate_budgets = sa.Table(
    "rate_budgets",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("full_at", sa.Float(), nullable=False, server_default=sa.text("0")),
    sa.Column("paused_until", sa.Float(), nullable=False, server_default=sa.text("0")),
)
ALL_TABLES = (*ALL_TABLES, rate_budgets)
