"""The console's reads of the state store: one home for what every page (and its CSV export) shows.

Read-only: every query runs in `StateStore.transaction(readonly=True)` (SQLite: a deferred transaction, so a
page never takes the write lock the pipeline's writers queue on). Each page is a fixed, small number of
queries that aggregate in the database (GROUP BY), through the indexes of migrations 0008 and 0011 where orders
are counted or looked up and where the funnel, the run history and the erasures read by time. Rows come back as plain dicts whose keys are the columns of `COLUMNS[view]`.

Candidate data (e-mail, names) is only selected when the caller says the user may see it; otherwise it never
leaves the database, and e-mail addresses quoted in quarantine reasons are masked.

Over 400 lines on purpose: every read the console makes is here, so the indexes it needs and the rule on
candidate data are checked in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kombo_sync.candidate_hash import replace_emails
from kombo_sync.state._util import not_by_index
from kombo_sync.state.outbox import DEAD_LETTER_STATES, SENT
from kombo_sync.state.schema import (
    erasures,
    integrations,
    invitations,
    orders,
    poll_coverage,
    quarantine,
    reminders,
    result_outbox,
    runs,
    webhook_events,
)
from kombo_sync.state.store import StateStore

# Order states shown per integration in the overview, in the order of the funnel.
ORDER_STATE_COLUMNS = ("received", "invited", "duplicate", "rejected", "failed")
# A served integration whose last finished poll is older than this is flagged.
STALE_POLL = timedelta(hours=1)
# The intake's poll records its run (with `integrations_failed`: id -> Kombo's code and message) under this job
# name (kombo_sync.intake.tasks.POLL_JOB; not imported, to keep the web server's imports light).
POLL_JOB = "intake.poll"
MAX_ROWS = 1000


# The columns of each table, in order: (key, label). The pages and the CSV export both use them.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    # What needs attention first; the rest to the right (the table scrolls sideways on narrow screens).
    "overview": (
        ("health", "Health"),
        ("problems", "Problems"),
        ("customer", "Customer"),
        ("integration_id", "Integration"),
        ("tool", "ATS"),
        ("status", "Status"),
        ("enabled", "Enabled"),
        ("dead_letters", "Dead letters"),
        ("quarantined", "Quarantined"),
        ("last_error", "Last error"),
        ("last_error_log_url", "Kombo log"),
        ("last_error_at", "Last error at"),
        *((f"today_{state}", f"Today {state}") for state in ORDER_STATE_COLUMNS),
        *((f"week_{state}", f"7 d {state}") for state in ORDER_STATE_COLUMNS),
        ("results_written_7d", "Results written (7 d)"),
        ("last_poll_at", "Last poll"),
        ("packages", "Packages published"),
        ("packages_published_at", "Published at"),
    ),
    "dead_letters": (
        ("order_id", "Order"),
        ("payload_hash", "Version"),
        ("integration_id", "Integration"),
        ("state", "State"),
        ("code", "Code"),
        ("message", "Message"),
        ("log_url", "Kombo log"),
        ("attempts", "Attempts"),
        ("first_attempt_at", "First queued"),
        ("last_attempt_at", "Last attempt"),
    ),
    "quarantine": (
        ("id", "Id"),
        ("job", "Job"),
        ("source_key", "Key"),
        ("integration_id", "Integration"),
        ("reason", "Reason"),
        ("run_id", "Run"),
        ("created_at", "Quarantined at"),
    ),
    "webhooks": (
        ("received_at", "Received"),
        ("id", "Event"),
        ("type", "Type"),
        ("integration_id", "Integration"),
        ("order_id", "Order"),
        ("response_status", "Answer"),
        ("answer", "Answer body"),
    ),
    "orders": (
        ("id", "Order"),
        ("integration_id", "Integration"),
        ("package_id", "Package"),
        ("state", "State"),
        ("kombo_status", "Kombo status"),
        ("first_seen_via", "First seen via"),
        ("application_remote_id", "ATS application"),
        ("job_name", "Job"),
        ("candidate_email", "Candidate e-mail"),
        ("candidate_name", "Candidate name"),
        ("attempts", "Invitation attempts"),
        ("last_error", "Last error"),
        ("invitation_id", "Invitation"),
        ("channel", "Channel"),
        ("received_at", "Received"),
        ("invited_at", "Invited"),
        ("expired_at", "Expired"),
        ("updated_at", "Updated"),
    ),
    "invitations": (
        ("order_id", "Order"),
        ("channel", "Channel"),
        ("external_id", "Invitation id"),
        ("sent_at", "Sent"),
        ("attempt", "Attempt"),
    ),
    # Reminders sent (or tried) after the invitation (kombo_sync.lifecycle).
    "reminders": (
        ("order_id", "Order"),
        ("number", "Reminder"),
        ("channel", "Channel"),
        ("state", "State"),
        ("external_id", "Reminder id"),
        ("attempts", "Attempts"),
        ("last_error", "Last error"),
        ("due_at", "Due"),
        ("sent_at", "Sent"),
    ),
    "versions": (
        ("order_id", "Order"),
        ("payload_hash", "Version"),
        ("state", "State"),
        ("result_status", "Result status"),
        ("score", "Score"),
        ("attempts", "Attempts"),
        ("code", "Last refusal (Kombo code)"),
        ("message", "Refusal message"),
        ("log_url", "Kombo log"),
        ("discard_reason", "Discard reason"),
        ("created_at", "Queued"),
        ("updated_at", "Last change"),
        ("sent_at", "Sent"),
    ),
}
COLUMNS["runs"] = (
    ("job", "Job"),
    ("run_id", "Run"),
    ("status", "Status"),
    ("started_at", "Started"),
    ("finished_at", "Finished"),
    ("duration_s", "Duration (s)"),
    ("summary", "Summary"),
)
COLUMNS["erasures"] = (
    ("erased_at", "Erased at"),
    ("kind", "Kind"),
    ("reason", "Reason"),
    ("requested_by", "Requested by"),
    ("run_id", "Run"),
    ("integration_id", "Integration"),
    ("order_count", "Orders"),
    ("counts", "Counts"),
)
COLUMNS["funnel"] = (
    ("bucket", "Period"),
    ("received", "Received"),
    ("invited", "Invited"),
    ("finished", "Finished"),
    ("written_back", "Written back"),
    ("invite_latency_avg_s", "Invitation latency avg (s)"),
    ("writeback_lag_avg_s", "Write-back lag avg (s)"),
    ("webhooks_2xx", "Webhooks 2xx"),
    ("webhooks_422", "Webhooks 422"),
    ("webhooks_other_4xx", "Webhooks other 4xx"),
    ("webhooks_5xx", "Webhooks 5xx"),
)
CANDIDATE_COLUMNS = frozenset({"candidate_email", "candidate_name"})


def mask_emails(text: str | None) -> str | None:
    """The text with every e-mail address replaced (quarantine reasons may quote a bad address)."""
    return replace_emails(text, "[e-mail hidden]")


def _answer(body: Any) -> str:
    """A short answer line from a stored webhook response body; its fields never hold candidate data."""
    if not isinstance(body, Mapping):
        return ""
    parts = [str(body[key]) for key in ("status", "error", "message", "order_id") if body.get(key)]
    if body.get("already_known"):
        parts.append("already known")
    return " · ".join(parts)


def recent_order_counts(today: datetime, since: datetime) -> sa.Select[Any]:
    """Orders received since `since` (and since `today`) per integration and state, in one GROUP BY that reads
    only the range of the (received_at, integration_id, state) index.

    Grouping by the bare columns would make SQLite walk the whole (integration_id, state) index in group order
    instead (`not_by_index`)."""
    integration = not_by_index(orders.c.integration_id)
    state = not_by_index(orders.c.state)
    return (
        sa.select(
            integration.label("integration_id"),
            state.label("state"),
            sa.func.count().label("week"),
            sa.func.sum(sa.case((orders.c.received_at >= today, 1), else_=0)).label("today"),
        )
        .where(orders.c.received_at >= since)
        .group_by(integration, state)
    )


# The funnel's periods: (label, length, bucket). "today" starts at midnight UTC and is counted per hour.
PERIODS: dict[str, tuple[str, timedelta | None, str]] = {
    "today": ("Today (UTC)", None, "hour"),
    "7d": ("Last 7 days", timedelta(days=7), "day"),
    "30d": ("Last 30 days", timedelta(days=30), "day"),
}
# Upper bounds (seconds) of the latency histograms' bins; the last bin is open.
LATENCY_BINS = (60, 300, 3600, 86400)
LATENCY_BIN_LABELS = ("< 1 min", "1-5 min", "5-60 min", "1-24 h", "> 24 h")


BUCKET_FORMATS = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d"}


def _bucket(column: sa.ColumnElement[Any], unit: str, dialect: str) -> sa.ColumnElement[Any]:
    """The UTC hour or day of a timestamp: PostgreSQL truncates it (a timestamp; `to_char` on every row cost
    hundreds of ms a month), SQLite keeps the text prefix ("YYYY-MM-DD HH" or "YYYY-MM-DD") of the UTC text it
    stores. `_bucket_key` makes both the same text."""
    if dialect == "postgresql":
        return sa.func.date_trunc(unit, sa.func.timezone("UTC", column))
    return sa.func.substr(column, 1, 13 if unit == "hour" else 10)


def _bucket_key(value: Any, unit: str) -> str:
    if isinstance(value, datetime):
        return value.strftime(BUCKET_FORMATS[unit])
    return "" if value is None else str(value)


def _seconds_between(start: sa.ColumnElement[Any], end: sa.ColumnElement[Any], dialect: str) -> Any:
    """`end - start` in seconds (NULL when either is NULL), on both databases."""
    if dialect == "postgresql":
        return sa.func.extract("epoch", end - start)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def _once_per_row(query: sa.Select[Any], name: str, dialect: str) -> Any:
    """`query` as a subquery whose columns are computed once per row. SQLite would otherwise inline them into
    every aggregate that uses them (a latency used by the sum and five histogram bins was parsed from text twelve
    times per row: 440 ms for a month of a million-order store); a MATERIALIZED CTE computes each once."""
    if dialect == "sqlite":
        return query.cte(name).prefix_with("MATERIALIZED")
    return query.subquery(name)


def _histogram(seconds: Any) -> list[sa.ColumnElement[Any]]:
    """How many values fall below each of `LATENCY_BINS` (cumulative: one comparison per bin and row);
    `_bins` turns them into the bins' counts."""
    return [
        sa.func.sum(sa.case((seconds < upper, 1), else_=0)).label(f"below{index}")
        for index, upper in enumerate(LATENCY_BINS)
    ]


def _bins(row: Any, total: int) -> list[int]:
    """The counts per bin of `LATENCY_BINS` (the last one open) from `_histogram`'s cumulative counts."""
    below = [int(getattr(row, f"below{index}") or 0) for index in range(len(LATENCY_BINS))]
    edges = [0, *below, total]
    return [edges[index + 1] - edges[index] for index in range(len(LATENCY_BINS) + 1)]


@dataclass
class Funnel:
    """The funnel and trends of one period: totals, one row per bucket (hour or day), latency histograms."""

    period: str
    label: str
    since: datetime
    until: datetime
    unit: str
    buckets: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    invite_latency: list[int] = field(default_factory=list)
    writeback_lag: list[int] = field(default_factory=list)
    webhook_statuses: dict[int, int] = field(default_factory=dict)
    invite_latency_avg_s: float | None = None
    writeback_lag_avg_s: float | None = None


def _summary_text(summary: Any) -> str:
    """A run's JSON summary as one line (`key=value, ...`); summaries hold counts, never candidate data."""
    if isinstance(summary, Mapping):
        return ", ".join(f"{key}={value}" for key, value in summary.items())
    return "" if summary is None else str(summary)


@dataclass
class OrderHistory:
    """Everything the state store knows about the orders a lookup found."""

    term: str
    orders: list[dict[str, Any]] = field(default_factory=list)
    invitations: list[dict[str, Any]] = field(default_factory=list)
    reminders: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)


class ConsoleQueries:
    """Read-only queries behind the console's pages; `clock` gives "now" (the store's clock by default)."""

    def __init__(self, store: StateStore, *, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self._clock = clock or store.now

    # Overview ------------------------------------------------------------------------------------------

    def overview(self) -> list[dict[str, Any]]:
        """One row per integration (deleted ones last), unhealthy first: identity, packages, last poll,
        orders today and in the last 7 days by state, results written, dead letters, quarantined rows,
        the newest error (a dead letter, or a failed invitation of the last 7 days)."""
        now = self._clock()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        week_ago = now - timedelta(days=7)
        order_counts = recent_order_counts(today, week_ago)
        dead_counts = (
            sa.select(result_outbox.c.integration_id, sa.func.count().label("count"))
            .where(result_outbox.c.state.in_(DEAD_LETTER_STATES))
            .group_by(result_outbox.c.integration_id)
        )
        # Only sent rows have a sent_at: a range of the (sent_at, integration_id, state) index. SQLite, without
        # statistics, would rather walk every sent row of the state index (60 ms at 100,000 results).
        sent_counts = (
            sa.select(result_outbox.c.integration_id, sa.func.count().label("count"))
            .where(result_outbox.c.sent_at >= week_ago, not_by_index(result_outbox.c.state) == SENT)
            .group_by(result_outbox.c.integration_id)
        )
        newest_dead = (
            sa.select(
                result_outbox.c.integration_id,
                result_outbox.c.last_error_code,
                result_outbox.c.last_error_message,
                result_outbox.c.log_url,
                result_outbox.c.updated_at,
                sa.func.row_number()
                .over(partition_by=result_outbox.c.integration_id, order_by=result_outbox.c.updated_at.desc())
                .label("rank"),
            )
            .where(result_outbox.c.state.in_(DEAD_LETTER_STATES))
            .subquery()
        )
        # Failed invitations of the last 7 days only (failed orders pile up forever), read from the recent range
        # of the reception time index (measured at 1M orders on SQLite: 17 ms, against 500 ms by integration).
        newest_failed = (
            sa.select(
                orders.c.integration_id,
                orders.c.last_error,
                orders.c.updated_at,
                sa.func.row_number()
                .over(partition_by=not_by_index(orders.c.integration_id), order_by=orders.c.updated_at.desc())
                .label("rank"),
            )
            .where(orders.c.received_at >= week_ago, not_by_index(orders.c.state) == "failed")
            .subquery()
        )
        open_quarantine = (
            sa.select(quarantine.c.job, quarantine.c.source_key, orders.c.integration_id, sa.func.count())
            .select_from(quarantine.outerjoin(orders, orders.c.id == quarantine.c.source_key))
            .where(quarantine.c.resolved_at.is_(None))
            .group_by(quarantine.c.job, quarantine.c.source_key, orders.c.integration_id)
        )
        with self.store.transaction(readonly=True) as conn:
            registry = conn.execute(
                sa.select(
                    integrations.c.id,
                    integrations.c.tool,
                    integrations.c.customer_key,
                    integrations.c.organization_name,
                    integrations.c.status,
                    integrations.c.enabled,
                    integrations.c.published_package_ids,
                    integrations.c.packages_published_at,
                    poll_coverage.c.updated_at.label("last_poll_at"),
                ).select_from(
                    integrations.outerjoin(poll_coverage, poll_coverage.c.integration_id == integrations.c.id)
                )
            ).all()
            counts = conn.execute(order_counts).all()
            dead_letters = conn.execute(dead_counts).all()
            sent = conn.execute(sent_counts).all()
            dead = conn.execute(sa.select(newest_dead).where(newest_dead.c.rank == 1)).all()
            failed = conn.execute(sa.select(newest_failed).where(newest_failed.c.rank == 1)).all()
            jailed = conn.execute(open_quarantine).all()
            last_poll = conn.execute(
                sa.select(runs.c.finished_at, runs.c.summary)
                .where(runs.c.job == POLL_JOB, runs.c.finished_at.is_not(None))
                .order_by(runs.c.started_at.desc())
                .limit(1)
            ).first()

        rows: dict[str, dict[str, Any]] = {}
        by_customer: dict[str, list[str]] = {}
        for item in registry:
            package_ids = item.published_package_ids
            rows[item.id] = {
                "integration_id": item.id,
                "customer": item.organization_name or item.customer_key or "",
                "customer_key": item.customer_key,
                "tool": item.tool,
                "status": item.status,
                "enabled": bool(item.enabled),
                "packages": len(package_ids) if isinstance(package_ids, list) else None,
                "packages_published_at": item.packages_published_at,
                "last_poll_at": item.last_poll_at,
                **{f"today_{state}": 0 for state in ORDER_STATE_COLUMNS},
                **{f"week_{state}": 0 for state in ORDER_STATE_COLUMNS},
                "results_written_7d": 0,
                "dead_letters": 0,
                "quarantined": 0,
                "last_error": None,
                "last_error_at": None,
                "last_error_log_url": None,
                "poll_failed": False,
            }
            if item.customer_key:
                by_customer.setdefault(item.customer_key, []).append(item.id)

        def row_for(integration_id: str | None) -> dict[str, Any] | None:
            # Orders of an integration the registry does not know still show (as unknown), never vanish.
            if integration_id is None:
                return None
            if integration_id not in rows:
                rows[integration_id] = {
                    **{key: None for key, _label in COLUMNS["overview"]},
                    **{f"today_{state}": 0 for state in ORDER_STATE_COLUMNS},
                    **{f"week_{state}": 0 for state in ORDER_STATE_COLUMNS},
                    "integration_id": integration_id,
                    "customer": "",
                    "status": "UNKNOWN",
                    "enabled": False,
                    "results_written_7d": 0,
                    "dead_letters": 0,
                    "quarantined": 0,
                }
            return rows[integration_id]

        for integration_id, state, week, today_count in counts:
            row = row_for(integration_id)
            # inviting is on its way to invited; cancelled is counted with rejected (both closed unserved).
            column = {"inviting": "received", "cancelled": "rejected"}.get(state, state)
            if row is not None and column in ORDER_STATE_COLUMNS:
                row[f"week_{column}"] += int(week)
                row[f"today_{column}"] += int(today_count or 0)
        for column, found in (("dead_letters", dead_letters), ("results_written_7d", sent)):
            for integration_id, count in found:
                row = row_for(integration_id)
                if row is not None:
                    row[column] += int(count)
        for item in failed:
            row = row_for(item.integration_id)
            if row is not None and item.last_error:
                row.update(last_error=f"invitation: {item.last_error}", last_error_at=item.updated_at)
        for item in dead:
            row = row_for(item.integration_id)
            if row is not None and (row["last_error_at"] is None or item.updated_at >= row["last_error_at"]):
                text = ": ".join(part for part in (item.last_error_code, item.last_error_message) if part)
                row.update(
                    last_error=f"result: {text}",
                    last_error_at=item.updated_at,
                    last_error_log_url=item.log_url,
                )
        # The newest finished poll's failures: an integration stays marked until a later poll reads it.
        poll_failures: Mapping[str, Any] = {}
        if last_poll is not None and isinstance(last_poll.summary, Mapping):
            failures = last_poll.summary.get("integrations_failed")
            poll_failures = failures if isinstance(failures, Mapping) else {}
        for integration_id, text in poll_failures.items():
            row = row_for(str(integration_id))
            if row is None or last_poll is None:
                continue
            row["poll_failed"] = True
            if row.get("last_error_at") is None or last_poll.finished_at >= row["last_error_at"]:
                row.update(
                    last_error=f"poll: {text}", last_error_at=last_poll.finished_at, last_error_log_url=None
                )
        for job, source_key, integration_id, count in jailed:
            targets = [integration_id] if integration_id else []
            if not targets and job == "catalog" and source_key:
                targets = by_customer.get(source_key.split("/", 1)[0], [])
            for target in targets:
                row = row_for(target)
                if row is not None:
                    row["quarantined"] += int(count)

        for row in rows.values():
            row["problems"] = "; ".join(self._problems(row, now))
            row["health"] = "unhealthy" if row["problems"] else "ok"
        return sorted(
            rows.values(),
            key=lambda row: (
                row["status"] == "DELETED",
                row["health"] == "ok",
                str(row["customer"] or "").lower(),
                row["integration_id"],
            ),
        )

    @staticmethod
    def _problems(row: Mapping[str, Any], now: datetime) -> list[str]:
        problems: list[str] = []
        served = row["status"] == "ACTIVE" and row["enabled"]
        if row["status"] == "UNKNOWN":
            problems.append("not in the registry")
        elif row["status"] != "DELETED" and not served:
            problems.append("not served" if row["status"] == "ACTIVE" else f"status {row['status']}")
        if served and (row["last_poll_at"] is None or now - row["last_poll_at"] > STALE_POLL):
            problems.append("no recent poll")
        if row.get("poll_failed"):
            problems.append("last poll failed")
        if row["dead_letters"]:
            problems.append(f"{row['dead_letters']} dead letter(s)")
        if row["week_failed"]:
            problems.append(f"{row['week_failed']} failed invitation(s)")
        if row["quarantined"]:
            problems.append(f"{row['quarantined']} quarantined row(s)")
        return problems

    # Dead letters and quarantine -------------------------------------------------------------------------

    def dead_letters(
        self, *, integration_id: str | None = None, limit: int = MAX_ROWS
    ) -> list[dict[str, Any]]:
        """Dead and not-writable results, newest first (walks the state index)."""
        query = (
            sa.select(
                result_outbox.c.order_id,
                result_outbox.c.payload_hash,
                result_outbox.c.integration_id,
                result_outbox.c.state,
                result_outbox.c.last_error_code.label("code"),
                result_outbox.c.last_error_message.label("message"),
                result_outbox.c.log_url,
                result_outbox.c.attempts,
                result_outbox.c.created_at.label("first_attempt_at"),
                result_outbox.c.updated_at.label("last_attempt_at"),
            )
            .where(result_outbox.c.state.in_(DEAD_LETTER_STATES))
            .order_by(result_outbox.c.updated_at.desc(), result_outbox.c.order_id)
            .limit(limit)
        )
        if integration_id:
            query = query.where(result_outbox.c.integration_id == integration_id)
        with self.store.transaction(readonly=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def quarantine(
        self,
        *,
        with_candidates: bool = False,
        integration_id: str | None = None,
        ids: Iterable[int] | None = None,
        limit: int = MAX_ROWS,
    ) -> list[dict[str, Any]]:
        """Unresolved quarantined rows, newest first, with the integration of their order when known (only
        those of `integration_id`, only the rows `ids` when given); the quarantined row itself (which may hold
        candidate data) is never read."""
        query = (
            sa.select(
                quarantine.c.id,
                quarantine.c.job,
                quarantine.c.source_key,
                orders.c.integration_id,
                quarantine.c.reason,
                quarantine.c.run_id,
                quarantine.c.created_at,
            )
            .select_from(quarantine.outerjoin(orders, orders.c.id == quarantine.c.source_key))
            .where(quarantine.c.resolved_at.is_(None))
            .order_by(quarantine.c.id.desc())
            .limit(limit)
        )
        if integration_id:
            query = query.where(orders.c.integration_id == integration_id)
        if ids is not None:
            query = query.where(quarantine.c.id.in_(list(ids)))
        with self.store.transaction(readonly=True) as conn:
            found = [dict(row) for row in conn.execute(query).mappings()]
        if not with_candidates:
            for row in found:
                row["reason"] = mask_emails(row["reason"])
        return found

    def known_orders(self, order_ids: Iterable[str]) -> dict[str, bool]:
        """Which of `order_ids` the state store knows (an order, or a result queued for it), each with whether
        it has a dead letter: a repair naming any other id would do nothing (primary key and outbox lookups)."""
        wanted = list(dict.fromkeys(order_ids))
        found: dict[str, bool] = {}
        with self.store.transaction(readonly=True) as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                found.update(
                    (order_id, False)
                    for order_id in conn.execute(
                        sa.select(orders.c.id).where(orders.c.id.in_(chunk))
                    ).scalars()
                )
                outbox = conn.execute(
                    sa.select(result_outbox.c.order_id, result_outbox.c.state).where(
                        result_outbox.c.order_id.in_(chunk)
                    )
                ).all()
                for order_id, state in outbox:
                    found[order_id] = found.get(order_id, False) or state in DEAD_LETTER_STATES
        return found

    # Webhook log ------------------------------------------------------------------------------------------

    def webhook_log(self, *, status: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The newest webhook events with the answer each got (the table holds no candidate data)."""
        query = (
            sa.select(webhook_events)
            .order_by(webhook_events.c.received_at.desc(), webhook_events.c.id)
            .limit(min(limit, MAX_ROWS))
        )
        if status is not None:
            query = query.where(webhook_events.c.response_status == status)
        with self.store.transaction(readonly=True) as conn:
            found = [dict(row) for row in conn.execute(query).mappings()]
        for row in found:
            row["answer"] = _answer(row.pop("response_body"))
        return found

    # Order lookup --------------------------------------------------------------------------------------------

    def order_history(self, term: str, *, with_candidates: bool = False) -> OrderHistory:
        """The orders whose Kombo order id, invitation id or ATS application id is `term` (each an index
        lookup), with their invitations, reminders, webhook events and result versions (Kombo's answers included)."""
        term = term.strip()
        history = OrderHistory(term)
        if not term:
            return history
        columns = [
            orders.c.id,
            orders.c.integration_id,
            orders.c.package_id,
            orders.c.state,
            orders.c.kombo_status,
            orders.c.first_seen_via,
            orders.c.application_remote_id,
            orders.c.job_name,
            orders.c.attempts,
            orders.c.last_error,
            orders.c.invitation_id,
            orders.c.channel,
            orders.c.received_at,
            orders.c.invited_at,
            orders.c.expired_at,
            orders.c.updated_at,
        ]
        if with_candidates:
            columns += [orders.c.candidate_email, orders.c.candidate_first_name, orders.c.candidate_last_name]
        by_invitation = sa.select(invitations.c.order_id).where(invitations.c.external_id == term)
        with self.store.transaction(readonly=True) as conn:
            order_ids: list[str] = []
            for query in (
                sa.select(orders.c.id).where(orders.c.id == term),
                sa.select(orders.c.id).where(orders.c.invitation_id == term),
                sa.select(orders.c.id).where(orders.c.application_remote_id == term).limit(100),
                by_invitation,
            ):
                order_ids.extend(value for value in conn.execute(query).scalars() if value not in order_ids)
            if not order_ids:
                # A webhook event may name an order the state store never recorded (e.g. a 401 or 400).
                order_ids = [term]
            for row in conn.execute(
                sa.select(*columns).where(orders.c.id.in_(order_ids)).order_by(orders.c.received_at)
            ).mappings():
                found = dict(row)
                if with_candidates:
                    first = found.pop("candidate_first_name") or ""
                    last = found.pop("candidate_last_name") or ""
                    found["candidate_name"] = f"{first} {last}".strip()
                history.orders.append(found)
            history.invitations = [
                dict(row)
                for row in conn.execute(
                    sa.select(
                        invitations.c.order_id,
                        invitations.c.channel,
                        invitations.c.external_id,
                        invitations.c.sent_at,
                        invitations.c.attempt,
                    ).where(invitations.c.order_id.in_(order_ids))
                ).mappings()
            ]
            history.reminders = [
                dict(row)
                for row in conn.execute(
                    sa.select(*(reminders.c[name] for name, _title in COLUMNS["reminders"]))
                    .where(reminders.c.order_id.in_(order_ids))
                    .order_by(reminders.c.order_id, reminders.c.number)
                ).mappings()
            ]
            events = conn.execute(
                sa.select(webhook_events)
                .where(webhook_events.c.order_id.in_(order_ids))
                .order_by(webhook_events.c.received_at)
            ).mappings()
            for event in events:
                found_event = dict(event)
                found_event["answer"] = _answer(found_event.pop("response_body"))
                history.webhooks.append(found_event)
            for version in conn.execute(
                sa.select(result_outbox)
                .where(result_outbox.c.order_id.in_(order_ids))
                .order_by(result_outbox.c.order_id, result_outbox.c.created_at)
            ).mappings():
                payload = version["payload_json"] if isinstance(version["payload_json"], Mapping) else {}
                history.versions.append(
                    {
                        "order_id": version["order_id"],
                        "payload_hash": version["payload_hash"],
                        "state": version["state"],
                        "result_status": payload.get("status"),
                        "score": payload.get("score"),
                        "attempts": version["attempts"],
                        "code": version["last_error_code"],
                        "message": version["last_error_message"],
                        "log_url": version["log_url"],
                        "discard_reason": version["discard_reason"],
                        "created_at": version["created_at"],
                        "updated_at": version["updated_at"],
                        "sent_at": version["sent_at"],
                    }
                )
        if not history.orders and not history.webhooks and not history.versions:
            return OrderHistory(term)
        return history

    def funnel(self, period: str = "7d") -> Funnel:
        """Received -> invited -> finished -> written back over the period, per hour (today) or day, with the
        invitation latency, the write-back lag and the webhook answers by status; each a GROUP BY over a range
        of a time index (migrations 0008 and 0011)."""
        if period not in PERIODS:
            raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")
        label, length, unit = PERIODS[period]
        now = self._clock()
        since = now.replace(hour=0, minute=0, second=0, microsecond=0) if length is None else now - length
        dialect = self.store.dialect
        result = Funnel(period, label, since, now, unit)

        received = _once_per_row(
            sa.select(
                _bucket(orders.c.received_at, unit, dialect).label("bucket"),
                _seconds_between(orders.c.received_at, orders.c.invited_at, dialect).label("seconds"),
            ).where(orders.c.received_at >= since),
            "received_in_period",
            dialect,
        )
        order_rows = sa.select(
            received.c.bucket,
            sa.func.count().label("received"),
            sa.func.count(received.c.seconds).label("invited"),
            sa.func.sum(received.c.seconds).label("latency_sum"),
            *_histogram(received.c.seconds),
        ).group_by(received.c.bucket)
        # Finished: a result was queued for the order (the candidate completed); superseded versions of a result
        # are not counted again.
        queued_bucket = _bucket(result_outbox.c.created_at, unit, dialect).label("bucket")
        queued_rows = (
            sa.select(queued_bucket, sa.func.count().label("finished"))
            .where(result_outbox.c.created_at >= since, result_outbox.c.state != "superseded")
            .group_by(queued_bucket)
        )
        # Written back: sent in the period; the lag from the warehouse row (the candidate finishing) to Kombo.
        sent = _once_per_row(
            sa.select(
                _bucket(result_outbox.c.sent_at, unit, dialect).label("bucket"),
                _seconds_between(
                    sa.func.coalesce(result_outbox.c.source_updated_at, result_outbox.c.created_at),
                    result_outbox.c.sent_at,
                    dialect,
                ).label("seconds"),
            ).where(result_outbox.c.sent_at >= since, not_by_index(result_outbox.c.state) == SENT),
            "sent_in_period",
            dialect,
        )
        sent_rows = sa.select(
            sent.c.bucket,
            sa.func.count().label("written_back"),
            sa.func.sum(sent.c.seconds).label("lag_sum"),
            *_histogram(sent.c.seconds),
        ).group_by(sent.c.bucket)
        event_bucket = _bucket(webhook_events.c.received_at, unit, dialect).label("bucket")
        event_rows = (
            sa.select(event_bucket, webhook_events.c.response_status, sa.func.count().label("events"))
            .where(webhook_events.c.received_at >= since)
            .group_by(event_bucket, webhook_events.c.response_status)
        )
        with self.store.transaction(readonly=True) as conn:
            found_orders = conn.execute(order_rows).all()
            found_queued = conn.execute(queued_rows).all()
            found_sent = conn.execute(sent_rows).all()
            found_events = conn.execute(event_rows).all()

        buckets: dict[str, dict[str, Any]] = {}
        for key in self._bucket_keys(since, now, unit):
            buckets[key] = {column: 0 for column, _label in COLUMNS["funnel"]}
            buckets[key].update(bucket=key, invite_latency_avg_s=None, writeback_lag_avg_s=None)

        def bucket(key: Any) -> dict[str, Any]:
            name = _bucket_key(key, unit)
            if name not in buckets:
                buckets[name] = {column: 0 for column, _label in COLUMNS["funnel"]}
                buckets[name].update(bucket=name, invite_latency_avg_s=None, writeback_lag_avg_s=None)
            return buckets[name]

        bins = len(LATENCY_BINS) + 1
        result.invite_latency = [0] * bins
        result.writeback_lag = [0] * bins
        latency_total, lag_total = 0.0, 0.0
        for row in found_orders:
            target = bucket(row.bucket)
            target["received"] += int(row.received)
            target["invited"] += int(row.invited)
            if row.invited:
                target["invite_latency_avg_s"] = round(float(row.latency_sum or 0) / int(row.invited), 1)
            latency_total += float(row.latency_sum or 0)
            for index, count in enumerate(_bins(row, int(row.invited))):
                result.invite_latency[index] += count
        for row in found_queued:
            bucket(row.bucket)["finished"] += int(row.finished)
        for row in found_sent:
            target = bucket(row.bucket)
            target["written_back"] += int(row.written_back)
            if row.written_back:
                target["writeback_lag_avg_s"] = round(float(row.lag_sum or 0) / int(row.written_back), 1)
            lag_total += float(row.lag_sum or 0)
            for index, count in enumerate(_bins(row, int(row.written_back))):
                result.writeback_lag[index] += count
        for row in found_events:
            status_code = int(row.response_status) if row.response_status is not None else 0
            result.webhook_statuses[status_code] = result.webhook_statuses.get(status_code, 0) + int(
                row.events
            )
            target = bucket(row.bucket)
            target[self._status_column(status_code)] += int(row.events)

        result.buckets = [buckets[key] for key in sorted(buckets)]
        result.totals = {
            name: sum(int(row[name]) for row in result.buckets)
            for name in ("received", "invited", "finished", "written_back")
        }
        if result.totals["invited"]:
            result.invite_latency_avg_s = round(latency_total / result.totals["invited"], 1)
        if result.totals["written_back"]:
            result.writeback_lag_avg_s = round(lag_total / result.totals["written_back"], 1)
        return result

    @staticmethod
    def _status_column(status_code: int) -> str:
        if 200 <= status_code < 300:
            return "webhooks_2xx"
        if status_code == 422:
            return "webhooks_422"
        if 400 <= status_code < 500:
            return "webhooks_other_4xx"
        return "webhooks_5xx"  # 5xx, or no answer recorded (the handler failed before answering)

    @staticmethod
    def _bucket_keys(since: datetime, until: datetime, unit: str) -> list[str]:
        """Every bucket of the period, so an hour or day without orders shows as zero, not as a gap."""
        step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
        pattern = BUCKET_FORMATS[unit]
        start = since.replace(minute=0, second=0, microsecond=0)
        if unit == "day":
            start = start.replace(hour=0)
        keys = []
        while start <= until:
            keys.append(start.strftime(pattern))
            start += step
        return keys

    def run_history(self, *, job: str | None = None, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
        """The newest job runs (the `runs` audit table) with their status and summary counts."""
        query = (
            sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(min(limit, MAX_ROWS))
        )
        if job:
            query = query.where(runs.c.job == job)
        with self.store.transaction(readonly=True) as conn:
            found = [dict(row) for row in conn.execute(query).mappings()]
        for row in found:
            started, finished = row["started_at"], row["finished_at"]
            row["duration_s"] = (
                round((finished - started).total_seconds(), 1) if started and finished else None
            )
            row["summary"] = _summary_text(row["summary"])
        return found

    def run_jobs(self) -> list[str]:
        """The jobs that have runs (for the page's filter)."""
        with self.store.transaction(readonly=True) as conn:
            return [
                str(job)
                for job in conn.execute(sa.select(runs.c.job).distinct().order_by(runs.c.job)).scalars()
            ]

    def erasures(self, *, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
        """The newest erasures of candidate data: kind, reason, who asked, counts, how many orders (the ids
        stay in the database; the record holds no personal data)."""
        query = (
            sa.select(
                erasures.c.erased_at,
                erasures.c.kind,
                erasures.c.reason,
                erasures.c.requested_by,
                erasures.c.run_id,
                erasures.c.integration_id,
                sa.func.json_array_length(erasures.c.order_ids).label("order_count"),
                erasures.c.counts,
            )
            .order_by(erasures.c.erased_at.desc(), erasures.c.id.desc())
            .limit(min(limit, MAX_ROWS))
        )
        with self.store.transaction(readonly=True) as conn:
            found = [dict(row) for row in conn.execute(query).mappings()]
        for row in found:
            row["counts"] = _summary_text(row["counts"])
            # A free-text reason might quote an address by mistake: never shown.
            row["reason"] = mask_emails(row["reason"])
        return found
