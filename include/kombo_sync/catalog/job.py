"""The three steps of the `kombo_package_sync` DAG as plain functions: plan, publish a shard, finish.

Each takes its dependencies (store, client, settings, the catalog loader) as arguments and returns a small,
JSON-serialisable dict, so tests call them directly; `catalog.tasks` builds the dependencies and calls them
from the DAG's tasks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kombo_sync.catalog.contract import BadRow, ValidatedCatalog, describe_bad_rows, validate_catalog
from kombo_sync.catalog.plan import (
    DEFAULT_MAX_SHARDS,
    FAILED,
    HELD_BACK,
    OUTCOMES,
    PREVIEWED,
    PROBLEM_OUTCOMES,
    PUBLISHED,
    REFUSED,
    SyncOptions,
    make_shards,
    plan_integrations,
)
from kombo_sync.catalog.publish import PackagesClient, publish_shard
from kombo_sync.catalog.source import read_catalog_sql, read_catalog_yaml
from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.integrations import IntegrationRecord, IntegrationRepository

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from kombo_sync.settings import CatalogSettings, PipelineSettings
    from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

JOB = "catalog"
SUCCESS = "success"
FAILURE = "failed"
_ROW_PREFIX = re.compile(r"^row \d+: ")


class CatalogSyncFailed(RuntimeError):
    """Some integrations were not brought up to date; the message names each one and why."""

    def __init__(self, message: str, summary: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.summary = dict(summary)


def load_catalog(
    settings: PipelineSettings, engine_factory: Callable[[], Engine] | None = None
) -> pd.DataFrame:
    """Read the catalog from the configured source: the SQL file on the warehouse, or the YAML file."""
    catalog = settings.catalog
    if catalog.source == "yaml":
        return read_catalog_yaml(settings.resolve_path(catalog.yaml_file))
    if engine_factory is None:
        from kombo_sync.runtime import warehouse_engine

        def engine_factory() -> Engine:
            return warehouse_engine(settings)

    return read_catalog_sql(engine_factory(), settings.resolve_path(catalog.sql_file))


def _select_integrations(
    repository: IntegrationRepository, options: SyncOptions
) -> tuple[list[IntegrationRecord], list[str]]:
    if not options.integration_ids:
        return repository.list_active(), []
    records: list[IntegrationRecord] = []
    unknown: list[str] = []
    for integration_id in options.integration_ids:
        record = repository.get(integration_id)
        if record is None:
            unknown.append(integration_id)
        else:
            records.append(record)
    return records, unknown


def _problem_key(source_key: str | None, reason: str) -> tuple[str | None, str]:
    # Row numbers move when other rows change; the same key with the same problems is the same bad row.
    return source_key, _ROW_PREFIX.sub("", reason)


def quarantine_bad_rows(
    quarantine: Quarantine, bad_rows: Sequence[BadRow], *, run_id: str | None, limit: int
) -> dict[str, int]:
    """Quarantine new bad rows (once, not every night) and resolve earlier ones that are now fixed."""
    open_rows = quarantine.list_open(JOB)
    open_keys = {_problem_key(row.source_key, row.reason): row.id for row in open_rows}
    current = {_problem_key(bad.source_key, bad.reason) for bad in bad_rows}
    added = kept = 0
    for bad in bad_rows:
        key = _problem_key(bad.source_key, bad.reason)
        if key in open_keys:
            kept += 1
            continue
        if added >= limit:
            continue
        quarantine.add(JOB, bad.source_key, bad.reason, bad.row, run_id=run_id)
        open_keys[key] = -1
        added += 1
    fixed = [row_id for key, row_id in open_keys.items() if row_id > 0 and key not in current]
    resolved = quarantine.resolve(fixed)
    if len(bad_rows) > added + kept:
        log.warning(
            "%s bad rows beyond the quarantine limit of %s per run were not stored",
            len(bad_rows) - added - kept,
            limit,
        )
    return {"quarantined": added, "already_quarantined": kept, "resolved": resolved}


def _catalog_summary(catalog: ValidatedCatalog) -> dict[str, Any]:
    return {
        "rows": catalog.rows,
        "customers": len(catalog.packages_by_customer),
        "bad_rows": len(catalog.bad_rows),
        "customers_with_bad_rows": sorted(catalog.tainted)[:100],
        "unattributed_bad_rows": len(catalog.unattributed_bad_rows),
        "inactive_rows": catalog.inactive_rows,
        "repeated_rows": catalog.duplicate_rows,
        "bad_row_examples": describe_bad_rows(catalog.bad_rows),
    }


def plan_catalog_sync(
    store: StateStore,
    load: Callable[[], pd.DataFrame],
    catalog_settings: CatalogSettings,
    options: SyncOptions,
    *,
    run_id: str | None = None,
    max_shards: int = DEFAULT_MAX_SHARDS,
) -> dict[str, Any]:
    """Read and check the catalog once, decide per integration, and return `{"shards": [...], "summary": {}}`."""
    audit = RunAudit(store)
    audit_id = audit.start(JOB, run_id)
    try:
        catalog = validate_catalog(load())
    except Exception as exc:
        audit.finish(audit_id, FAILURE, {"error": str(exc)[:2000], "options": _options_dict(options)})
        raise
    for line in describe_bad_rows(catalog.bad_rows):
        log.warning("catalog bad row: %s", line)
    if catalog.unattributed_bad_rows:
        log.warning(
            "%s bad rows have no customer key: quarantined, but no customer can be held back for them",
            len(catalog.unattributed_bad_rows),
        )
    quarantined: dict[str, int] = {}
    if options.dry_run:
        if catalog.bad_rows:
            log.info("dry run: %s bad rows reported, not quarantined", len(catalog.bad_rows))
    else:
        quarantined = quarantine_bad_rows(
            Quarantine(store), catalog.bad_rows, run_id=run_id, limit=catalog_settings.max_quarantine_rows
        )

    repository = IntegrationRepository(store)
    records, unknown = _select_integrations(repository, options)
    plan = plan_integrations(catalog, records, options, unknown_ids=unknown)
    shards = make_shards(
        plan.to_send,
        shard_size=catalog_settings.shard_size,
        min_shard_size=catalog_settings.min_shard_size,
        max_shards=max_shards,
        options={**_options_dict(options), "max_shrink_share": catalog_settings.max_shrink_share},
    )
    counts = plan.counts()
    for item in plan.settled:
        if item["outcome"] in PROBLEM_OUTCOMES:
            log.warning("integration %s %s: %s", item["integration_id"], item["outcome"], item.get("message"))
    log.info(
        "plan: %s integrations selected, %s to publish in %s shards, %s unchanged, %s held back, %s skipped, "
        "%s failed",
        len(records) + len(unknown),
        len(plan.to_send),
        len(shards),
        counts["unchanged"],
        counts[HELD_BACK],
        counts["skipped"],
        counts[FAILED],
    )
    summary = {
        "audit_id": audit_id,
        "run_id": run_id,
        "options": _options_dict(options),
        "catalog": {**_catalog_summary(catalog), **quarantined},
        "selected": len(records) + len(unknown),
        "planned_counts": counts,
        # Unchanged integrations are only counted: listing a thousand of them helps nobody.
        "settled": [item for item in plan.settled if item["outcome"] != "unchanged"],
        "shards": [shard["label"] for shard in shards],
    }
    return {"shards": shards, "summary": summary}


def _options_dict(options: SyncOptions) -> dict[str, Any]:
    return {
        "integration_ids": list(options.integration_ids),
        "force": options.force,
        "dry_run": options.dry_run,
        "allow_shrink": options.allow_shrink,
    }


def publish_catalog_shard(
    store: StateStore,
    client: PackagesClient,
    shard: Mapping[str, Any],
    *,
    concurrency: int = 16,
) -> dict[str, Any]:
    """Publish one shard planned by `plan_catalog_sync` (see `kombo_sync.catalog.publish.publish_shard`)."""
    return publish_shard(
        shard, client=client, integrations=IntegrationRepository(store), concurrency=concurrency
    )


def _format_problem(item: Mapping[str, Any]) -> str:
    code = f" {item['code']}" if item.get("code") else ""
    log_url = f" (log: {item['log_url']})" if item.get("log_url") else ""
    return f"- {item['integration_id']}: {item['outcome'].upper()}{code}: {item.get('message', '')}{log_url}"


def finish_catalog_sync(
    store: StateStore,
    plan_summary: Mapping[str, Any] | None,
    shard_results: Iterable[Mapping[str, Any] | None],
) -> dict[str, Any]:
    """Merge the plan and the shards, record the run, and raise `CatalogSyncFailed` naming every problem."""
    if not plan_summary:
        raise CatalogSyncFailed("the plan task did not finish: nothing was published (see its log)", {})
    options = plan_summary.get("options", {})
    counts = dict.fromkeys(OUTCOMES, 0)
    outcomes: list[dict[str, Any]] = list(plan_summary.get("settled", []))
    counts["unchanged"] = int(plan_summary.get("planned_counts", {}).get("unchanged", 0))
    reported: set[int] = set()
    for result in shard_results:
        if not result:
            continue
        reported.add(int(result.get("index", -1)))
        outcomes.extend(result.get("outcomes", []))
    for item in outcomes:
        counts[item["outcome"]] += 1
    labels = list(plan_summary.get("shards", []))
    missing = [label for index, label in enumerate(labels) if index not in reported]
    problems = [item for item in outcomes if item["outcome"] in PROBLEM_OUTCOMES]
    problems.sort(key=lambda item: (PROBLEM_OUTCOMES.index(item["outcome"]), item["integration_id"]))
    summary: dict[str, Any] = {
        "options": options,
        "counts": {name: count for name, count in counts.items() if count},
        "catalog": plan_summary.get("catalog", {}),
        "problems": problems,
        "published": sorted(item["integration_id"] for item in outcomes if item["outcome"] == PUBLISHED),
        "skipped": [item for item in outcomes if item["outcome"] == "skipped"],
        "previews": [
            {"integration_id": item["integration_id"], **(item.get("diff") or {})}
            for item in outcomes
            if item["outcome"] == PREVIEWED or (item["outcome"] == REFUSED and options.get("dry_run"))
        ],
        "shards": {"planned": len(labels), "missing": missing},
    }
    if options.get("dry_run"):
        for preview in summary["previews"]:
            log.info(
                "dry run %s: +%s added %s, ~%s changed %s, -%s removed %s (Kombo has %s)",
                preview["integration_id"],
                preview.get("added", 0),
                preview.get("added_ids", []),
                preview.get("changed", 0),
                preview.get("changed_ids", []),
                preview.get("removed", 0),
                preview.get("removed_ids", []),
                preview.get("previous", 0),
            )
    failed = bool(problems or missing)
    audit_id = plan_summary.get("audit_id")
    if audit_id is not None:
        RunAudit(store).finish(int(audit_id), FAILURE if failed else SUCCESS, summary)
    log.info(
        "catalog sync%s: %s",
        " (dry run)" if options.get("dry_run") else "",
        ", ".join(f"{count} {name}" for name, count in summary["counts"].items()) or "nothing to do",
    )
    if not failed:
        return summary
    lines = [f"{len(problems)} integration(s) were not brought up to date:"] if problems else []
    lines += [_format_problem(item) for item in problems[:200]]
    if len(problems) > 200:
        lines.append(f"... and {len(problems) - 200} more (runs.summary of audit id {audit_id})")
    if missing:
        lines.append(f"{len(missing)} shard(s) did not report (their task failed): " + "; ".join(missing))
    retriable = sorted(item["integration_id"] for item in problems if item.get("retriable"))
    if retriable:
        lines.append(
            "transient errors: the next run retries them, or trigger now with "
            f'{{"integration_ids": {retriable[:50]}}}'.replace("'", '"')
        )
    message = "\n".join(lines)
    log.error("%s", message)
    raise CatalogSyncFailed(message, summary)
