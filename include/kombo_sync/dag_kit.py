"""What the Kombo DAGs share: retries, one run at a time, the failure alert, the schedule knob, the common params.

Imported by the DAG files when they are parsed, so it imports only `airflow.sdk` and the alert notifier (no
settings, no database, no HTTP client). Each DAG file keeps what is its own: its id, schedule default, retry
delay, tags, docs and any params beyond `integration_ids` and `dry_run`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param

from kombo_sync.alerts.notifier import KomboAlertNotifier

START_DATE = datetime(2025, 1, 1)


def cron(env_var: str, default: str) -> CronDataIntervalTimetable:
    """The DAG's schedule: the cron in ``env_var`` (read when the DAG file is parsed) or ``default``, in UTC."""
    return CronDataIntervalTimetable(os.environ.get(env_var, default), timezone="UTC")


def dag_defaults(job: str, *, retry_delay: timedelta, exponential: bool = True) -> dict[str, Any]:
    """The ``@dag`` arguments every Kombo DAG shares: one run at a time, no catch-up of old intervals (the jobs
    reach back themselves), two retries, the team's alert on failure (alerts.channels in pipeline.yaml)."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "owner": "data-team",
            "retries": 2,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": exponential,
        },
        "on_failure_callback": KomboAlertNotifier(),
        "tags": ["kombo", job],
    }


def integration_ids_param(description: str = "empty: all") -> Param:
    """The ``integration_ids`` param: a list of Kombo integration ids (the form also takes "a, b")."""
    return Param([], type=["array", "null"], items={"type": "string"}, description=description)


def flag_param(description: str) -> Param:
    """A true/false param, false by default (``dry_run``, ``force``, ...)."""
    return Param(False, type=["boolean", "null"], description=description)
