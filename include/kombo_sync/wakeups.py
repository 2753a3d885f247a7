"""Wake-up requests between the webhook (in the api-server) and Airflow's triggerer, through the state store.

`request_wakeup` bumps a per-topic counter; `consume_wakeups`, called by `kombo_sync.triggers.WakeupTrigger`,
moves the consumed mark up to it with a compare-and-set, so of two triggerers polling the same topic exactly one
consumes a given request. Many requests between two polls coalesce into one firing (one DAG run), which is what
an intake that processes every pending order wants. `WakeupBatcher` coalesces them before the database too: a
process that accepts 200 orders/s writes (or reads) its topic's counter a few times a second, not per order.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
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


class WakeupBatcher:
    """This process's wake-up requests, coalesced: `request(topic)` returns at once, and a background thread calls
    `write(topic)` (`request_wakeup`, through the SQLite write gate) at most once per topic per `window` seconds:
    the first request of a quiet period at once, the requests that follow within the window together at its end.

    Call `request` after the data the woken run must see is committed: every call is followed by a `write` that
    starts after it, so the guarantee of `request_wakeup` holds, at most `window` later (the triggerer polls every
    2 s). A failed write is retried a window later; a process that dies first leaves its orders to the poll.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        window: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError("the window must be positive (without one, call request_wakeup directly)")
        self.window = window
        self._write = write
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._last_write: dict[str, float] = {}
        self._pid: int | None = None
        self.writes = 0

    def request(self, topic: str) -> None:
        """Ask for `topic`'s watcher to fire (after the caller's commit); never blocks on the database."""
        with self._cond:
            if self._pid != os.getpid():
                self._start()
            self._pending.add(topic)
            self._cond.notify()

    def flush(self) -> None:
        """Write every pending request now, in the caller's thread (at exit, and for tests)."""
        with self._cond:
            topics = sorted(self._pending)
            self._pending.clear()
        for topic in topics:
            self._write_one(topic)

    def _start(self) -> None:
        # First request in this process (or in a forked child, which inherits no thread): start the writer.
        first = self._pid is None
        self._pid = os.getpid()
        self._pending.clear()
        self._last_write.clear()
        threading.Thread(target=self._run, name="kombo-wakeups", daemon=True).start()
        if first:
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                now = self._monotonic()
                due = {
                    topic: self._last_write.get(topic, float("-inf")) + self.window for topic in self._pending
                }
                ready = sorted(topic for topic, at in due.items() if at <= now)
                if not ready:
                    self._cond.wait(max(0.001, min(due.values()) - now))
                    continue
                for topic in ready:
                    self._pending.discard(topic)
                    self._last_write[topic] = now
            for topic in ready:
                self._write_one(topic)

    def _write_one(self, topic: str) -> None:
        try:
            self._write(topic)
            self.writes += 1
        except Exception as exc:  # the database is away: the requests stay pending, retried a window later
            log.error(
                "wake-up for %s not written (%s); retried in %.2f s", topic, type(exc).__name__, self.window
            )
            with self._cond:
                self._pending.add(topic)
                self._cond.notify()
