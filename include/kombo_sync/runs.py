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

from kombo_sync.storable import text_problem

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


class ParamError(_FinalFailure):
    """A DAG param that cannot be used, named in the message; final, since a retry would read it the same way."""


# Ids longer than this are no id (the state store's id columns hold 255 characters).
MAX_ID_CHARS = 255
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


def string_list(value: Any, name: str = "param") -> list[str]:
    """A list param as typed into the trigger form (a list, or "a, b" / one per line): unique, trimmed.

    Raises `ParamError` naming the param for anything else (a number, a mapping, nested lists, an id with a
    NUL character or a lone surrogate, an id longer than 255 characters)."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = value.replace("\n", ",").split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ParamError(f"{name} must be a list of ids or comma-separated text, not {type(value).__name__}")
    result: dict[str, None] = {}
    for position, item in enumerate(items):
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ParamError(f"{name}[{position}] must be text, not {type(item).__name__}")
        text = str(item).strip()
        problem = text_problem(text)
        if problem:
            raise ParamError(f"{name}[{position}] {problem}")
        if len(text) > MAX_ID_CHARS:
            raise ParamError(f"{name}[{position}] is longer than {MAX_ID_CHARS} characters")
        if text:
            result[text] = None
    return list(result)


def scope_params(info: RunInfo) -> tuple[list[str] | None, bool]:
    """The two params most DAGs share: ``integration_ids`` (None: all) and ``dry_run``."""
    params = info.params
    return (string_list(params.get("integration_ids"), "integration_ids") or None), flag(
        params.get("dry_run"), "dry_run"
    )


def flag(value: Any, name: str = "param") -> bool:
    """A boolean param: true/false (or null: false); the text a JSON conf may carry ("false", "1") is read as
    meant, never as a non-empty string being true. Anything else raises `ParamError` naming the param."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    shown = (
        repr(value)
        if isinstance(value, str | int | float) and len(repr(value)) < 40
        else type(value).__name__
    )
    raise ParamError(f"{name} must be true or false, not {shown}")


def param_time(value: Any, name: str, *, end_of_day: bool = False) -> datetime | None:
    """A date/time param (``YYYY-MM-DD`` or ISO time; blank: None) as UTC, or `ParamError` naming the param."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | date):
        raise ParamError(f"{name} must be a date (YYYY-MM-DD) or an ISO time, not {type(value).__name__}")
    try:
        return as_utc(value, end_of_day=end_of_day)
    except (ValueError, OverflowError, TypeError):  # TypeError: a NaT, whose fields are NaN
        shown = str(value)[:40] if isinstance(value, date) else repr(value[:40])
        raise ParamError(
            f"{name} must be a date (YYYY-MM-DD) or an ISO time (2026-01-05T08:00:00Z), not {shown}"
        ) from None


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
