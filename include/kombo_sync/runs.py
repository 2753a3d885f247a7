"""What a task knows about its run, read once from Airflow's context, and how a task reports it.

Airflow hands tasks different values on different paths: scheduled and backfill runs carry their data interval
as pendulum ``DateTime``s, manual and asset-triggered runs may have none, ``prev_data_interval_end_success`` is a
lazy proxy that wraps ``None`` when there was no successful run, and ``dag.test()`` gives plain ``datetime``s.
Every job reads them through :func:`run_info`, so the rest of the code sees one shape: stdlib ``datetime``s,
aware and in UTC (pendulum arithmetic on a ``DateTime`` whose zone is the stdlib ``UTC`` returns a *naive*
value, which is how a scheduled write-back once compared naive with aware times and failed).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

SCHEDULED = "scheduled"
MANUAL = "manual"
BACKFILL = "backfill"
ASSET_TRIGGERED = "asset_triggered"

try:  # a deliberate failure is final: Airflow does not retry it
    from airflow.sdk.exceptions import AirflowFailException as _FinalFailure
except ImportError:  # pragma: no cover - outside Airflow
    _FinalFailure = RuntimeError  # type: ignore[assignment,misc]


class StepFailed(_FinalFailure):
    """A run that did its work but must show as failed (not retried): the message names the step and what to do."""

    def __init__(self, step: str, problem: str, remedy: str) -> None:
        super().__init__(f"{step}: {problem}. {remedy}")
        self.step = step


def as_utc(value: Any, *, end_of_day: bool = False) -> datetime | None:
    """Any time Airflow or a user may hand us, as a plain stdlib ``datetime``, aware, in UTC.

    Takes pendulum ``DateTime``s, aware or naive ``datetime``s (naive means UTC), ``date``s, ISO strings (with
    ``Z`` or an offset, or a bare ``YYYY-MM-DD``), lazy proxies of any of these, and ``None`` / blank (-> None).
    A bare date is the start of that day, or with ``end_of_day`` the start of the next (an inclusive end date).
    """
    value = getattr(value, "__wrapped__", value)  # lazy_object_proxy: resolve it (it may wrap None)
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if len(text) == 10:
            value = date.fromisoformat(text)
        else:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(UTC)
        # Rebuilt from its fields: a pendulum DateTime (or another subclass) becomes a plain datetime.
        return datetime(
            value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, UTC
        )
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    raise TypeError(f"not a time: {type(value).__name__}")


def _run_type(context: Mapping[str, Any]) -> str | None:
    run_type = getattr(context.get("dag_run"), "run_type", None)
    if run_type is None:
        return None
    return str(getattr(run_type, "value", run_type))


def previous_success_end(context: Mapping[str, Any]) -> datetime | None:
    """The data interval end of this DAG's last successful run before this one, or None (none, or unknown)."""
    try:
        return as_utc(context.get("prev_data_interval_end_success"))
    except (
        Exception
    ) as exc:  # the lookup is a call to the api-server; without it the run keeps its own window
        log.warning("previous successful run unknown (%s: %s)", type(exc).__name__, exc)
        return None


@dataclass(frozen=True)
class RunInfo:
    """One task's view of its DAG run."""

    dag_id: str | None
    run_id: str | None
    run_type: str | None
    task_id: str | None
    try_number: int | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    params: Mapping[str, Any] = field(default_factory=dict)
    # Looked up (an api-server call) only for scheduled runs: the only ones that reach back over missed runs.
    previous_success_end: datetime | None = None

    @property
    def is_backfill(self) -> bool:
        return self.run_type == BACKFILL

    def lease_owner(self, job: str) -> str:
        """Who holds a claim or lease: unique per task try and process, readable in the state store."""
        parts = (job, self.run_id, self.task_id, self.try_number, socket.gethostname(), os.getpid())
        return ":".join("?" if part is None else str(part) for part in parts)[:255]

    def earlier_tries(self, job: str) -> str | None:
        """The lease-owner prefix shared by every try of this task instance (None when the context does not say
        which one this is). Airflow runs one try of a task instance at a time, so a lease held under this prefix
        by another owner belongs to a try that is over: killed, or timed out by the scheduler."""
        if self.run_id is None or self.task_id is None or self.try_number is None:
            return None
        prefix = f"{job}:{self.run_id}:{self.task_id}:"
        return prefix if len(prefix) < 200 else None  # owners are cut at 255 characters


def run_info(context: Mapping[str, Any]) -> RunInfo:
    """Read the task context once (see the module docstring for what differs between run types)."""
    dag_run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    run_type = _run_type(context)
    try_number = getattr(ti, "try_number", None)
    return RunInfo(
        dag_id=getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None),
        run_id=getattr(dag_run, "run_id", None) or context.get("run_id"),
        run_type=run_type,
        task_id=getattr(ti, "task_id", None),
        try_number=try_number if isinstance(try_number, int) else None,
        data_interval_start=as_utc(context.get("data_interval_start")),
        data_interval_end=as_utc(context.get("data_interval_end")),
        params=dict(context.get("params") or {}),
        previous_success_end=previous_success_end(context) if run_type == SCHEDULED else None,
    )


def string_list(value: Any) -> list[str]:
    """A list param as typed into the trigger form (a list, or "a, b" / one per line): unique, trimmed."""
    if value is None:
        return []
    items = value.replace("\n", ",").split(",") if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))


class Audited:
    """The summary an audited block records (set ``summary`` and, for a failed outcome, ``status``)."""

    def __init__(self) -> None:
        self.summary: Mapping[str, Any] | None = None
        self.status = "success"


@contextmanager
def audited(store: StateStore | None, job: str, run_id: str | None) -> Iterator[Audited]:
    """Record a job run in the state store's ``runs`` audit: started, then success/failed with its summary.

    ``store=None`` (a dry run) records nothing. An exception is recorded as failed with its type and re-raised.
    """
    outcome = Audited()
    if store is None:
        yield outcome
        return
    from kombo_sync.state.audit import RunAudit

    audit = RunAudit(store)
    audit_id = audit.start(job, run_id)
    try:
        yield outcome
    except BaseException as exc:
        audit.finish(audit_id, "failed", {"error": type(exc).__name__})
        raise
    audit.finish(audit_id, outcome.status, outcome.summary)
