"""The result write-back job: the functions ``kombo_result_writeback`` calls, each returning a summary dict.

``enqueue_results`` reads the window (or chosen orders) from the warehouse in chunks, maps and validates each
chunk, quarantines bad rows and enqueues the rest into the outbox, whose (order id, payload hash) key is the
anti-join: a result already queued or sent is not queued again. ``send_pending`` drains the outbox. A dry run
maps and compares but writes nothing anywhere.

Over 400 lines on purpose: read, dry-run comparison, replay and discard share the window and the chunk loop, and
splitting them would hide the order of the steps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from kombo_sync.kombo.client import KomboClient
from kombo_sync.runs import StepFailed
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.orders import CANCELLED, OrderRepository
from kombo_sync.state.outbox import DEAD, SENT, OutboxEntry, ResultOutbox
from kombo_sync.state.schema import quarantine, result_outbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.sender import ResultSender
from kombo_sync.writeback.window import EARLIEST, LATEST

if TYPE_CHECKING:
    import pandas as pd

    from kombo_sync.writeback.mapping import MappedChunk, Rejection, ReportFetcher

# The reading half (source, mapping: pandas and numpy) is imported by the functions that read rows, so the
# send and report tasks, which import this module too, never pay for them.

log = logging.getLogger(__name__)

JOB = "writeback"
_TERMINAL = ("COMPLETED", "CANCELLED")


def http_report_fetcher(timeout: float = 30.0) -> ReportFetcher:
    """Fetch a report URL the warehouse gave (for ``fetch_report_urls``), refusing anything over the limit."""

    def fetch(url: str, limit: int) -> tuple[bytes, str | None]:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            response.raise_for_status()
            data = bytearray()
            for part in response.iter_bytes():
                data.extend(part)
                if len(data) > limit:
                    raise ValueError(f"report at the URL is over {limit} bytes")
            return bytes(data), response.headers.get("content-type")

    return fetch


def _short(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload for logs and previews: attachment bytes replaced by their length."""
    shown = dict(payload)
    attachments = []
    for attachment in payload.get("attachments") or []:
        item = dict(attachment)
        if isinstance(item.get("data"), str):
            item["data"] = f"<{len(item['data'])} base64 characters>"
        attachments.append(item)
    if attachments:
        shown["attachments"] = attachments
    return shown


def _diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys whose value changed: {key: [old, new]} (attachment bytes shortened)."""
    if old is None:
        return {}
    before, after = _short(old), _short(new)
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def _known_versions(store: StateStore, order_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Outbox rows of these orders (newest first), read for the dry-run and summary classification."""
    found: dict[str, list[Any]] = {}
    row = result_outbox.c
    with store.transaction(readonly=True) as conn:
        for start in range(0, len(order_ids), 500):
            query = (
                sa.select(row.order_id, row.payload_hash, row.state, row.payload_json, row.created_at)
                .where(row.order_id.in_(list(order_ids[start : start + 500])))
                .order_by(row.created_at.desc())
            )
            for found_row in conn.execute(query):
                found.setdefault(found_row.order_id, []).append(found_row)
    return found


def _classify(store: StateStore, mapped: pd.DataFrame) -> list[tuple[str, Any]]:
    """For each mapped result: new, changed, unchanged or not_writable (changed after a final result was sent, or
    its order cancelled: the sender records it so without sending)."""
    order_ids = [str(value) for value in mapped["order_id"]]
    versions = _known_versions(store, order_ids)
    cancelled = {
        order_id
        for order_id, state in OrderRepository(store).states_of(order_ids).items()
        if state == CANCELLED
    }
    classes: list[tuple[str, Any]] = []
    for order_id, payload_hash in zip(mapped["order_id"], mapped["payload_hash"], strict=True):
        known = versions.get(order_id, [])
        same = next((row for row in known if row.payload_hash == payload_hash), None)
        if same is not None:
            classes.append(("unchanged", same))
            continue
        if order_id in cancelled:
            classes.append(("not_writable", known[0] if known else None))
            continue
        sent_final = next(
            (
                row
                for row in known
                if row.state == SENT and (row.payload_json or {}).get("status") in _TERMINAL
            ),
            None,
        )
        if sent_final is not None:
            classes.append(("not_writable", sent_final))
        elif known:
            classes.append(("changed", known[0]))
        else:
            classes.append(("new", None))
    return classes


def _open_quarantine_keys(store: StateStore, keys: Sequence[str]) -> set[tuple[str, str]]:
    """(source_key, reason) pairs already quarantined and unresolved, so overlapping windows add no copies."""
    found: set[tuple[str, str]] = set()
    with store.transaction(readonly=True) as conn:
        for start in range(0, len(keys), 500):
            query = sa.select(quarantine.c.source_key, quarantine.c.reason).where(
                quarantine.c.job == JOB,
                quarantine.c.resolved_at.is_(None),
                quarantine.c.source_key.in_(list(keys[start : start + 500])),
            )
            found.update((str(key), str(reason)) for key, reason in conn.execute(query))
    return found


def _source_key(rejection: Rejection) -> str:
    if rejection.source_key:
        return rejection.source_key
    invitation = rejection.row.get("invitation_id")
    return f"invitation:{invitation}" if invitation else "unknown"


def _quarantine(store: StateStore, rejections: Sequence[Rejection], run_id: str | None) -> int:
    if not rejections:
        return 0
    keys = [_source_key(rejection) for rejection in rejections]
    already = _open_quarantine_keys(store, sorted(set(keys)))
    added = 0
    jail = Quarantine(store)
    for key, rejection in zip(keys, rejections, strict=True):
        if (key, rejection.reason[:4000]) in already or (key, rejection.reason) in already:
            continue
        jail.add(JOB, key, rejection.reason, rejection.row, run_id)
        already.add((key, rejection.reason))
        added += 1
    return added


def _chunks(
    store: StateStore,
    engine: Engine,
    sql: str,
    settings: PipelineSettings,
    *,
    window_start: datetime,
    window_end: datetime,
    order_ids: Sequence[str] | None,
) -> Iterable[pd.DataFrame]:
    from kombo_sync.writeback.source import id_filters_for, query_columns, read_result_chunks

    chunk_rows = settings.writeback.chunk_rows
    if not order_ids:
        return read_result_chunks(
            engine, sql, window_start=window_start, window_end=window_end, chunk_rows=chunk_rows
        )
    return read_result_chunks(
        engine,
        sql,
        window_start=EARLIEST,
        window_end=LATEST,
        chunk_rows=chunk_rows,
        id_filters=id_filters_for(store, query_columns(engine, sql), order_ids),
    )


def enqueue_results(
    store: StateStore,
    engine: Engine,
    settings: PipelineSettings,
    *,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    order_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
    fetch_report: ReportFetcher | None = None,
) -> dict[str, Any]:
    """Read, map, quarantine and enqueue the window (or ``order_ids``, whatever their date); returns counts.

    A dry run writes nothing (no outbox rows, no quarantine rows) and returns previews with a diff against the
    version already known for each order.
    """
    import pandas as pd

    from kombo_sync.writeback.mapping import map_results
    from kombo_sync.writeback.source import load_results_sql, resolve_orders

    config = settings.writeback
    if not order_ids and (window_start is None or window_end is None):
        raise ValueError("give a window (window_start, window_end) or order_ids")
    sql = load_results_sql(settings.resolve_path(config.sql_file))
    if fetch_report is None and config.fetch_report_urls:
        fetch_report = http_report_fetcher()
    outbox = ResultOutbox(store)
    counts = dict.fromkeys(
        (
            "rows",
            "mapped",
            "quarantined",
            "rejected",
            "enqueued",
            "new",
            "changed",
            "unchanged",
            "not_writable",
        ),
        0,
    )
    previews: list[dict[str, Any]] = []
    rejected_preview: list[dict[str, Any]] = []
    found_ids: set[str] = set()
    chunk_number = 0
    for chunk in _chunks(
        store,
        engine,
        sql,
        settings,
        window_start=window_start or EARLIEST,
        window_end=window_end or LATEST,
        order_ids=order_ids,
    ):
        chunk_number += 1
        counts["rows"] += len(chunk)
        mapped: MappedChunk = map_results(
            resolve_orders(store, chunk),
            max_attachment_bytes=config.max_attachment_bytes,
            fetch_report=fetch_report,
            insecure_url_hosts=config.insecure_url_hosts,
        )
        results = mapped.results
        counts["mapped"] += len(results)
        counts["rejected"] += len(mapped.rejections)
        if order_ids:
            found_ids.update(str(value) for value in results["order_id"])
            found_ids.update(r.source_key for r in mapped.rejections if r.source_key)
        classes = _classify(store, results) if len(results) else []
        for kind, _ in classes:
            counts[kind] += 1
        if dry_run:
            for record, (kind, known) in zip(results.to_dict("records"), classes, strict=True):
                if len(previews) >= config.dry_run_preview_rows:
                    break
                preview = {
                    "order_id": record["order_id"],
                    "integration_id": record["integration_id"],
                    "payload_hash": record["payload_hash"],
                    "action": {"new": "send", "changed": "send", "unchanged": "skip"}.get(kind, kind),
                    "payload": _short(record["payload"]),
                }
                if kind == "changed" or kind == "not_writable":
                    preview["diff"] = _diff(None if known is None else known.payload_json, record["payload"])
                previews.append(preview)
                log.info(
                    "dry run: order %s -> %s\n%s",
                    record["order_id"],
                    preview["action"],
                    json.dumps(preview, indent=2, sort_keys=True, default=str),
                )
            rejected_preview.extend(
                {"source_key": r.source_key, "reason": r.reason}
                for r in mapped.rejections[: max(0, config.dry_run_preview_rows - len(rejected_preview))]
            )
        else:
            counts["quarantined"] += _quarantine(store, mapped.rejections, run_id)
            entries = [
                OutboxEntry(
                    str(record["order_id"]),
                    str(record["integration_id"]),
                    str(record["payload_hash"]),
                    record["payload"],
                    None
                    if pd.isna(record["source_updated_at"])
                    else record["source_updated_at"].to_pydatetime(),
                )
                for record in results.to_dict("records")
            ]
            counts["enqueued"] += outbox.enqueue(entries) if entries else 0
        log.info(
            "chunk %s: %s rows so far, %s mapped, %s rejected, %s enqueued",
            chunk_number,
            counts["rows"],
            counts["mapped"],
            counts["rejected"],
            counts["enqueued"],
        )
    summary: dict[str, Any] = {
        "window_start": None if order_ids else (window_start or EARLIEST).isoformat(),
        "window_end": None if order_ids else (window_end or LATEST).isoformat(),
        "order_ids": len(order_ids or []),
        "dry_run": dry_run,
        "chunks": chunk_number,
        **counts,
    }
    if order_ids:
        missing = sorted(set(order_ids) - found_ids)
        summary["missing_in_warehouse"] = missing[:100]
        if missing:
            log.warning("%s requested order(s) have no row in the warehouse: %s", len(missing), missing[:20])
    if dry_run:
        summary["previews"] = previews
        summary["rejections"] = rejected_preview
    log.info("write-back read %s: %s", "(dry run)" if dry_run else "", {k: summary[k] for k in counts})
    return summary


def replay_dead_letters(
    store: StateStore,
    *,
    order_ids: Sequence[str] | None = None,
    all_dead: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Requeue dead letters: those of ``order_ids`` (dead or not writable), and every dead one with ``all_dead``."""
    outbox = ResultOutbox(store)
    wanted: set[str] = set(order_ids or [])
    if all_dead:
        wanted.update(item.order_id for item in outbox.dead_letters() if item.state == DEAD)
    if not wanted:
        return {"requested": 0, "requeued": 0, "dry_run": dry_run}
    if dry_run:
        letters = [item for item in outbox.dead_letters() if item.order_id in wanted]
        return {"requested": len(wanted), "requeued": 0, "would_requeue": len(letters), "dry_run": True}
    requeued = outbox.requeue(sorted(wanted))
    log.info("replaying %s dead letter(s) of %s order(s)", requeued, len(wanted))
    return {"requested": len(wanted), "requeued": requeued, "dry_run": False}


def discard_dead_letters(
    store: StateStore,
    *,
    order_ids: Sequence[str] | None = None,
    quarantine_ids: Sequence[int] | None = None,
    reason: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Give up on dead letters (by order id: they become `discarded`) and quarantined rows (by id: resolved),
    both with the team's ``reason``, which is required. Nothing is sent or deleted; the rows keep the reason."""
    orders = list(dict.fromkeys(order_ids or []))
    rows = sorted({int(row_id) for row_id in quarantine_ids or []})
    if not orders and not rows:
        return {"requested": 0, "discarded": 0, "quarantine_resolved": 0, "dry_run": dry_run}
    text = (reason or "").strip()
    if not text:
        raise StepFailed(
            "read_results",
            "a discard needs a reason (param discard_reason)",
            "Trigger the run again with discard_reason set; nothing was discarded.",
        )
    summary: dict[str, Any] = {"requested": len(orders) + len(rows), "dry_run": dry_run}
    if dry_run:
        letters = [item for item in ResultOutbox(store).dead_letters() if item.order_id in set(orders)]
        return summary | {"discarded": 0, "quarantine_resolved": 0, "would_discard": len(letters)}
    summary["discarded"] = ResultOutbox(store).discard(orders, text) if orders else 0
    summary["quarantine_resolved"] = Quarantine(store).resolve(rows, f"discarded: {text}") if rows else 0
    log.info(
        "discarded %s dead letter(s) of %s order(s) and %s quarantined row(s)",
        summary["discarded"],
        len(orders),
        summary["quarantine_resolved"],
    )
    return summary


def send_pending(
    store: StateStore,
    client: KomboClient,
    settings: PipelineSettings,
    *,
    dry_run: bool = False,
    owner: str | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Send every due result in the outbox (nothing in a dry run); returns the sender's summary."""
    if dry_run:
        counts = ResultOutbox(store).counts_by_state()
        log.info("dry run: nothing sent; outbox holds %s", counts)
        return {"dry_run": True, "sent": 0, "outbox": counts}
    return ResultSender(store, client, settings.writeback, owner=owner).run(max_seconds=max_seconds)


def outbox_report(store: StateStore, *, limit: int = 20) -> dict[str, Any]:
    """Outbox counts by state and the newest dead letters (code, message, log_url) for the run's log."""
    outbox = ResultOutbox(store)
    counts = outbox.counts_by_state()
    letters = [
        {
            "order_id": item.order_id,
            "integration_id": item.integration_id,
            "state": item.state,
            "code": item.last_error_code,
            "message": item.last_error_message,
            "log_url": item.log_url,
            "updated_at": item.updated_at.isoformat(),
        }
        for item in outbox.dead_letters(limit=limit)
    ]
    for letter in letters:
        log.warning(
            "dead letter: order %s (%s) %s %s: %s (log: %s)",
            letter["order_id"],
            letter["integration_id"],
            letter["state"],
            letter["code"],
            letter["message"],
            letter["log_url"],
        )
    log.info("result outbox: %s", counts)
    return {"outbox": counts, "dead_letters": letters}


def run_writeback(
    store: StateStore,
    engine: Engine,
    client: KomboClient,
    settings: PipelineSettings,
    *,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    order_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    replay: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The whole job in one call (tests, benchmarks, the CLI): replay, read and enqueue, send, report."""
    audit = RunAudit(store)
    audit_id = None if dry_run else audit.start(JOB, run_id)
    try:
        summary = {
            "replay": replay_dead_letters(store, order_ids=order_ids, all_dead=replay, dry_run=dry_run),
            "read": enqueue_results(
                store,
                engine,
                settings,
                window_start=window_start,
                window_end=window_end,
                order_ids=order_ids,
                dry_run=dry_run,
                run_id=run_id,
            ),
            "send": send_pending(store, client, settings, dry_run=dry_run),
        }
        summary["report"] = outbox_report(store)
    except Exception:
        if audit_id is not None:
            audit.finish(audit_id, "failed")
        raise
    if audit_id is not None:
        audit.finish(audit_id, "success", {key: flat_summary(value) for key, value in summary.items()})
    return summary


def flat_summary(section: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level scalars of a summary (for the run audit; previews and lists stay in XCom)."""
    return {key: value for key, value in section.items() if not isinstance(value, list | dict)}
