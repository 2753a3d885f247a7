"""The housekeeping DAG's Airflow tasks, as plain functions of the task context (the DAG file only wires them).

`purge` applies the retention rules (`retention.purge`); `erase` erases the candidates named in the run's
`erase_emails` param now. Both are written to the run audit; neither logs an e-mail address.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kombo_sync.candidate_hash import candidate_hasher
from kombo_sync.housekeeping.retention import InvalidEmail, erase_candidates, purge
from kombo_sync.runs import ParamError, RunInfo, StepFailed, audited, flag, run_info, string_list
from kombo_sync.settings import load_settings
from kombo_sync.storable import text_problem

log = logging.getLogger(__name__)

PURGE_JOB = "housekeeping.retention"
ERASE_JOB = "housekeeping.erase"


DEFAULT_REASON = "erasure requested by the candidate"
MAX_REASON_CHARS = 1000


class HousekeepingFailed(StepFailed):
    """A housekeeping step could not do its work (the message names it and what to do)."""


def _params(info: RunInfo) -> tuple[list[str], str, bool]:
    """(erase_emails, erase_reason, dry_run), or a `ParamError` naming the param that cannot be used."""
    params = info.params
    emails = string_list(params.get("erase_emails"), "erase_emails")
    reason = params.get("erase_reason")
    if reason is None or (isinstance(reason, str) and not reason.strip()):
        reason = DEFAULT_REASON
    if not isinstance(reason, str):
        raise ParamError(f"erase_reason must be text, not {type(reason).__name__}")
    problem = text_problem(reason)
    if problem:
        raise ParamError(f"erase_reason {problem}")
    if len(reason) > MAX_REASON_CHARS:
        raise ParamError(f"erase_reason is longer than {MAX_REASON_CHARS} characters")
    return emails, reason.strip(), flag(params.get("dry_run"), "dry_run")


def purge_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `purge`: erase the candidate data whose retention time is over."""
    from kombo_sync.runtime import state_store

    settings = load_settings()
    info = run_info(context)
    _, _, dry_run = _params(info)
    store = state_store(settings)
    hasher = candidate_hasher(settings.retention.salt_conn_id, cached=False)
    with audited(store, PURGE_JOB, info.run_id) as outcome:
        outcome.summary = purge(store, settings.retention, hasher, run_id=info.run_id, dry_run=dry_run)
    summary = dict(outcome.summary)
    log.info("retention: %s", summary)
    return summary


def erase_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `erase`: erase now every order of the candidates in the `erase_emails` param (none: nothing to do)."""
    from kombo_sync.runtime import state_store

    settings = load_settings()
    info = run_info(context)
    emails, reason, dry_run = _params(info)
    if not emails:
        return {"candidates": 0}
    store = state_store(settings)
    hasher = candidate_hasher(settings.retention.salt_conn_id, cached=False)
    try:
        with audited(store, ERASE_JOB, info.run_id) as outcome:
            outcome.summary = erase_candidates(
                store,
                hasher,
                emails,
                reason=reason,
                requested_by=f"airflow:{info.dag_id}/{info.run_id}",
                run_id=info.run_id,
                dry_run=dry_run,
            )
    except InvalidEmail as exc:
        raise HousekeepingFailed(
            "erase", f"erase_emails: {exc}; nothing was erased", "Correct the addresses and trigger again."
        ) from None
    summary = dict(outcome.summary)
    log.info("erasure on request: %s", summary)
    return summary


def report_task(
    purge_summary: Mapping[str, Any] | None, erase_summary: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Task `report`: one line of counts for the UI; a failed run (not retried) when a step failed."""
    report = {
        "retention_orders_erased": (purge_summary or {}).get("retention", {}).get("orders_erased", 0),
        "integration_orders_erased": (purge_summary or {})
        .get("integration_deleted", {})
        .get("orders_erased", 0),
        "integrations_erased": len((purge_summary or {}).get("integrations_erased", [])),
        "requested_orders_erased": (erase_summary or {}).get("orders_erased", 0),
    }
    log.info("housekeeping run: %s", report)
    report["alerts"] = _alerts()
    if purge_summary is None:
        raise HousekeepingFailed(
            "purge", "the task failed (see its log)", "The next run applies the retention rules again."
        )
    if erase_summary is None:
        raise HousekeepingFailed(
            "erase", "the task failed (see its log)", "Trigger the DAG again with the same erase_emails."
        )
    return report


def _alerts() -> dict[str, Any]:
    """The state-based alerts, checked at the end of every run like the other DAGs do; never raises."""
    from kombo_sync.alerts.check import run_alert_checks

    return run_alert_checks()
