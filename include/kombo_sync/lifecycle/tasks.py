"""The ``kombo_lifecycle`` DAG's Airflow tasks, as plain functions of the task context (the DAG file only wires
them).

Dependencies are built here, at task run time: settings, the state store and the invitation channels (each
built only when an order on it needs revoking or reminding), from Airflow connections. Every run that is not a
dry run is written to the state store's run audit (jobs ``lifecycle.expire`` and ``lifecycle.remind``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kombo_sync.lifecycle.job import EXPIRE_JOB, REMIND_JOB, expire_orders, send_reminders
from kombo_sync.runs import StepFailed, audited, run_info, scope_params
from kombo_sync.settings import load_settings

log = logging.getLogger(__name__)

# The counts the report shows (the summaries have them all; lists and dicts stay in the tasks' XCom).
EXPIRE_REPORT_KEYS = (
    "due", "expired", "left_open_in_ats", "cancelled", "revoke_failed", "finished_meanwhile", "changed_meanwhile"
)  # fmt: skip
REMIND_REPORT_KEYS = ("due", "sent", "not_needed", "retry_later", "failed", "not_claimed", "lease_lost")


def expire_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task ``expire``: orders past their expiry time without a result are revoked and written back CANCELLED."""
    from contextlib import nullcontext

    from kombo_sync.connections import get_connection
    from kombo_sync.invites import Inviters
    from kombo_sync.runtime import kombo_client, state_store

    settings = load_settings()
    info = run_info(context)
    integration_ids, dry_run = scope_params(info)
    store = state_store(settings)
    # Due orders are looked up in Kombo first (one cancelled in the ATS meanwhile gets no expiry result); a
    # deployment without the Kombo connection expires them without that check.
    checked = get_connection(settings.kombo_conn_id) is not None
    if not checked:
        log.warning(
            "expiry: no '%s' connection; due orders expire without asking Kombo", settings.kombo_conn_id
        )
    with (
        audited(None if dry_run else store, EXPIRE_JOB, info.run_id) as outcome,
        kombo_client(settings) if checked else nullcontext() as client,
    ):
        summary = expire_orders(
            store,
            Inviters(settings),
            settings,
            client=client,
            integration_ids=integration_ids,
            dry_run=dry_run,
        )
        outcome.summary = _flat(summary)
        outcome.status = "failed" if summary["revoke_failed"] else "success"
    return summary


def remind_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task ``remind``: every reminder due now goes out once through the order's channel."""
    from kombo_sync.invites import Inviters
    from kombo_sync.runtime import state_store
    from kombo_sync.state.reminders import ReminderLog

    settings = load_settings()
    info = run_info(context)
    integration_ids, dry_run = scope_params(info)
    store = state_store(settings)
    owner = info.lease_owner("lifecycle")
    with audited(None if dry_run else store, REMIND_JOB, info.run_id) as outcome:
        family = info.earlier_tries("lifecycle")
        if family and not dry_run:
            # A retry after a killed try: its reminders go out now, not when their leases run out.
            ReminderLog(store).expire_leases_of_earlier_tries(family, owner)
        summary = send_reminders(
            store, Inviters(settings), settings, owner=owner, integration_ids=integration_ids, dry_run=dry_run
        )
        outcome.summary = _flat(summary)
        outcome.status = "failed" if summary["failed"] else "success"
    return summary


def report_task(
    expire_summary: Mapping[str, Any] | None, remind_summary: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Task ``report``: the counts in the log; a failed run (not retried) when a step failed, invitations of
    expired orders could not be revoked, or reminders were given up."""
    report: dict[str, Any] = {
        "expire": {key: (expire_summary or {}).get(key, 0) for key in EXPIRE_REPORT_KEYS},
        "remind": {key: (remind_summary or {}).get(key, 0) for key in REMIND_REPORT_KEYS},
        "dry_run": bool((expire_summary or remind_summary or {}).get("dry_run")),
    }
    log.info("lifecycle run: %s", report)
    report["alerts"] = _alerts()
    for step, summary in (("expire", expire_summary), ("remind", remind_summary)):
        if summary is None:
            raise StepFailed(
                step,
                "the task failed (see its log); what it recorded before stays recorded",
                "The next run does the rest; nothing is revoked, written back or reminded twice.",
            )
    assert expire_summary is not None and remind_summary is not None
    if expire_summary.get("revoke_failed"):
        errors = expire_summary.get("revoke_errors") or []
        raise StepFailed(
            "expire",
            f"{expire_summary['revoke_failed']} invitation(s) of expired orders could not be revoked (first: "
            + "; ".join(f"order {e.get('order_id')}: {e.get('error')}" for e in errors[:5])
            + ")",
            "Those orders stay invited and the next run expires them; check the platform connection "
            "(kombo_platform) if this keeps failing.",
        )
    if remind_summary.get("failed"):
        errors = remind_summary.get("errors") or []
        raise StepFailed(
            "remind",
            f"{remind_summary['failed']} reminder(s) were given up (first: "
            + "; ".join(
                f"order {e.get('order_id')} #{e.get('reminder')}: {e.get('error')}" for e in errors[:5]
            )
            + ")",
            "Those reminders are recorded failed and not tried again (the next one still goes out when due); "
            "check the channel's connection if this keeps happening.",
        )
    return report


def _flat(summary: Mapping[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in summary.items() if not isinstance(value, list | dict)}
    flat.update({f"revocations_{k}": v for k, v in (summary.get("revocations") or {}).items() if v})
    flat.update({f"sent_reminder_{k}": v for k, v in (summary.get("sent_by_number") or {}).items() if v})
    return flat


def _alerts() -> dict[str, Any]:
    """The state-based alerts, checked at the end of every run like the other jobs; never raises."""
    from kombo_sync.alerts.check import run_alert_checks

    return run_alert_checks()
