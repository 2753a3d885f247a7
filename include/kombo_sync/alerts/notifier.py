"""`KomboAlertNotifier`: a failed DAG run (or task) reaches the team through the configured alert channels.

Built on Airflow's notifier mechanism, so it is wired as `on_failure_callback=KomboAlertNotifier()` on a DAG
(run by the dag-processor) or a task. It reads `pipeline.yaml` and the connections when called, never at parse
time, and never raises: Airflow only logs a failing callback, and an alert must not hide the run's own failure.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from kombo_sync.alerts.messages import FAILED_RUN, Alert, safe_code

if TYPE_CHECKING:  # the DAG files import this module: pydantic settings are loaded only when a run fails
    from kombo_sync.settings import AlertSettings, PipelineSettings

log = logging.getLogger(__name__)

_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9_ .\-]{0,80}$")

FAILED_RUN_ACTION = (
    "Open the run in the Airflow UI and read the failed task's log. Fix the cause (a connection, a Kombo error "
    "code, the warehouse query, a full pool), then clear the failed task to run it again. Scheduled intake and "
    "write-back runs also reach back to the last successful run by themselves; nothing is lost meanwhile."
)


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    try:
        return getattr(obj, name, None)
    except Exception:  # lazy context proxies may need the API server; a missing field only shortens the alert
        return None


def _airflow_base_url(settings: AlertSettings) -> str:
    if settings.airflow_base_url:
        return settings.airflow_base_url.rstrip("/")
    try:
        from airflow.configuration import conf

        return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")
    except Exception:  # no Airflow configuration in this process: a relative-looking default is still useful
        return "http://localhost:8080"


def _failed_tasks(context: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    ti = context.get("ti") or context.get("task_instance")
    candidates: list[Any] = [ti] if ti is not None else []
    dag_run = context.get("dag_run")
    get_tis = _get(dag_run, "get_task_instances")
    if callable(get_tis):
        try:
            candidates.extend(get_tis(state=["failed", "upstream_failed"]))
        except Exception as exc:  # the task SDK's DagRun has no such call; the last task is enough then
            log.debug("failed task instances not listed (%s)", type(exc).__name__)
    for candidate in candidates:
        task_id = _get(candidate, "task_id")
        if not task_id:
            continue
        map_index = _get(candidate, "map_index")
        name = f"{task_id}[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else str(task_id)
        if name not in names:
            names.append(name)
    return names


def failed_run_alert(context: Mapping[str, Any], settings: AlertSettings) -> tuple[str, Alert]:
    """The ledger subject and the alert for a failed run, from an Airflow callback context. Only ids, task
    names, the failure reason's code and the exception's type are used (an exception message may quote data)."""
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    dag_id = str(
        _get(dag, "dag_id") or context.get("dag_id") or _get(dag_run, "dag_id") or _get(ti, "dag_id") or "?"
    )
    run_id = str(context.get("run_id") or _get(dag_run, "run_id") or _get(ti, "run_id") or "?")
    tasks = _failed_tasks(context)
    base = _airflow_base_url(settings)
    run_url = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    lines = [f"DAG: {dag_id}", f"Run: {run_id}"]
    if tasks:
        lines.append(f"Failed task(s): {', '.join(tasks)}")
    reason = context.get("reason")
    if isinstance(reason, str) and _REASON.match(reason):
        lines.append(f"Reason: {reason}")
    exception = context.get("exception")
    if isinstance(exception, BaseException):
        lines.append(f"Error type: {safe_code(type(exception).__name__) or 'exception'}")
    lines.append(f"Run: {run_url}")
    log_url = _get(ti, "log_url") if ti is not None else None
    if isinstance(log_url, str) and log_url.startswith(("http://", "https://")):
        lines.append(f"Task log: {log_url}")
    subject = "/".join([dag_id, run_id, *tasks[:1]])
    title = f"DAG run failed: {dag_id}" + (f" (task {tasks[0]})" if tasks else "")
    alert = Alert(
        kind=FAILED_RUN,
        title=title,
        lines=tuple(lines),
        action=FAILED_RUN_ACTION,
        ids=(dag_id, run_id, *tasks),
        counts={"failed_tasks": len(tasks)},
    )
    return subject[:600], alert


class KomboAlertNotifier(BaseNotifier):
    """`on_failure_callback=KomboAlertNotifier()`: a failed run is sent through `alerts.channels`, once per
    run (and task) when the state store is reachable. Tests pass settings, a store, channels and a clock."""

    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        settings: PipelineSettings | None = None,
        store: Any | None = None,
        channels: Sequence[Any] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._store = store
        self._channels = channels
        self._clock = clock or (lambda: datetime.now(UTC))

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # Nothing is templated here, and a DAG-level callback run by the scheduler's dag.test() path gets a
        # SerializedDAG, which has no template environment: BaseNotifier's rendering would fail before notify.
        return None

    def notify(self, context: Any) -> None:
        try:
            self.send_failed_run(context)
        except Exception as exc:  # the run already failed; a broken alert must not add a second failure
            log.error("alerts: failed-run alert not sent (%s)", type(exc).__name__)

    def send_failed_run(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Send the failed-run alert for `context`; returns what happened (for tests and logs)."""
        from kombo_sync.alerts.channels import build_channels, deliver, delivered
        from kombo_sync.alerts.ledger import AlertLedger
        from kombo_sync.settings import load_settings

        settings = self._settings or load_settings()
        alerts = settings.alerts
        if not alerts.enabled or not alerts.kinds.is_on(FAILED_RUN):
            return {"sent": False, "why": "disabled"}
        subject, alert = failed_run_alert(context, alerts)
        channels = list(self._channels) if self._channels is not None else build_channels(alerts)
        if not channels:
            log.error("alerts: no usable channel for the failed-run alert of %s", subject)
            return {"sent": False, "why": "no channel"}
        ledger = self._ledger(settings, AlertLedger)
        claim = None
        if ledger is not None:
            try:
                claim = ledger.claim(FAILED_RUN, [subject], now=self._clock(), repeat=None)
            except Exception as exc:
                log.warning("alerts: failed-run alert sent without de-duplication (%s)", type(exc).__name__)
                ledger = None
            if claim is not None and not claim:
                log.info("alerts: failed-run alert for %s was sent already", subject)
                return {"sent": False, "why": "already sent"}
        outcome = deliver(alert, channels)
        if not delivered(outcome) and ledger is not None and claim is not None:
            try:
                ledger.release(claim)
            except Exception as exc:
                log.warning("alerts: failed-run claim not released (%s)", type(exc).__name__)
        return {"sent": delivered(outcome), "delivery": outcome, "subject": subject}

    def _ledger(self, settings: PipelineSettings, ledger_class: Any) -> Any | None:
        try:
            if self._store is not None:
                return ledger_class(self._store)
            from kombo_sync.runtime import state_store

            return ledger_class(state_store(settings))
        except Exception as exc:  # no state store here (e.g. not configured for this process): send anyway
            log.warning("alerts: state store unavailable for de-duplication (%s)", type(exc).__name__)
            return None
