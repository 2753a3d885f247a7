"""
### kombo_package_sync: every customer sees exactly the packages it is entitled to

Reads the package catalog once (`include/sql/catalog.sql` on `kombo_warehouse`, or `catalog.yaml`), checks
its column contract (bad rows are quarantined with their reason), and for each active assessment integration
calls `PUT /assessment/packages` with the customer's full list, **only when it changed** since the last
successful publish (stored hash), unless `force`.

**When**: nightly (`KOMBO_CATALOG_SCHEDULE`, default `0 2 * * *` UTC) and at once when an integration is
created or re-enabled (asset `kombo_integrations_changed`). Such a run considers *all* integrations: the
hash comparison makes unchanged ones free (no request), so the new one is published, and a catalog edit
made since the night goes out too.

**Params**: `integration_ids` (empty = all active), `force` (send even if unchanged), `dry_run` (log the
per-integration diff against Kombo, send nothing), `allow_shrink` (let a list lose more than
`catalog.max_shrink_share`, or everything).

**Tasks**: `plan` validates and decides; `publish` is mapped over **shards** of up to `catalog.shard_size`
(50) integrations, labelled by the integrations they hold, each sending concurrently and logging one line
per integration: mapping one task per integration would break at `max_map_length` (1024) with 1,000+
customers. `finish` records the run and **fails naming every integration** that failed (Kombo code and
`log_url`), was held back by bad rows, or was refused by the wipe guard; the others are published anyway.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
)

from kombo_sync.assets import INTEGRATIONS_CHANGED

SCHEDULE = os.environ.get("KOMBO_CATALOG_SCHEDULE", "0 2 * * *")


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=[INTEGRATIONS_CHANGED]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two runs at once would both publish the same changes
    doc_md=__doc__,
    tags=["kombo", "catalog"],
    default_args={"owner": "data-team", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "integration_ids": Param(
            [], type="array", items={"type": "string"}, description="empty = all active"
        ),
        "force": Param(False, type="boolean", description="publish even when the list is unchanged"),
        "dry_run": Param(False, type="boolean", description="log the per-integration diff, send nothing"),
        "allow_shrink": Param(False, type="boolean", description="allow removing many or all packages"),
    },
)
def kombo_package_sync() -> None:
    @task
    def plan(params: dict[str, Any] | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        from kombo_sync.catalog import SyncOptions, load_catalog, plan_catalog_sync
        from kombo_sync.runtime import state_store
        from kombo_sync.settings import load_settings

        settings = load_settings()
        options = SyncOptions.from_params(params)
        planned = plan_catalog_sync(
            state_store(settings), lambda: load_catalog(settings), settings.catalog, options, run_id=run_id
        )
        # The shards are the mapped input; the summary goes straight to `finish` under its own key.
        get_current_context()["ti"].xcom_push(key="summary", value=planned["summary"])
        return planned["shards"]

    # 4 shards x catalog.publish_concurrency threads at once: far below Kombo's 30 in flight per integration;
    # more would only compete for the API key's rate limit, which the client adapts to anyway.
    @task(pool="kombo_api", map_index_template="{{ shard_label }}", max_active_tis_per_dagrun=4)
    def publish(shard: dict[str, Any]) -> dict[str, Any]:
        from kombo_sync.catalog import publish_catalog_shard
        from kombo_sync.runtime import kombo_client, state_store
        from kombo_sync.settings import load_settings

        get_current_context()["shard_label"] = shard["label"]  # type: ignore[typeddict-unknown-key]
        settings = load_settings()
        with kombo_client(settings) as client:
            return publish_catalog_shard(
                state_store(settings), client, shard, concurrency=settings.catalog.publish_concurrency
            )

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def finish(results: list[dict[str, Any]] | None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from kombo_sync.catalog import CatalogSyncFailed, finish_catalog_sync
        from kombo_sync.runtime import state_store

        summary = get_current_context()["ti"].xcom_pull(task_ids="plan", key="summary")
        try:
            return finish_catalog_sync(state_store(), summary, results or [])
        except CatalogSyncFailed as exc:  # a retry would report the same: fail once, clearly
            raise AirflowFailException(str(exc)) from exc

    finish(publish.expand(shard=plan()))


kombo_package_sync()
