"""`PollCoverage`: the only writer of `poll_coverage`, which bounds the work of intake backfills.

Kombo lists orders by ``created_after`` only, with no upper bound and no creation time on the orders, so a poll
of a past window reads every order created since. What a finished poll of one integration proves: every order
created in ``[created_after, started_at)`` that was OPEN when it ran is recorded. Such spans are kept per
integration (merged when they overlap), and a backfill run whose window lies inside one skips that integration:
a month-long backfill reads Kombo once, in its first run, instead of once per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kombo_sync.state.schema import poll_coverage
from kombo_sync.state.store import StateStore


@dataclass(frozen=True)
class Coverage:
    integration_id: str
    created_after: datetime
    covered_until: datetime

    def covers(self, start: datetime, end: datetime) -> bool:
        return self.created_after <= start and end <= self.covered_until


def merged(old: Coverage | None, new: Coverage) -> Coverage:
    """The span to keep after a poll covered ``new``: the union when the two touch, else the newer one."""
    if old is None:
        return new
    if new.created_after <= old.covered_until and old.created_after <= new.covered_until:
        return Coverage(
            new.integration_id,
            min(old.created_after, new.created_after),
            max(old.covered_until, new.covered_until),
        )
    return new if new.covered_until > old.covered_until else old


class PollCoverage:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def get_many(self, integration_ids: list[str]) -> dict[str, Coverage]:
        found: dict[str, Coverage] = {}
        column = poll_coverage.c
        with self.store.transaction(readonly=True) as conn:
            for start in range(0, len(integration_ids), 500):
                query = sa.select(column.integration_id, column.created_after, column.covered_until).where(
                    column.integration_id.in_(integration_ids[start : start + 500])
                )
                for row in conn.execute(query):
                    found[row.integration_id] = Coverage(
                        row.integration_id, row.created_after, row.covered_until
                    )
        return found

    def record(self, integration_id: str, created_after: datetime, covered_until: datetime) -> Coverage:
        """A poll of ``integration_id`` from ``created_after`` that started at ``covered_until`` finished.

        Two polls recording at once may keep either's union with the old span: both are true, so the worst case
        is a later backfill that polls again.
        """
        try:
            return self._record(integration_id, created_after, covered_until)
        except sa.exc.IntegrityError:  # another poll inserted the first span meanwhile: merge with it
            return self._record(integration_id, created_after, covered_until)

    def _record(self, integration_id: str, created_after: datetime, covered_until: datetime) -> Coverage:
        column = poll_coverage.c
        with self.store.transaction() as conn:
            row = conn.execute(
                sa.select(column.created_after, column.covered_until).where(
                    column.integration_id == integration_id
                )
            ).first()
            old = None if row is None else Coverage(integration_id, row.created_after, row.covered_until)
            span = merged(old, Coverage(integration_id, created_after, covered_until))
            values = {
                "created_after": span.created_after,
                "covered_until": span.covered_until,
                "updated_at": self.store.now(),
            }
            if old is None:
                conn.execute(sa.insert(poll_coverage).values(integration_id=integration_id, **values))
            elif span != old:
                conn.execute(
                    sa.update(poll_coverage).where(column.integration_id == integration_id).values(**values)
                )
        return span
