"""The catalog sync's Airflow tasks, as plain functions of the task context (the DAG file only wires them).

Each reads its run through `kombo_sync.runs.run_info` where it needs the run, builds its dependencies at run time
(settings, the state store, the Kombo client, all from Airflow connections) and calls the job functions in
`kombo_sync.catalog.job`. The plan hands each shard to its publish task through its own XCom key, or, when the
run is one shard (`catalog.publish_in_plan`), publishes it itself: a task start (about 2 s) saved on every small
run, such as the one for a new integration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kombo_sync.catalog.job import (
    CatalogSyncFailed,
    finish_catalog_sync,
    load_catalog,
    plan_catalog_sync,
    publish_catalog_shard,
)
from kombo_sync.catalog.plan import SyncOptions
from kombo_sync.runs import run_info

if TYPE_CHECKING:
    from kombo_sync.settings import PipelineSettings

log = logging.getLogger(__name__)

SUMMARY_KEY = "summary"
PUBLISHED_IN_PLAN_KEY = "published_in_plan"  # the result of the one shard the plan published itself


def _shard_key(index: Any) -> str:
    return f"shard_{index}"


def run_plan(
    params: Mapping[str, Any] | None, run_id: str | None, settings: PipelineSettings | None = None
) -> dict[str, Any]:
    """Check the catalog and plan the run: connections and settings from the Airflow environment."""
    from kombo_sync.runtime import state_store
    from kombo_sync.settings import load_settings

    settings = settings or load_settings()
    return plan_catalog_sync(
        state_store(settings),
        lambda: load_catalog(settings),
        settings.catalog,
        SyncOptions.from_params(params),
        run_id=run_id,
    )


def run_publish(shard: Mapping[str, Any], settings: PipelineSettings | None = None) -> dict[str, Any]:
    """Publish one shard with a Kombo client from `kombo_default`."""
    from kombo_sync.runtime import kombo_client, state_store
    from kombo_sync.settings import load_settings

    settings = settings or load_settings()
    with kombo_client(settings) as client:
        return publish_catalog_shard(
            state_store(settings), client, shard, concurrency=settings.catalog.publish_concurrency
        )


def run_finish(
    plan_summary: Mapping[str, Any] | None,
    shard_results: Iterable[Mapping[str, Any] | None] | None,
    settings: PipelineSettings | None = None,
) -> dict[str, Any]:
    """Merge and record the run (raises `CatalogSyncFailed` when the run must end failed); returns only the
    counts, the full summary is in the `runs` table."""
    from kombo_sync.runtime import state_store

    summary = finish_catalog_sync(state_store(settings), plan_summary, list(shard_results or []))
    return {"counts": summary["counts"], "audit_id": (plan_summary or {}).get("audit_id")}


def plan_task(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Task `plan`: check and decide; each shard's plan goes under its own XCom key, so a publish task pulls
    only its own (tens of KB), not all. Returns what `publish` is mapped over: nothing when the run is one
    shard and `catalog.publish_in_plan` is on, as the plan then publishes it itself."""
    from kombo_sync.settings import load_settings

    settings = load_settings()
    info = run_info(context)
    planned = run_plan(info.params, info.run_id, settings)
    ti = context["ti"]
    ti.xcom_push(key=SUMMARY_KEY, value=planned["summary"])
    if len(planned["shards"]) == 1 and settings.catalog.publish_in_plan:
        shard = planned["shards"][0]
        log.info("one shard (%s): published by the plan task, no publish task started", shard["label"])
        ti.xcom_push(key=PUBLISHED_IN_PLAN_KEY, value=run_publish(shard, settings))
        return []
    for shard in planned["shards"]:
        ti.xcom_push(key=_shard_key(shard["index"]), value=shard)
    return [{"index": shard["index"], "label": shard["label"]} for shard in planned["shards"]]


def publish_task(shard: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Task `publish`, one mapped instance per shard. `context` must be Airflow's own (`get_current_context()`):
    the shard's label is set on it for the task's `map_index_template`."""
    context["shard_label"] = shard["label"]
    return run_publish(context["ti"].xcom_pull(task_ids="plan", key=_shard_key(shard["index"])))


def finish_task(results: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """Task `finish`: alert checks, then record the run; fails, not retried, naming every integration that
    failed, was held back or refused (a retry would report the same)."""
    from airflow.sdk.exceptions import AirflowFailException

    from kombo_sync.alerts.check import run_alert_checks

    run_alert_checks()  # failing integrations, quarantined catalog rows (never raises)
    summary = context["ti"].xcom_pull(task_ids="plan", key=SUMMARY_KEY)
    in_plan = context["ti"].xcom_pull(task_ids="plan", key=PUBLISHED_IN_PLAN_KEY)
    results = [*(results or []), *([in_plan] if in_plan else [])]
    try:
        return run_finish(summary, results)
    except CatalogSyncFailed as exc:
        raise AirflowFailException(str(exc)) from exc
