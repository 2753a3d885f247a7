"""The reconcile DAG's Airflow tasks, as plain functions of the task context (the DAG file only wires them).

Dependencies are built here, at task run time: settings, the state store, the Kombo client and the invitation
channels (only the platform's is built, and only when an order needs revoking), all from Airflow connections.
Every run is written to the state store's run audit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kombo_sync.reconcile.job import JOB, reconcile_orders
from kombo_sync.runs import StepFailed, audited, run_info, scope_params
from kombo_sync.settings import load_settings

log = logging.getLogger(__name__)

# The counts the report shows, in this order (the summary has them all; lists and dicts stay in the task's XCom).
REPORT_KEYS = (
    "checked",
    "still_open",
    "cancel",
    "cancelled",
    "result_landed",
    "ambiguous",
    "in_flight",
    "already_written",
    "not_listed",
    "unknown_status",
    "revoke_failed",
    "changed_meanwhile",
    "not_checked",
)


def reconcile_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task ``reconcile``: check every invited order not yet written back and repair what drifted."""
    from kombo_sync.invites import Inviters
    from kombo_sync.runtime import kombo_client, state_store

    settings = load_settings()
    info = run_info(context)
    integration_ids, dry_run = scope_params(info)
    store = state_store(settings)
    with audited(None if dry_run else store, f"{JOB}.orders", info.run_id) as outcome:
        summary = reconcile_orders(
            store,
            kombo_client(settings),
            Inviters(settings),
            settings,
            integration_ids=integration_ids,
            dry_run=dry_run,
        )
        outcome.summary = _flat(summary)
        outcome.status = "failed" if summary["integrations_failed"] or summary["revoke_failed"] else "success"
    return summary


def report_task(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """Task ``report``: the counts per outcome in the log; a failed run (not retried) when the reconcile step
    failed, Kombo could not be read for some integrations, or some invitations could not be revoked."""
    if summary is None:
        raise StepFailed(
            "reconcile",
            "the task failed (see its log); what it recorded before stays recorded",
            "The next run checks every order again; a revoked invitation is not revoked twice.",
        )
    report: dict[str, Any] = {key: summary.get(key, 0) for key in REPORT_KEYS}
    report["dry_run"] = bool(summary.get("dry_run"))
    report["revocations"] = {k: v for k, v in (summary.get("revocations") or {}).items() if v}
    log.info("reconcile run: %s", report)
    report["alerts"] = _alerts()
    failed = summary.get("integrations_failed") or {}
    if failed:
        raise StepFailed(
            "reconcile",
            f"{len(failed)} integration(s) could not be read from Kombo: "
            + "; ".join(f"{integration}: {error}" for integration, error in sorted(failed.items())),
            "Their orders were left as they are; the next run checks them again. Check the integrations named "
            "here in Kombo if this keeps failing.",
        )
    if summary.get("revoke_failed"):
        errors = summary.get("revoke_errors") or []
        raise StepFailed(
            "reconcile",
            f"{summary['revoke_failed']} invitation(s) could not be revoked (first: "
            + "; ".join(f"order {e.get('order_id')}: {e.get('error')}" for e in errors[:5])
            + ")",
            "Those orders stay invited and the next run revokes them again; check the platform connection "
            "(kombo_platform) if this keeps failing.",
        )
    return report


def _flat(summary: Mapping[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in summary.items() if not isinstance(value, list | dict)}
    flat.update({f"revocations_{k}": v for k, v in (summary.get("revocations") or {}).items() if v})
    # Which integrations Kombo would not list, with its error code (ids only, like the intake's poll audit).
    flat["integrations_failed"] = dict(summary.get("integrations_failed") or {})
    return flat


def _alerts() -> dict[str, Any]:
    """The state-based alerts, checked at the end of every run like the other jobs; never raises."""
    from kombo_sync.alerts.check import run_alert_checks

    return run_alert_checks()
