"""`AlertLedger`: the only writer of `alerts_sent`, the memory that keeps an alert from being sent every run.

A subject is claimed before its alert is sent (an atomic upsert that only wins when the subject is new or its
repeat interval has passed), so two checks running at once do not both send it; when no channel took the
alert, the claim is given back and the next check tries again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from kombo_sync.state._util import chunked
from kombo_sync.state.schema import alerts_sent
from kombo_sync.state.store import StateStore

_row = alerts_sent.c
# Keeps a multi-row VALUES well under SQLite's bound-parameter limit (5 columns per row).
CLAIM_CHUNK = 400


@dataclass(frozen=True)
class Claim:
    """Subjects this check won: `new` were never alerted, `repeated` were, longer ago than the interval."""

    kind: str
    new: tuple[str, ...]
    repeated: tuple[str, ...]
    at: datetime

    @property
    def subjects(self) -> tuple[str, ...]:
        return self.new + self.repeated

    def __bool__(self) -> bool:
        return bool(self.new or self.repeated)


class AlertLedger:
    """Which alerts were sent, when, and how often."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def claim(self, kind: str, subjects: Iterable[str], *, now: datetime, repeat: timedelta | None) -> Claim:
        """Record `subjects` as alerted now, except those alerted within `repeat` (None: ever)."""
        wanted = list(dict.fromkeys(subjects))
        new: list[str] = []
        repeated: list[str] = []
        insert = pg_dialect.insert if self.store.dialect == "postgresql" else sqlite_dialect.insert
        with self.store.transaction() as conn:
            for batch in chunked(wanted, CLAIM_CHUNK):
                stmt = insert(alerts_sent).values(
                    [
                        {"kind": kind, "subject": subject, "first_sent_at": now, "last_sent_at": now}
                        for subject in batch
                    ]
                )
                if repeat is None:
                    upsert = stmt.on_conflict_do_nothing(index_elements=["kind", "subject"])
                else:
                    upsert = stmt.on_conflict_do_update(
                        index_elements=["kind", "subject"],
                        set_={"last_sent_at": now, "times_sent": _row.times_sent + 1},
                        where=_row.last_sent_at <= now - repeat,
                    )
                for subject, times_sent in conn.execute(upsert.returning(_row.subject, _row.times_sent)):
                    (new if times_sent == 1 else repeated).append(subject)
        order = {subject: index for index, subject in enumerate(wanted)}
        new.sort(key=order.__getitem__)
        repeated.sort(key=order.__getitem__)
        return Claim(kind, tuple(new), tuple(repeated), now)

    def release(self, claim: Claim) -> None:
        """Give a claim back (no channel took the alert): new subjects are forgotten, repeated ones are due."""
        with self.store.transaction() as conn:
            for batch in chunked(claim.new):
                conn.execute(
                    sa.delete(alerts_sent).where(
                        _row.kind == claim.kind, _row.subject.in_(batch), _row.first_sent_at == claim.at
                    )
                )
            for batch in chunked(claim.repeated):
                conn.execute(
                    sa.update(alerts_sent)
                    .where(_row.kind == claim.kind, _row.subject.in_(batch), _row.last_sent_at == claim.at)
                    .values(last_sent_at=_row.first_sent_at, times_sent=_row.times_sent - 1)
                )

    def clear_except(self, kind: str, current: Iterable[str]) -> int:
        """Forget alerted subjects of `kind` whose condition no longer holds, so a comeback is new again."""
        keep = set(current)
        with self.store.transaction() as conn:
            known = conn.execute(sa.select(_row.subject).where(_row.kind == kind)).scalars().all()
            gone = [subject for subject in known if subject not in keep]
            cleared = 0
            for batch in chunked(gone):
                cleared += conn.execute(
                    sa.delete(alerts_sent).where(_row.kind == kind, _row.subject.in_(batch))
                ).rowcount
        return cleared

    def forget_older_than(self, kind: str, before: datetime) -> int:
        """Drop entries last sent before `before` (one-off events such as failed runs)."""
        with self.store.transaction() as conn:
            return conn.execute(
                sa.delete(alerts_sent).where(_row.kind == kind, _row.last_sent_at < before)
            ).rowcount

    def sent(self, kind: str) -> dict[str, int]:
        """Subject -> times sent, for one kind (tests, the console)."""
        with self.store.transaction(readonly=True) as conn:
            return {
                subject: times
                for subject, times in conn.execute(
                    sa.select(_row.subject, _row.times_sent).where(_row.kind == kind)
                )
            }
