"""The intake's Airflow tasks, as plain functions of the task context (the DAG file only wires them).

Dependencies are built here, at task run time: settings, the state store, the Kombo client and the invitation
channels, all from Airflow connections. Every run is written to the state store's run audit.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kombo_sync.intake.dispatch import dispatch_invitations
from kombo_sync.intake.poll import poll_orders
from kombo_sync.intake.window import SCHEDULED, poll_window
from kombo_sync.invites import Inviters
from kombo_sync.settings import load_settings

log = logging.getLogger(__name__)

POLL_JOB = "intake.poll"
DISPATCH_JOB = "intake.dispatch"


try:  # fail the run at once: retrying the report cannot make an integration pollable
    from airflow.sdk.exceptions import AirflowFailException as _RunFailure
except ImportError:  # pragma: no cover - outside Airflow
    _RunFailure = RuntimeError  # type: ignore[assignment,misc]


class IntakeRunFailed(_RunFailure):
    """The run finished its work but some integrations could not be polled (named in the message)."""


def _params(context: Mapping[str, Any]) -> tuple[list[str] | None, bool]:
    params = context.get("params") or {}
    ids = [str(i).strip() for i in (params.get("integration_ids") or []) if str(i).strip()]
    return (ids or None), bool(params.get("dry_run", False))


def _run_type(context: Mapping[str, Any]) -> str | None:
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    return None if run_type is None else str(getattr(run_type, "value", run_type))


def _previous_success_end(context: Mapping[str, Any]) -> datetime | None:
    try:
        # A lazy proxy: it wraps None when there was no successful run, and `proxy is None` is False.
        value = context.get("prev_data_interval_end_success")
        return datetime.fromisoformat(value.isoformat()) if isinstance(value, datetime) else None
    except Exception as exc:  # the lookup goes to the API server; without it, no gap extension
        log.warning(
            "previous successful run unknown (%s); polling this run's window only", type(exc).__name__
        )
        return None


def _run_id(context: Mapping[str, Any]) -> str | None:
    dag_run = context.get("dag_run")
    return getattr(dag_run, "run_id", None) or context.get("run_id")


def poll_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `poll`: record every open order in the run's window."""
    from kombo_sync.runtime import kombo_client, state_store
    from kombo_sync.state.audit import RunAudit

    settings = load_settings()
    integration_ids, dry_run = _params(context)
    run_type = _run_type(context)
    window = poll_window(
        settings.intake,
        now=datetime.now(UTC),
        data_interval_start=context.get("data_interval_start"),
        data_interval_end=context.get("data_interval_end"),
        run_type=run_type,
        # Only scheduled runs reach back to the last success (the lookup is an API call).
        previous_success_end=_previous_success_end(context) if run_type == SCHEDULED else None,
    )
    store = state_store(settings)
    audit = RunAudit(store)
    audit_id = audit.start(POLL_JOB, _run_id(context))
    try:
        summary = poll_orders(
            store,
            kombo_client(settings),
            settings,
            window,
            integration_ids=integration_ids,
            dry_run=dry_run,
            run_id=_run_id(context),
        )
    except BaseException as exc:
        audit.finish(audit_id, "failed", {"error": type(exc).__name__})
        raise
    audit.finish(audit_id, "failed" if summary["integrations_failed"] else "success", summary)
    return summary


def dispatch_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `dispatch`: invite every due order (runs even when the poll failed for some integrations)."""
    from kombo_sync.runtime import kombo_client, state_store
    from kombo_sync.state.audit import RunAudit

    settings = load_settings()
    integration_ids, dry_run = _params(context)
    store = state_store(settings)
    ti = context.get("ti") or context.get("task_instance")
    owner = ":".join(
        str(part)
        for part in (
            "intake",
            _run_id(context),
            getattr(ti, "task_id", "dispatch"),
            getattr(ti, "try_number", "?"),
            socket.gethostname(),
            os.getpid(),
        )
    )[:255]
    audit = RunAudit(store)
    audit_id = audit.start(DISPATCH_JOB, _run_id(context))
    try:
        summary = dispatch_invitations(
            store,
            kombo_client(settings),
            Inviters(settings),
            settings,
            owner=owner,
            integration_ids=integration_ids,
            dry_run=dry_run,
        )
    except BaseException as exc:
        audit.finish(audit_id, "failed", {"error": type(exc).__name__})
        raise
    audit.finish(audit_id, "success", summary)
    return summary


def report_task(
    poll_summary: Mapping[str, Any] | None, dispatch_summary: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Task `report`: one line for the UI, and a failed run when integrations could not be polled (so the
    next scheduled run reaches back to the last successful one)."""
    if poll_summary is None:
        raise IntakeRunFailed("the poll task did not finish (see its log); invitations were still dispatched")
    dispatch_summary = dispatch_summary or {}
    report = {
        "orders_seen": poll_summary.get("orders_seen", 0),
        "orders_new": poll_summary.get("orders_new", 0),
        "invited": dispatch_summary.get("invited", 0),
        "retry_later": dispatch_summary.get("retry_later", 0),
        "failed": dispatch_summary.get("failed", 0),
        "closed": sum(dispatch_summary.get(k, 0) for k in ("cancelled", "rejected", "duplicate")),
    }
    log.info("intake run: %s", report)
    failed = poll_summary.get("integrations_failed") or {}
    if failed:
        raise IntakeRunFailed(
            f"{len(failed)} integration(s) could not be polled: "
            + "; ".join(f"{integration}: {error}" for integration, error in sorted(failed.items()))
        )
    return report
