"""Group commit for SQLite: the short write transactions of several threads committed as one.

SQLite has one writer at a time, and each commit syncs the write-ahead log to disk (1-25 ms on a shared disk).
One transaction per webhook makes that sync the limit: at 200 orders a second, beside an intake that writes
too, the webhooks queue behind each other's syncs. PostgreSQL syncs the commits of concurrent transactions
together by itself; this does the same for SQLite within a process.

`GroupCommit.run(work)` queues `work` (a function of a connection inside a transaction). One of the waiting
threads leads: it takes what is queued (at most `MAX_BATCH`), runs each piece of work in its own SAVEPOINT of one
`BEGIN IMMEDIATE` transaction, through the process's write gate, and commits once. Each caller gets its own
work's result or exception, only after that commit: a piece of work that raises is rolled back to its savepoint
and the others are kept; a commit that fails (nothing was written) is every caller's exception. A lone caller is
a batch of one, run without a savepoint: under light load nothing changes.

The work runs in the leading thread, so it must not depend on its thread (thread-locals) and must write only
through the connection it is given.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from kombo_sync.state.store import StateStore

T = TypeVar("T")

# Pieces of work per transaction. The webhook's handler threads (8 per api-server worker) bound a batch anyway;
# this keeps a commit's write lock short for the other processes (each piece is about a millisecond).
MAX_BATCH = 16


class _Work(Generic[T]):
    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        self.fn = fn
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class GroupCommit:
    """Commits the write transactions of this process's threads on one SQLite store together (module docstring).
    One per store URL: `group_commit(store)`."""

    def __init__(self, store: StateStore, gate: Any) -> None:
        # Weak: the store owns its committer (`group_commit`), not the other way round.
        self._store = weakref.ref(store)
        self._gate = gate
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Work[Any]] = []
        self._leading = False
        # Counters for tests and benchmarks: transactions committed (or failed) and pieces of work in them.
        self.transactions = 0
        self.pieces = 0

    def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` inside a write transaction; returns its result (or raises its exception) once committed."""
        work: _Work[T] = _Work(fn)
        with self._cond:
            self._queue.append(work)
        while True:
            with self._cond:
                while not work.done and self._leading:
                    self._cond.wait()
                if work.done:
                    break
                self._leading = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        return work.outcome()

    def _commit(self, batch: list[_Work[Any]]) -> None:
        store = self._store()
        try:
            if store is None:
                raise RuntimeError("the state store of this group commit is gone")
            with self._gate, store.transaction() as conn:
                if len(batch) == 1:
                    batch[0].value = batch[0].fn(conn)
                else:
                    for work in batch:
                        try:
                            with conn.begin_nested():
                                work.value = work.fn(conn)
                        except Exception as exc:  # the caller's own exception, raised in its thread
                            work.error = exc
                            work.value = None
        except BaseException as exc:
            # BEGIN or COMMIT failed (or a lone piece of work raised): nothing of this batch was written.
            for work in batch:
                if work.error is None:
                    work.error = exc
                work.value = None
        finally:
            self.transactions += 1
            self.pieces += len(batch)
            for work in batch:
                work.done = True


_committers: weakref.WeakKeyDictionary[StateStore, GroupCommit] = weakref.WeakKeyDictionary()
_committers_lock = threading.Lock()


def group_commit(store: StateStore) -> GroupCommit:
    """The `GroupCommit` of a SQLite store (one per `StateStore`; stores of the same file in one process share
    the write gate, so their batches take turns)."""
    if store.dialect != "sqlite":
        raise ValueError("group commit is for SQLite; PostgreSQL commits concurrent transactions in parallel")
    from kombo_sync.intake.claims import write_gate

    with _committers_lock:
        committer = _committers.get(store)
        if committer is None:
            committer = _committers[store] = GroupCommit(store, write_gate(store))
        return committer
