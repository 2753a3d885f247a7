"""Wake-up requests between the webhook (in the api-server) and Airflow's triggerer, through the state store.

`request_wakeup` bumps a per-topic counter; `consume_wakeups`, called by `kombo_sync.triggers.WakeupTrigger`,
moves the consumed mark up to it with a compare-and-set, so of two triggerers polling the same topic exactly one
consumes a given request. Many requests between two polls coalesce into one firing (one DAG run), which is what
an intake that processes every pending order wants.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kombo_sync.state.schema import wakeups

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)


def request_wakeup(store: StateStore, topic: str, *, conn: Connection | None = None) -> bool:
    """Ask the watcher of `topic` to fire; True if a new request was written, False if one was pending.

    Call it after the data the woken DAG must see is committed. Without `conn`, a pending request is detected
    by a read and not written again, which keeps 200 webhooks/s from queueing on one hot row.
    """
    if conn is not None:
        _bump(store, conn, topic)
        return True
    row = _read_counters(store, topic)
    # A pending request will be consumed after our data was committed, so the woken run sees it.
    if row is not None and row.requested > row.consumed:
        return False
    with store.transaction() as write:
        _bump(store, write, topic)
    return True


def request_wakeup_in_transaction(store: StateStore, conn: Connection, topic: str) -> bool:
    """`request_wakeup` inside the caller's SQLite write transaction, coalesced like the one without `conn`:
    True if a request was written, False if one was pending already.

    Safe on SQLite only: the caller holds the database's write lock (`BEGIN IMMEDIATE`), which a consumer's
    compare-and-set needs too, so a request seen pending here is consumed after the caller's commit and the
    woken run sees its data. On PostgreSQL a consumer can commit meanwhile: there call `request_wakeup` after
    the commit (ValueError here).
    """
    if store.dialect != "sqlite":
        raise ValueError("request_wakeup_in_transaction is for SQLite; call request_wakeup after the commit")
    row = conn.execute(
        sa.select(wakeups.c.requested, wakeups.c.consumed).where(wakeups.c.topic == topic)
    ).first()
    if row is not None and row.requested > row.consumed:
        return False
    _bump(store, conn, topic)
    return True


def _bump(store: StateStore, conn: Connection, topic: str) -> None:
    now = store.now()
    store.upsert(
        conn,
        wakeups,
        [{"topic": topic, "requested": 1, "consumed": 0, "requested_at": now}],
        ["topic"],
        {"requested": wakeups.c.requested + 1, "requested_at": now},
    )


def consume_wakeups(store: StateStore, topic: str) -> int:
    """Consume every pending request of `topic`; returns how many (0 when none, or another consumer won)."""
    row = _read_counters(store, topic)
    if row is None or row.requested <= row.consumed:
        return 0
    with store.transaction() as write:
        result = write.execute(
            sa.update(wakeups)
            .where(wakeups.c.topic == topic, wakeups.c.consumed == row.consumed)
            .values(consumed=row.requested, consumed_at=store.now())
        )
    if result.rowcount != 1:
        log.debug("wake-up for %s consumed by another triggerer", topic)
        return 0
    return int(row.requested - row.consumed)


def pending_wakeups(store: StateStore, topic: str) -> int:
    """Requests for `topic` not consumed yet (for tests and monitoring)."""
    row = _read_counters(store, topic)
    return 0 if row is None else max(int(row.requested - row.consumed), 0)


def _read_counters(store: StateStore, topic: str) -> Any:
    # One statement, no transaction needed: autocommit saves the BEGIN and COMMIT round trips on every webhook
    # and every triggerer poll.
    store.ensure_migrated()
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn.execute(
            sa.select(wakeups.c.requested, wakeups.c.consumed).where(wakeups.c.topic == topic)
        ).first()
