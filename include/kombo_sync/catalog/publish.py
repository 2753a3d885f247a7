"""Publishing one shard: `PUT /assessment/packages` per integration, concurrently, each one isolated.

Per integration: re-check the registry (a retried task or an overlapping run may have published already),
read Kombo's current list when the wipe guard needs it, refuse a sudden shrink unless allowed, send the full
list, and store its hash and package ids only after Kombo accepted it (the webhook rejects orders for a package
not in that list). Any error stays with its integration, with Kombo's
code and `log_url`, and the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol

from kombo_sync.catalog.contract import PackageDef
from kombo_sync.catalog.plan import (
    FAILED,
    OUTCOMES,
    PREVIEWED,
    PUBLISHED,
    REFUSED,
    SKIPPED,
    UNCHANGED,
    WIPE_GUARD,
    PlannedIntegration,
    inactive_reason,
    outcome,
    shard_members,
)
from kombo_sync.kombo.errors import KomboError
from kombo_sync.kombo.models import RemotePackage
from kombo_sync.state.integrations import IntegrationRecord, IntegrationRepository

log = logging.getLogger(__name__)

# Ids listed per category in a diff (the counts are always complete).
DIFF_IDS_SHOWN = 20
PROGRESS_EVERY_SECONDS = 10.0


class _Unset:
    pass


UNSET = _Unset()


class PackagesClient(Protocol):
    """The part of `KomboClient` a publisher needs (thread-safe; keeps Kombo's limits)."""

    def get_packages(self, integration_id: str) -> list[RemotePackage]: ...

    def set_packages(self, integration_id: str, packages: Sequence[Mapping[str, Any]]) -> list[str]: ...


@dataclass(frozen=True)
class PackageDiff:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    previous_count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "previous": self.previous_count,
            "added_ids": list(self.added[:DIFF_IDS_SHOWN]),
            "changed_ids": list(self.changed[:DIFF_IDS_SHOWN]),
            "removed_ids": list(self.removed[:DIFF_IDS_SHOWN]),
        }

    def describe(self) -> str:
        def ids(values: tuple[str, ...]) -> str:
            shown = ", ".join(values[:DIFF_IDS_SHOWN])
            return f" [{shown}{', ...' if len(values) > DIFF_IDS_SHOWN else ''}]" if values else ""

        return (
            f"+{len(self.added)} added{ids(self.added)}, ~{len(self.changed)} changed{ids(self.changed)}, "
            f"-{len(self.removed)} removed{ids(self.removed)}"
        )


def diff_packages(previous: Sequence[RemotePackage], new: Sequence[PackageDef]) -> PackageDiff:
    """What a PUT of `new` changes relative to Kombo's current list."""
    before = {package.id: (package.type, package.name, package.description) for package in previous}
    after = {package.id: (package.type, package.name, package.description) for package in new}
    return PackageDiff(
        added=tuple(sorted(after.keys() - before.keys())),
        changed=tuple(sorted(key for key in after.keys() & before.keys() if after[key] != before[key])),
        removed=tuple(sorted(before.keys() - after.keys())),
        previous_count=len(before),
    )


def wipe_guard_refusal(diff: PackageDiff, new_count: int, max_shrink_share: float) -> str | None:
    """Why a publish must not go out without `allow_shrink`, or None when it is safe."""
    if diff.previous_count == 0:
        return None
    if new_count == 0:
        return (
            f"the catalog yields no packages for this integration, which has {diff.previous_count} on Kombo; "
            "sending would delete them all (re-run with allow_shrink if that is intended)"
        )
    share = len(diff.removed) / diff.previous_count
    if share > max_shrink_share:
        return (
            f"{len(diff.removed)} of its {diff.previous_count} packages on Kombo ({share:.0%}) would be removed, "
            f"more than max_shrink_share {max_shrink_share:.0%} (re-run with allow_shrink if that is intended)"
        )
    return None


def _error_outcome(planned: PlannedIntegration, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, KomboError):
        return outcome(
            planned.integration_id,
            FAILED,
            customer_key=planned.customer_key,
            code=exc.code or (f"HTTP_{exc.http_status}" if exc.http_status else type(exc).__name__),
            message=exc.message,
            log_url=exc.log_url,
            http_status=exc.http_status,
            retriable=exc.retriable,
        )
    return outcome(
        planned.integration_id,
        FAILED,
        customer_key=planned.customer_key,
        code=type(exc).__name__,
        message=str(exc)[:1000] or type(exc).__name__,
    )


def publish_integration(
    planned: PlannedIntegration,
    *,
    client: PackagesClient,
    integrations: IntegrationRepository,
    force: bool = False,
    dry_run: bool = False,
    allow_shrink: bool = False,
    max_shrink_share: float = 0.5,
    record: IntegrationRecord | None | _Unset = UNSET,
) -> dict[str, Any]:
    """Publish one integration's full list (or preview it); never raises, returns its outcome.

    `record` is the integration's registry row when the caller already read it (None: not registered)."""
    integration_id = planned.integration_id
    try:
        if isinstance(record, _Unset):
            record = integrations.get(integration_id)
        if record is None:
            return outcome(
                integration_id, SKIPPED, message="skipped: removed from the registry since planning"
            )
        reason = inactive_reason(record)
        if reason is not None:
            return outcome(integration_id, SKIPPED, message=f"skipped: {reason} since planning")
        if record.packages_hash == planned.packages_hash and not force and not dry_run:
            # A retried task or an overlapping run got here first. A list published before the ids were
            # recorded (same hash, so Kombo has exactly these packages) gets its ids now, without a request.
            if record.published_package_ids is None:
                integrations.record_packages_publish(
                    integration_id,
                    planned.packages_hash,
                    record.packages_published_at,
                    package_ids=[package.id for package in planned.packages],
                )
            return outcome(
                integration_id, UNCHANGED, customer_key=planned.customer_key, packages=len(planned.packages)
            )
        # Kombo's current list is read only when something can be lost: an integration published before, or
        # an empty new list. A first publish of a non-empty list adds only (one request, not two).
        needs_previous = dry_run or record.packages_hash is not None or not planned.packages
        previous = client.get_packages(integration_id) if needs_previous else []
        diff = diff_packages(previous, planned.packages)
        refusal = None if allow_shrink else wipe_guard_refusal(diff, len(planned.packages), max_shrink_share)
        if refusal is not None:
            return outcome(
                integration_id,
                REFUSED,
                customer_key=planned.customer_key,
                code=WIPE_GUARD,
                message=("dry run: would be refused: " if dry_run else "refused: ") + refusal,
                packages=len(planned.packages),
                diff=diff.as_dict(),
            )
        if dry_run:
            return outcome(
                integration_id,
                PREVIEWED,
                customer_key=planned.customer_key,
                message=f"dry run: {diff.describe()}",
                packages=len(planned.packages),
                diff=diff.as_dict(),
            )
        warnings = client.set_packages(integration_id, [package.to_kombo() for package in planned.packages])
        integrations.record_packages_publish(
            integration_id, planned.packages_hash, package_ids=[package.id for package in planned.packages]
        )
        return outcome(
            integration_id,
            PUBLISHED,
            customer_key=planned.customer_key,
            packages=len(planned.packages),
            diff=diff.as_dict()
            if needs_previous
            else {"added": len(planned.packages), "first_publish": True},
            warnings=len(warnings) or None,
        )
    except Exception as exc:  # one integration's failure must not stop the others
        return _error_outcome(planned, exc)


def _log_outcome(result: Mapping[str, Any]) -> None:
    name = result["integration_id"]
    kind = result["outcome"]
    if kind == FAILED:
        log.error(
            "integration %s FAILED: %s: %s%s",
            name,
            result.get("code"),
            result.get("message"),
            f" (log: {result['log_url']})" if result.get("log_url") else "",
        )
    elif kind == REFUSED:
        log.warning("integration %s %s", name, result.get("message"))
    elif kind == PUBLISHED:
        diff = result.get("diff") or {}
        log.info(
            "integration %s published %s packages (+%s ~%s -%s)",
            name,
            result.get("packages"),
            diff.get("added", 0),
            diff.get("changed", 0),
            diff.get("removed", 0),
        )
    else:
        log.info("integration %s %s%s", name, kind, f": {result['message']}" if result.get("message") else "")


def publish_shard(
    shard: Mapping[str, Any],
    *,
    client: PackagesClient,
    integrations: IntegrationRepository,
    concurrency: int = 16,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Publish every integration of one planned shard with a thread pool; returns the shard's outcomes."""
    options = shard.get("options") or {}
    members = shard_members(shard)
    label = shard.get("label", f"shard {shard.get('index', 0) + 1}")
    started = clock()
    counts = dict.fromkeys(OUTCOMES, 0)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    last_progress = started
    log.info(
        "%s: publishing %s integrations with %s threads%s",
        label,
        len(members),
        min(concurrency, len(members)) or 1,
        " (dry run: nothing is sent)" if options.get("dry_run") else "",
    )

    # One read of the registry for the whole shard (fresh: a retried task re-reads it), not one per integration.
    wanted = {planned.integration_id for planned in members}
    records = {
        record.id: record for record in integrations.list_all(include_deleted=True) if record.id in wanted
    }

    def run(planned: PlannedIntegration) -> dict[str, Any]:
        return publish_integration(
            planned,
            record=records.get(planned.integration_id),
            client=client,
            integrations=integrations,
            force=bool(options.get("force")),
            dry_run=bool(options.get("dry_run")),
            allow_shrink=bool(options.get("allow_shrink")),
            max_shrink_share=float(options.get("max_shrink_share", 0.5)),
        )

    with ThreadPoolExecutor(
        max_workers=max(1, min(concurrency, len(members))), thread_name_prefix="catalog"
    ) as pool:
        futures = [pool.submit(run, planned) for planned in members]
        for future in as_completed(futures):
            result = future.result()
            _log_outcome(result)
            with lock:
                results.append(result)
                counts[result["outcome"]] += 1
                now = clock()
                if now - last_progress >= PROGRESS_EVERY_SECONDS or len(results) == len(members):
                    last_progress = now
                    log.info(
                        "%s: %s/%s integrations done in %.1f s (%s)",
                        label,
                        len(results),
                        len(members),
                        now - started,
                        ", ".join(f"{count} {name}" for name, count in counts.items() if count),
                    )
    results.sort(key=lambda item: item["integration_id"])
    return {
        "index": shard.get("index", 0),
        "label": label,
        "counts": {name: count for name, count in counts.items() if count},
        "outcomes": results,
        "seconds": round(clock() - started, 3),
    }
