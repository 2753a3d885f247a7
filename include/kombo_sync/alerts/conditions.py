"""The state-based alert conditions, read from the state store: each returns every subject that holds now.

A `Finding` carries only ids, states, counts, codes and Kombo log_urls: these queries never select a candidate
column, an error message or a quarantined row's content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kombo_sync.alerts.messages import (
    DEAD_LETTER,
    INTEGRATION_FAILING,
    ORDER_NOT_INVITED,
    QUARANTINED_ROW,
    safe_code,
)
from kombo_sync.settings import AlertSettings
from kombo_sync.state.schema import orders, quarantine, result_outbox, runs
from kombo_sync.state.store import StateStore


@dataclass(frozen=True)
class Finding:
    """One subject of a condition: its ledger key, the id shown, and one line of safe detail."""

    subject: str
    ref: str
    line: str
    group: str = ""


# (store, settings, now, limit) -> findings newest first, at most `limit + 1` (the extra one says "more").
Condition = Callable[[StateStore, AlertSettings, datetime, int], list[Finding]]


def dead_letters(store: StateStore, settings: AlertSettings, now: datetime, limit: int) -> list[Finding]:
    """Results in the dead-letter states (dead, not_writable), newest first."""
    from kombo_sync.state.outbox import DEAD_LETTER_STATES

    row = result_outbox.c
    query = (
        sa.select(
            row.order_id, row.payload_hash, row.integration_id, row.state, row.last_error_code, row.log_url
        )
        .where(row.state.in_(DEAD_LETTER_STATES))
        .order_by(row.updated_at.desc(), row.order_id)
        .limit(limit + 1)
    )
    findings = []
    with store.transaction(readonly=True) as conn:
        for item in conn.execute(query):
            code = safe_code(item.last_error_code)
            detail = f"{item.state}" + (f", code {code}" if code else "")
            log_url = f", log {item.log_url}" if _is_url(item.log_url) else ""
            findings.append(
                Finding(
                    subject=f"{item.order_id}:{item.payload_hash}",
                    ref=item.order_id,
                    line=f"order {item.order_id} (integration {item.integration_id}): {detail}{log_url}",
                    group=code or item.state,
                )
            )
    return findings


def orders_not_invited(
    store: StateStore, settings: AlertSettings, now: datetime, limit: int
) -> list[Finding]:
    """Orders still received or inviting `order_not_invited_minutes` after they were recorded, newest first."""
    from kombo_sync.state.orders import INVITING, RECEIVED

    minutes = settings.thresholds.order_not_invited_minutes
    row = orders.c
    query = (
        sa.select(row.id, row.integration_id, row.state, row.attempts, row.received_at)
        .where(row.state.in_((RECEIVED, INVITING)), row.received_at <= now - timedelta(minutes=minutes))
        .order_by(row.received_at.desc(), row.id)
        .limit(limit + 1)
    )
    findings = []
    with store.transaction(readonly=True) as conn:
        for item in conn.execute(query):
            waited = int((now - item.received_at).total_seconds() // 60)
            findings.append(
                Finding(
                    subject=item.id,
                    ref=item.id,
                    line=(
                        f"order {item.id} (integration {item.integration_id}): {item.state} for {waited} min, "
                        f"{item.attempts} attempt(s)"
                    ),
                    group=item.integration_id,
                )
            )
    return findings


def quarantined_rows(store: StateStore, settings: AlertSettings, now: datetime, limit: int) -> list[Finding]:
    """Unresolved quarantine rows, newest first (the reason and the row stay in the table: they may quote
    candidate data)."""
    row = quarantine.c
    query = (
        sa.select(row.id, row.job, row.run_id, row.created_at)
        .where(row.resolved_at.is_(None))
        .order_by(row.id.desc())
        .limit(limit + 1)
    )
    findings = []
    with store.transaction(readonly=True) as conn:
        for item in conn.execute(query):
            run = f", run {item.run_id}" if item.run_id else ""
            findings.append(
                Finding(
                    subject=str(item.id),
                    ref=str(item.id),
                    line=f"quarantine id {item.id} (job {item.job}{run})",
                    group=item.job,
                )
            )
    return findings


@dataclass(frozen=True)
class _Observation:
    """What one finished run says per integration: which it covered (None: all) and which failed."""

    covered: frozenset[str] | None
    failed: Mapping[str, tuple[str | None, str | None]]  # integration id -> (code, Kombo log_url)


def _poll_observation(summary: Any) -> _Observation | None:
    if not isinstance(summary, Mapping) or not isinstance(summary.get("integrations_failed"), Mapping):
        return None  # a run that stopped before polling says nothing about any one integration
    failed = {
        str(integration_id): (safe_code(str(text).split(":", 1)[0]) or "ERROR", None)
        for integration_id, text in summary["integrations_failed"].items()
    }
    return _Observation(covered=None, failed=failed)


def _catalog_observation(summary: Any) -> _Observation | None:
    from kombo_sync.catalog.plan import PROBLEM_OUTCOMES

    if not isinstance(summary, Mapping) or not isinstance(summary.get("problems"), list):
        return None
    options = summary.get("options") if isinstance(summary.get("options"), Mapping) else {}
    selected = [str(i) for i in (options or {}).get("integration_ids") or []]
    failed: dict[str, tuple[str | None, str | None]] = {}
    for item in summary["problems"]:
        if (
            isinstance(item, Mapping)
            and item.get("outcome") in PROBLEM_OUTCOMES
            and item.get("integration_id")
        ):
            code = safe_code(item.get("code")) or str(item["outcome"])
            log_url = item.get("log_url") if _is_url(item.get("log_url")) else None
            failed[str(item["integration_id"])] = (code, log_url)
    return _Observation(covered=frozenset(selected) if selected else None, failed=failed)


def _failing_jobs() -> dict[str, Callable[[Any], _Observation | None]]:
    from kombo_sync.catalog.job import JOB as CATALOG_JOB
    from kombo_sync.intake.tasks import POLL_JOB

    return {POLL_JOB: _poll_observation, CATALOG_JOB: _catalog_observation}


def integrations_failing(
    store: StateStore, settings: AlertSettings, now: datetime, limit: int
) -> list[Finding]:
    """Integrations whose poll (intake) or package publish (catalog) failed in each of their last
    `integration_failing_runs` finished runs (runs that did not cover an integration are skipped for it)."""
    needed = settings.thresholds.integration_failing_runs
    findings = []
    for job, observe in _failing_jobs().items():
        query = (
            sa.select(runs.c.summary)
            .where(runs.c.job == job, runs.c.finished_at.is_not(None), runs.c.started_at <= now)
            .order_by(runs.c.started_at.desc(), runs.c.id.desc())
            .limit(max(needed * 4, 20))
        )
        with store.transaction(readonly=True) as conn:
            summaries = list(conn.execute(query).scalars())
        observations = [obs for obs in map(observe, summaries) if obs is not None]
        candidates = sorted({integration_id for obs in observations for integration_id in obs.failed})
        for integration_id in candidates:
            streak: list[tuple[str | None, str | None]] = []
            for obs in observations:
                if obs.covered is not None and integration_id not in obs.covered:
                    continue
                if integration_id not in obs.failed:
                    break
                streak.append(obs.failed[integration_id])
                if len(streak) >= needed:
                    break
            if len(streak) < needed:
                continue
            code, log_url = streak[0]
            findings.append(
                Finding(
                    subject=f"{job}:{integration_id}",
                    ref=integration_id,
                    line=(
                        f"integration {integration_id}: {job} failed {needed} run(s) in a row, last {code}"
                        + (f", log {log_url}" if log_url else "")
                    ),
                    group=job,
                )
            )
    return findings[: limit + 1]


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://")) and " " not in value


CONDITIONS: dict[str, Condition] = {
    DEAD_LETTER: dead_letters,
    ORDER_NOT_INVITED: orders_not_invited,
    INTEGRATION_FAILING: integrations_failing,
    QUARANTINED_ROW: quarantined_rows,
}
