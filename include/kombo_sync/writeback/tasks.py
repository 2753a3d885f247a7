"""The write-back's Airflow tasks, as plain functions of the task context (the DAG file only wires them).

Each reads its run through `kombo_sync.runs.run_info`, builds its dependencies at run time (settings, the state
store, the warehouse engine, the Kombo client, all from Airflow connections), records itself in the run audit
and calls the job functions in `kombo_sync.writeback.job`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kombo_sync.runs import (
    ParamError,
    RunInfo,
    StepFailed,
    audited,
    flag,
    param_time,
    run_info,
    string_list,
)
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.storable import text_problem
from kombo_sync.writeback.job import (
    JOB,
    discard_dead_letters,
    enqueue_results,
    flat_summary,
    outbox_report,
    replay_dead_letters,
    send_pending,
)
from kombo_sync.writeback.window import writeback_window

log = logging.getLogger(__name__)


def _params(info: RunInfo) -> dict[str, Any]:
    params = info.params
    return {
        "order_ids": string_list(params.get("order_ids"), "order_ids"),
        "dry_run": flag(params.get("dry_run"), "dry_run"),
        "replay_dead_letters": flag(params.get("replay_dead_letters"), "replay_dead_letters"),
        "date_from": param_time(params.get("date_from"), "date_from"),
        "date_to": param_time(params.get("date_to"), "date_to", end_of_day=True),
        "discard_order_ids": string_list(params.get("discard_order_ids"), "discard_order_ids"),
        "discard_quarantine_ids": _quarantine_ids(params.get("discard_quarantine_ids")),
        "discard_reason": _reason(params.get("discard_reason")),
    }


def _reason(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParamError(f"discard_reason must be text, not {type(value).__name__}")
    problem = text_problem(value)
    if problem:
        raise ParamError(f"discard_reason {problem}")
    return value.strip() or None


def _quarantine_ids(value: Any) -> list[int]:
    """Quarantine row ids (numbers, as a list or comma-separated text); `ParamError` naming the param else."""
    ids = []
    for position, item in enumerate(string_list(value, "discard_quarantine_ids")):
        if not item.isdigit():
            raise ParamError(
                f"discard_quarantine_ids[{position}] must be a quarantine row number, not {item!r}"
            )
        ids.append(int(item))
    return ids


def read_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task ``read_results``: discard and replay dead letters when asked, then read, map and enqueue the run's
    results."""
    from kombo_sync.runtime import state_store, warehouse_engine
    from kombo_sync.settings import load_settings

    settings = load_settings()
    info = run_info(context)
    params = _params(info)
    window_start = window_end = None
    if not params["order_ids"]:
        window_start, window_end = writeback_window(
            overlap_minutes=settings.writeback.overlap_minutes,
            now=datetime.now(UTC),
            data_interval_start=info.data_interval_start,
            data_interval_end=info.data_interval_end,
            run_type=info.run_type,
            previous_success_end=info.previous_success_end,
            max_gap_hours=settings.writeback.max_gap_hours,
            manual_lookback_hours=settings.writeback.manual_lookback_hours,
            date_from=params["date_from"],
            date_to=params["date_to"],
        )
        log.info("reading results updated in [%s, %s)", window_start.isoformat(), window_end.isoformat())
    else:
        log.info("reading the results of %s chosen order(s)", len(params["order_ids"]))
    store = state_store(settings)
    with audited(None if params["dry_run"] else store, f"{JOB}.read", info.run_id) as outcome:
        # Before the replay: an order both discarded and replayed stays discarded (a discard is deliberate).
        discard = discard_dead_letters(
            store,
            order_ids=params["discard_order_ids"],
            quarantine_ids=params["discard_quarantine_ids"],
            reason=params["discard_reason"],
            dry_run=params["dry_run"],
        )
        replay = replay_dead_letters(
            store,
            order_ids=params["order_ids"],
            all_dead=params["replay_dead_letters"],
            dry_run=params["dry_run"],
        )
        summary = enqueue_results(
            store,
            warehouse_engine(settings),
            settings,
            window_start=window_start,
            window_end=window_end,
            order_ids=params["order_ids"] or None,
            dry_run=params["dry_run"],
            run_id=info.run_id,
        )
        summary["replay"] = replay
        summary["discard"] = discard
        outcome.summary = flat_summary(summary)
    return summary


def send_task(context: Mapping[str, Any]) -> dict[str, Any]:
    """Task ``send_results``: drain the outbox (nothing in a dry run)."""
    from kombo_sync.runtime import kombo_client, state_store
    from kombo_sync.settings import load_settings

    settings = load_settings()
    info = run_info(context)
    store = state_store(settings)
    if _params(info)["dry_run"]:
        return send_pending(store, None, settings, dry_run=True)  # type: ignore[arg-type]
    owner = info.lease_owner("writeback")
    with audited(store, f"{JOB}.send", info.run_id) as outcome:
        family = info.earlier_tries("writeback")
        if family:
            # A retry after a killed try: its results go out now, not when their leases run out.
            ResultOutbox(store).expire_leases_of_earlier_tries(family, owner)
        summary = send_pending(store, kombo_client(settings), settings, owner=owner)
        outcome.summary = flat_summary(summary)
    return summary


def report_task(
    read_summary: Mapping[str, Any] | None, send_summary: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Task ``report``: outbox counts and the newest dead letters in the log; fails the run (not retried)
    naming the step that failed."""
    from kombo_sync.runtime import state_store
    from kombo_sync.settings import load_settings

    report = outbox_report(state_store(load_settings()))
    report["read"] = {k: v for k, v in (read_summary or {}).items() if not isinstance(v, list | dict)}
    report["send"] = {k: v for k, v in (send_summary or {}).items() if not isinstance(v, list | dict)}
    from kombo_sync.alerts.check import run_alert_checks

    report["alerts"] = run_alert_checks()
    if read_summary is None:
        raise StepFailed(
            "read_results",
            "the warehouse read failed (see its log); results queued earlier were still sent",
            "Fix the cause (query, warehouse connection) and the next scheduled run reads this window again; "
            "to re-read it now, trigger the DAG with date_from/date_to.",
        )
    if send_summary is None:
        raise StepFailed(
            "send_results",
            "sending failed (see its log); the outbox keeps every result that was not sent",
            "The next run sends them; nothing is sent twice.",
        )
    return report
