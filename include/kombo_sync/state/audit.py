"""`RunAudit` and `Quarantine`: the only writers of `runs` and `quarantine`.

`runs` says what each job run did (status and a JSON summary of counts); `quarantine` keeps rows a job could not
use, with the reason, so a bad row never fails a batch and is never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kombo_sync.state._util import clip, from_row, to_jsonable
from kombo_sync.state.schema import quarantine, runs
from kombo_sync.state.store import StateStore
from kombo_sync.storable import storable_text

log = logging.getLogger(__name__)

RUNNING = "running"


@dataclass(frozen=True)
class RunRecord:
    id: int
    job: str
    run_id: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: Any


@dataclass(frozen=True)
class QuarantinedRow:
    id: int
    job: str
    source_key: str | None
    reason: str
    # The row may hold candidate data: kept in the database, out of reprs and logs.
    row_json: Any = field(repr=False)
    run_id: str | None
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None = None


class RunAudit:
    """One row per job run: started, then finished with a status and a summary."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def start(self, job: str, run_id: str | None) -> int:
        """Record that a run started; returns its audit id."""
        with self.store.transaction() as conn:
            audit_id = conn.execute(
                sa.insert(runs)
                .values(job=job, run_id=run_id, started_at=self.store.now(), status=RUNNING)
                .returning(runs.c.id)
            ).scalar_one()
        return int(audit_id)

    def finish(self, audit_id: int, status: str, summary: Mapping[str, Any] | None = None) -> bool:
        """Record how the run ended; False if the id is unknown."""
        with self.store.transaction() as conn:
            finished = conn.execute(
                sa.update(runs)
                .where(runs.c.id == audit_id)
                .values(
                    status=status,
                    finished_at=self.store.now(),
                    summary=None if summary is None else to_jsonable(dict(summary)),
                )
            ).rowcount
        return bool(finished)

    def get(self, audit_id: int) -> RunRecord | None:
        """One run, or None."""
        with self.store.transaction(readonly=True) as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == audit_id)).mappings().first()
        return None if row is None else from_row(RunRecord, row)

    def recent(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(runs.c.job == job)
        with self.store.transaction(readonly=True) as conn:
            return [from_row(RunRecord, row) for row in conn.execute(query).mappings()]


class Quarantine:
    """Rows a job could not use, with the reason, until someone resolves them."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def add(
        self, job: str, source_key: str | None, reason: str, row: Any = None, run_id: str | None = None
    ) -> int:
        """Quarantine one row; returns its id. Logs the job and key only."""
        with self.store.transaction() as conn:
            quarantine_id = conn.execute(
                sa.insert(quarantine)
                .values(
                    job=job,
                    # The key and reason may quote a hostile value (NUL, lone surrogates): stored spelled out.
                    source_key=None if source_key is None else storable_text(source_key),
                    reason=clip(storable_text(reason)),
                    row_json=to_jsonable(row),
                    run_id=run_id,
                    created_at=self.store.now(),
                )
                .returning(quarantine.c.id)
            ).scalar_one()
        # The reason may quote the bad value (e.g. a validation error on an e-mail): it stays in the table.
        log.warning("%s: row %s quarantined (quarantine id %s)", job, source_key, quarantine_id)
        return int(quarantine_id)

    def list_open(self, job: str | None = None) -> list[QuarantinedRow]:
        """Unresolved rows, oldest first."""
        query = sa.select(quarantine).where(quarantine.c.resolved_at.is_(None)).order_by(quarantine.c.id)
        if job is not None:
            query = query.where(quarantine.c.job == job)
        with self.store.transaction(readonly=True) as conn:
            return [from_row(QuarantinedRow, row) for row in conn.execute(query).mappings()]

    def resolve(self, ids: Iterable[int], resolution: str | None = None) -> int:
        """Mark rows resolved (fixed at the source, or accepted, or discarded: `resolution` says why);
        returns how many."""
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        with self.store.transaction() as conn:
            return conn.execute(
                sa.update(quarantine)
                .where(quarantine.c.id.in_(wanted), quarantine.c.resolved_at.is_(None))
                .values(resolved_at=self.store.now(), resolution=clip(resolution))
            ).rowcount
