"""
### Kombo reconcile: invitations follow what happened to their orders in the ATS

Runs daily at 03:30 UTC (`KOMBO_RECONCILE_SCHEDULE`), one run at a time.

1. **reconcile**: every order that is `invited` and has no result delivered yet is checked with Kombo in
   batches (`GET /assessment/orders?ids=`, 100 ids a call). An order that left OPEN without us (cancelled or
   rejected in the ATS, completed without our result, its integration deleted) has its platform invitation
   revoked (idempotent; e-mail cannot be revoked, the order is only marked) and becomes `cancelled`: its later
   results are recorded `not_writable`, never sent. An order Kombo shows closed with a result of ours whose
   reply was lost has that result recorded `sent`.
2. **report**: the counts per outcome; the run fails (not retried) when Kombo could not be read for some
   integrations or some invitations could not be revoked (the next run does them again).

Params: `integration_ids` (empty = all), `dry_run` (read Kombo and count, revoke and record nothing).
See docs/lifecycle.md.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from kombo_sync.dag_kit import cron, dag_defaults, flag_param, integration_ids_param


@dag(
    dag_id="kombo_reconcile",
    schedule=cron("KOMBO_RECONCILE_SCHEDULE", "30 3 * * *"),
    doc_md=__doc__,
    **dag_defaults("reconcile", retry_delay=timedelta(minutes=1)),
    params={
        "integration_ids": integration_ids_param("empty: all"),
        "dry_run": flag_param("read Kombo and count; revoke and record nothing"),
    },
)
def kombo_reconcile() -> None:
    @task(pool="kombo_api")
    def reconcile(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.reconcile.tasks import reconcile_task

        return reconcile_task(context)

    @task(trigger_rule="all_done")
    def report(summary):  # type: ignore[no-untyped-def]
        from kombo_sync.reconcile.tasks import report_task

        return report_task(summary)

    report(reconcile())


kombo_reconcile()
