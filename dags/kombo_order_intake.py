"""
### Kombo order intake: every open order seen once, every candidate invited exactly once

Runs every 5 minutes (`KOMBO_INTAKE_SCHEDULE`) and at once when the webhook records an order (asset
`kombo_orders_received`).

1. **poll**: for every active integration, `GET /assessment/orders?statuses=OPEN&created_after=...` (cursor
   paging); the window is the run's data interval minus `intake.overlap_minutes`, so a backfill re-polls exactly
   its range. Runs without a data interval look back `intake.lookback_minutes`. Orders are recorded once.
2. **dispatch**: orders are claimed with a lease, re-checked with Kombo, and sent through the integration's
   channel (platform API or e-mail) with the Kombo order id as idempotency key. Failures retry with backoff
   across runs; after `intake.max_attempts` the order is `failed` with its reason.
3. **report**: counts; the run fails when integrations could not be polled.

Params: `integration_ids` (empty = all active), `dry_run` (list and count, record and send nothing), `repoll`
(backfills only: poll windows that an earlier finished poll already covered; by default a backfill reads Kombo
once per integration, in its first run, since Kombo's listing has no upper bound).
See docs/intake.md.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, dag, task

from kombo_sync.assets import ORDERS_RECEIVED
from kombo_sync.dag_kit import cron, dag_defaults, flag_param, integration_ids_param


@dag(
    dag_id="kombo_order_intake",
    schedule=AssetOrTimeSchedule(
        timetable=cron("KOMBO_INTAKE_SCHEDULE", "*/5 * * * *"),
        assets=[ORDERS_RECEIVED],
    ),
    doc_md=__doc__,
    **dag_defaults("intake", retry_delay=timedelta(seconds=10)),
    params={
        "integration_ids": integration_ids_param("empty: all active"),
        "dry_run": flag_param("count what would be recorded and sent"),
        "repoll": flag_param("backfills: poll Kombo even for windows an earlier poll already covered"),
    },
)
def kombo_order_intake() -> None:
    @task(pool="kombo_api")
    def poll(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.intake.tasks import poll_task

        return poll_task(context)

    @task(pool="kombo_api", trigger_rule="all_done")
    def dispatch(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.intake.tasks import dispatch_task

        return dispatch_task(context)

    @task(trigger_rule="all_done")
    def report(poll_summary, dispatch_summary):  # type: ignore[no-untyped-def]
        from kombo_sync.intake.tasks import report_task

        return report_task(poll_summary, dispatch_summary)

    polled = poll()
    dispatched = dispatch()
    polled >> dispatched
    report(polled, dispatched)


kombo_order_intake()
