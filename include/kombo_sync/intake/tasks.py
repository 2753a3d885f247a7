"""The intake's Airflow tasks, as plain functions of the task context (the DAG file only wires them).

Dependencies are built here, at task run time: settings, the state store, the Kombo client and the invitation
channels, all from Airflow connections. Every run is written to the state store's run audit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kombo_sync.candidate_hash import matching_hasher
from kombo_sync.intake.claims import IntakeOrders
from kombo_sync.intake.dispatch import dispatch_invitations
from kombo_sync.intake.poll import poll_orders
from kombo_sync.intake.window import poll_window
from kombo_sync.invites import Inviters
from kombo_sync.runs import StepFailed, audited, flag, run_info, scope_params
from kombo_sync.settings import load_settings

log = logging.getLogger(__name__)

POLL_JOB = "intake.poll"
DISPATCH_JOB = "intake.dispatch"


class IntakeRunFailed(StepFailed):
    """The run finished its work but some integrations could not be polled (named in the message)."""


def poll_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `poll`: record every open order in the run's window."""
    from kombo_sync.runtime import kombo_client, state_store

    settings = load_settings()
    info = run_info(context)
    integration_ids, dry_run = scope_params(info)
    window = poll_window(
        settings.intake,
        now=datetime.now(UTC),
        data_interval_start=info.data_interval_start,
        data_interval_end=info.data_interval_end,
        run_type=info.run_type,
        previous_success_end=info.previous_success_end,
    )
    store = state_store(settings)
    with audited(store, POLL_JOB, info.run_id) as outcome:
        summary = poll_orders(
            store,
            kombo_client(settings),
            settings,
            window,
            integration_ids=integration_ids,
            dry_run=dry_run,
            run_id=info.run_id,
            # Backfills: each window is read once per backfill, not once per run (docs/intake.md).
            skip_covered=info.is_backfill and not flag(info.params.get("repoll"), "repoll"),
        )
        outcome.summary = summary
        outcome.status = "failed" if summary["integrations_failed"] else "success"
    return summary


def dispatch_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `dispatch`: invite every due order (runs even when the poll failed for some integrations)."""
    from kombo_sync.runtime import kombo_client, state_store

    settings = load_settings()
    info = run_info(context)
    integration_ids, dry_run = scope_params(info)
    store = state_store(settings)
    owner = info.lease_owner("intake")
    with audited(store, DISPATCH_JOB, info.run_id) as outcome:
        family = info.earlier_tries("intake")
        if family and not dry_run:
            # A retry after a killed try: its orders go out now, not when their leases run out.
            IntakeOrders(store).expire_leases_of_earlier_tries(family, owner)
        outcome.summary = dispatch_invitations(
            store,
            kombo_client(settings),
            Inviters(settings),
            settings,
            owner=owner,
            integration_ids=integration_ids,
            dry_run=dry_run,
            hasher=matching_hasher(settings.retention.salt_conn_id),
        )
    return dict(outcome.summary)


def report_task(
    poll_summary: Mapping[str, Any] | None, dispatch_summary: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Task `report`: one line for the UI, and a failed run (not retried) when a step failed or integrations
    could not be polled, so the next scheduled run reaches back to the last successful one."""
    dispatch_summary = dispatch_summary or {}
    report = {
        "orders_seen": (poll_summary or {}).get("orders_seen", 0),
        "orders_new": (poll_summary or {}).get("orders_new", 0),
        **{
            outcome: dispatch_summary.get(outcome, 0)
            for outcome in ("invited", "duplicate", "rejected", "cancelled", "failed", "retry_later")
        },
    }
    log.info("intake run: %s", report)
    report["alerts"] = _alerts()
    if poll_summary is None:
        raise IntakeRunFailed(
            "poll",
            "the task failed (see its log); invitations for orders already recorded were still dispatched",
            "The next scheduled run polls this run's window again; nothing to do unless it keeps failing.",
        )
    failed = poll_summary.get("integrations_failed") or {}
    if failed:
        raise IntakeRunFailed(
            "poll",
            f"{len(failed)} integration(s) could not be polled: "
            + "; ".join(f"{integration}: {error}" for integration, error in sorted(failed.items())),
            "The next scheduled run polls from the end of the last successful run; check the integrations "
            "named here in Kombo if they keep failing.",
        )
    if not dispatch_summary:
        raise IntakeRunFailed(
            "dispatch",
            "the task failed (see its log); claimed orders are released when their lease expires",
            "The next run dispatches them; nothing is sent twice.",
        )
    return report


def _alerts() -> dict[str, Any]:
    """The state-based alerts (dead letters, orders not invited in time, failing integrations, quarantined rows),
    checked at the end of every run; never raises."""
    from kombo_sync.alerts.check import run_alert_checks

    return run_alert_checks()
