"""
### kombo_package_sync: every customer sees exactly the packages it is entitled to

Reads the catalog once (`include/sql/catalog.sql` on `kombo_warehouse`, or `catalog.yaml`), quarantines rows
that break its column contract, and `PUT`s each active assessment integration's full package list **only when
it changed** since its last successful publish (stored hash). Runs nightly (`KOMBO_CATALOG_SCHEDULE`, default
`0 2 * * *` UTC) and at once when an integration is created or re-enabled (asset `kombo_integrations_changed`):
such a run checks *all* integrations, which costs nothing for unchanged ones, so the new one is published and
any catalog edit since the night goes out with the same checks.

**Params**: `integration_ids` (empty = all active), `force`, `dry_run` (log the per-integration diff against
Kombo, send nothing), `allow_shrink` (allow removing more than `catalog.max_shrink_share`, or everything).

**Tasks**: `plan` checks and decides, and publishes a run that is one shard itself (a new integration, a
nightly run with a few hundred changes: no task start to wait for); `publish` is mapped over **shards** when
the work pays for more tasks: up to 4 side by side once each gets `catalog.min_shard_size` (250)
integrations, more only beyond `catalog.shard_size` (500) each. Shards are labelled by the integrations they
hold and log one line per integration; `finish` records the run and **fails naming every integration** that
failed (Kombo code, `log_url`), was held back or refused by the wipe guard.
See docs/catalog.md.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from kombo_sync.alerts.notifier import KomboAlertNotifier
from kombo_sync.assets import INTEGRATIONS_CHANGED
from kombo_sync.dag_kit import flag_param, integration_ids_param

SCHEDULE = os.environ.get("KOMBO_CATALOG_SCHEDULE", "0 2 * * *")


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=[INTEGRATIONS_CHANGED]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two runs at once would both publish the same changes
    doc_md=__doc__,
    on_failure_callback=KomboAlertNotifier(),  # alerts.channels in pipeline.yaml (docs/alerts.md)
    tags=["kombo", "catalog"],
    default_args={"owner": "data-team", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "integration_ids": integration_ids_param("empty = all"),
        "force": flag_param("publish even when the list is unchanged"),
        "dry_run": flag_param("log the per-integration diff, send nothing"),
        "allow_shrink": flag_param("allow removing many or all packages"),
    },
)
def kombo_package_sync() -> None:
    @task(pool="kombo_api")  # publishes a one-shard run itself (catalog.publish_in_plan)
    def plan(**context: Any) -> list[dict[str, Any]]:
        from kombo_sync.catalog.tasks import plan_task

        return plan_task(context)

    # 4 shards x catalog.publish_concurrency threads at once: far below Kombo's 30 in flight per integration;
    # more would only compete for the API key's rate budget. 4 = catalog.plan.PARALLEL_SHARDS (a test pins it).
    @task(pool="kombo_api", map_index_template="{{ shard_label }}", max_active_tis_per_dagrun=4)
    def publish(shard: dict[str, Any]) -> dict[str, Any]:
        from kombo_sync.catalog.tasks import publish_task

        # Airflow's own context, not a copy: the shard's label set on it names the mapped task in the UI.
        return publish_task(shard, get_current_context())

    @task(trigger_rule="all_done")  # runs after failed shards too, to report them
    def finish(results: Any, **context: Any) -> dict[str, Any]:  # results: the shards' (none if none mapped)
        from kombo_sync.catalog.tasks import finish_task

        return finish_task(results, context)

    finish(publish.expand(shard=plan()))


kombo_package_sync()
