"""Planning a catalog sync: which integrations get which list, which are unchanged, held back or skipped.

The planner runs once per DAG run: it reads and validates the catalog once, compares each integration's list
with the hash stored after its last successful publish, and packs the integrations that need a `PUT` into
shards. A shard is compact (each distinct package definition once, integrations refer to them by position),
so 50 integrations x 50 packages is tens of kilobytes of XCom, and no publisher re-reads the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kombo_sync.catalog.contract import BadRow, PackageDef, ValidatedCatalog, package_list_hash
from kombo_sync.state.integrations import ACTIVE, ASSESSMENT, IntegrationRecord

# Airflow's default [core] max_map_length: a mapped task cannot expand into more instances than this.
DEFAULT_MAX_SHARDS = 1024
# Publish tasks of one run at once: the DAG's `max_active_tis_per_dagrun` (a test pins that they agree). More
# shards than this only pay when each would otherwise exceed `shard_size`.
PARALLEL_SHARDS = 4

# Outcomes of one integration in one run.
PUBLISHED = "published"
UNCHANGED = "unchanged"
HELD_BACK = "held_back"
REFUSED = "refused"
FAILED = "failed"
SKIPPED = "skipped"
PREVIEWED = "previewed"  # dry run: the diff was computed, nothing sent
OUTCOMES = (PUBLISHED, UNCHANGED, HELD_BACK, REFUSED, FAILED, SKIPPED, PREVIEWED)
# Outcomes that make the run end failed: the team has something to fix or to allow.
PROBLEM_OUTCOMES = (FAILED, HELD_BACK, REFUSED)

CUSTOMER_KEY_MISSING = "CATALOG.CUSTOMER_KEY_MISSING"
INTEGRATION_UNKNOWN = "CATALOG.INTEGRATION_UNKNOWN"
BAD_ROWS = "CATALOG.BAD_ROWS"
WIPE_GUARD = "CATALOG.WIPE_GUARD"


@dataclass(frozen=True)
class SyncOptions:
    """The run's parameters (DAG `Param`s)."""

    integration_ids: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    allow_shrink: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> SyncOptions:
        from kombo_sync.runs import flag, string_list

        params = params or {}
        return cls(
            integration_ids=tuple(string_list(params.get("integration_ids"), "integration_ids")),
            force=flag(params.get("force"), "force"),
            dry_run=flag(params.get("dry_run"), "dry_run"),
            allow_shrink=flag(params.get("allow_shrink"), "allow_shrink"),
        )


def outcome(
    integration_id: str,
    result: str,
    *,
    customer_key: str | None = None,
    code: str | None = None,
    message: str | None = None,
    log_url: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """One integration's outcome as it travels in XCom and lands in the run summary."""
    record: dict[str, Any] = {"integration_id": integration_id, "outcome": result}
    if customer_key is not None:
        record["customer_key"] = customer_key
    if code is not None:
        record["code"] = code
    if message is not None:
        record["message"] = message
    if log_url is not None:
        record["log_url"] = log_url
    record.update({key: value for key, value in details.items() if value is not None})
    return record


@dataclass
class PlannedIntegration:
    integration_id: str
    customer_key: str
    packages: tuple[PackageDef, ...]
    packages_hash: str


@dataclass
class CatalogPlan:
    """What the planner decided: the shards to publish and the integrations settled without a request."""

    to_send: list[PlannedIntegration] = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)  # unchanged, held back, skipped, failed

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for item in self.settled:
            counts[item["outcome"]] += 1
        counts["to_send"] = len(self.to_send)
        return counts


def inactive_reason(record: IntegrationRecord) -> str | None:
    """Why the pipeline does not serve this integration, or None when it does."""
    if record.status == "DELETED" or record.deleted_at is not None:
        return "deleted"
    if record.category != ASSESSMENT:
        return f"category {record.category}, not {ASSESSMENT}"
    if record.status != ACTIVE:
        return f"status {record.status}"
    if not record.enabled:
        return "disabled by an admin"
    return None


def _bad_rows_message(bad_rows: Sequence[BadRow], limit: int = 5) -> str:
    shown = "; ".join(bad.reason for bad in bad_rows[:limit])
    more = f"; and {len(bad_rows) - limit} more" if len(bad_rows) > limit else ""
    return (
        f"held back: its package list would change while {len(bad_rows)} of its catalog row(s) are "
        f"quarantined ({shown}{more}); fix the rows and the next run publishes the full list"
    )


def plan_integrations(
    catalog: ValidatedCatalog,
    records: Iterable[IntegrationRecord],
    options: SyncOptions,
    *,
    unknown_ids: Iterable[str] = (),
) -> CatalogPlan:
    """Decide per integration: send, unchanged (same hash), held back (bad rows), skipped or failed."""
    plan = CatalogPlan()
    for integration_id in unknown_ids:
        plan.settled.append(
            outcome(
                integration_id,
                FAILED,
                code=INTEGRATION_UNKNOWN,
                message="not in the integration registry (add it: python -m kombo_sync.registry add ...)",
            )
        )
    for record in records:
        reason = inactive_reason(record)
        if reason is not None:
            plan.settled.append(outcome(record.id, SKIPPED, message=f"skipped: {reason}"))
            continue
        if not record.customer_key:
            plan.settled.append(
                outcome(
                    record.id,
                    FAILED,
                    code=CUSTOMER_KEY_MISSING,
                    message="the integration has no customer key (Kombo end_user.origin_id); set it with "
                    "python -m kombo_sync.registry add ID --customer-key KEY",
                )
            )
            continue
        packages = catalog.packages_for(record.customer_key)
        packages_hash = package_list_hash(packages)
        changed = packages_hash != record.packages_hash
        tainted = catalog.tainted.get(record.customer_key)
        if tainted and changed:
            plan.settled.append(
                outcome(
                    record.id,
                    HELD_BACK,
                    customer_key=record.customer_key,
                    code=BAD_ROWS,
                    message=_bad_rows_message(tainted),
                    bad_rows=[bad.row_number for bad in tainted[:50]],
                )
            )
            continue
        if not changed and not options.force:
            plan.settled.append(
                outcome(record.id, UNCHANGED, customer_key=record.customer_key, packages=len(packages))
            )
            continue
        plan.to_send.append(PlannedIntegration(record.id, record.customer_key, packages, packages_hash))
    return plan


def shard_label(integration_ids: Sequence[str], index: int, total: int) -> str:
    """The name a shard shows in the Airflow UI (map_index_template)."""
    if len(integration_ids) == 1:
        return integration_ids[0]
    prefix = f"shard {index + 1}/{total}: " if total > 1 else ""
    return f"{prefix}{integration_ids[0]} .. {integration_ids[-1]} ({len(integration_ids)} integrations)"


def shard_count(
    integrations: int,
    *,
    shard_size: int,
    min_shard_size: int | None = None,
    parallel: int = PARALLEL_SHARDS,
    max_shards: int = DEFAULT_MAX_SHARDS,
) -> int:
    """How many publish tasks `integrations` integrations are worth: one for a small run; up to `parallel` when
    each gets at least `min_shard_size` (a task start costs about 2 s, which a shard must earn back by
    publishing in parallel; None: never for that reason); more only when a shard would exceed `shard_size`;
    never above `max_shards`."""
    if integrations <= 0:
        return 0
    worth_parallel = min(parallel, integrations // min_shard_size) if min_shard_size else 1
    needed = math.ceil(integrations / shard_size)
    return max(1, min(max_shards, max(needed, worth_parallel)))


def make_shards(
    to_send: Sequence[PlannedIntegration],
    *,
    shard_size: int,
    min_shard_size: int | None = None,
    max_shards: int = DEFAULT_MAX_SHARDS,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Pack the integrations to publish into `shard_count(...)` compact, JSON-serialisable shards of even size."""
    count = shard_count(
        len(to_send), shard_size=shard_size, min_shard_size=min_shard_size, max_shards=max_shards
    )
    if not count:
        return []
    size = math.ceil(len(to_send) / count)
    chunks = [to_send[start : start + size] for start in range(0, len(to_send), size)]
    shards: list[dict[str, Any]] = []
    for index, chunk in enumerate(chunks):
        positions: dict[PackageDef, int] = {}
        members: list[list[Any]] = []
        for planned in chunk:
            refs = [positions.setdefault(package, len(positions)) for package in planned.packages]
            members.append([planned.integration_id, planned.customer_key, planned.packages_hash, refs])
        ids = [planned.integration_id for planned in chunk]
        shards.append(
            {
                "index": index,
                "of": len(chunks),
                "label": shard_label(ids, index, len(chunks)),
                "options": dict(options or {}),
                "definitions": [list(package) for package in positions],
                "integrations": members,
            }
        )
    return shards


def shard_members(shard: Mapping[str, Any]) -> list[PlannedIntegration]:
    """The integrations of a shard with their package lists, rebuilt from the compact form."""
    definitions = [PackageDef(*definition) for definition in shard["definitions"]]
    return [
        PlannedIntegration(
            integration_id, customer_key, tuple(definitions[ref] for ref in refs), packages_hash
        )
        for integration_id, customer_key, packages_hash, refs in shard["integrations"]
    ]
