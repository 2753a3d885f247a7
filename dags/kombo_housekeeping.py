"""
### Kombo housekeeping: candidate personal data kept only as long as needed

Runs daily (`KOMBO_HOUSEKEEPING_SCHEDULE`).

1. **purge**: the retention rules. An order's candidate e-mail, names and phone are erased
   `retention.candidate_data_days` (default 90) after the order ended (closed without an invitation, or its
   result written back); a deleted integration's candidate data `retention.integration_deleted_days` (default 30)
   after Kombo's `integration-deleted`. Ids and a salted hash of the e-mail stay, for exactly-once and the
   duplicate rule.
2. **erase**: with the param `erase_emails`, those candidates' orders are erased now (open orders are
   cancelled). The same as `python -m kombo_sync.ops erase --email ...`. The addresses stay in this run's
   configuration in Airflow's metadata database: prefer the command for a request that must leave no trace.
3. **report**: counts; each erasure is recorded in the state store's `erasures` table (no personal data).

Params: `erase_emails` (list), `erase_reason`, `dry_run` (count, erase nothing). See docs/lifecycle.md.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import Param, dag, task

from kombo_sync.dag_kit import dag_defaults, flag_param


@dag(
    dag_id="kombo_housekeeping",
    schedule=os.environ.get("KOMBO_HOUSEKEEPING_SCHEDULE", "@daily"),
    doc_md=__doc__,
    **dag_defaults("housekeeping", retry_delay=timedelta(minutes=1)),
    params={
        "erase_emails": Param(
            [], type=["array", "null"], items={"type": "string"}, description="candidates to erase now"
        ),
        "erase_reason": Param(
            "erasure requested by the candidate", type=["string", "null"], description="recorded in erasures"
        ),
        "dry_run": flag_param("count what would be erased"),
    },
)
def kombo_housekeeping() -> None:
    @task
    def purge(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.housekeeping.tasks import purge_task

        return purge_task(context)

    @task
    def erase(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.housekeeping.tasks import erase_task

        return erase_task(context)

    @task(trigger_rule="all_done")
    def report(purge_summary, erase_summary):  # type: ignore[no-untyped-def]
        from kombo_sync.housekeeping.tasks import report_task

        return report_task(purge_summary, erase_summary)

    report(purge(), erase())


kombo_housekeeping()
