"""SQLite group commit (`kombo_sync.state.group_commit`): the write transactions of several threads committed as
one, each caller seeing only its own result or exception, and only after the commit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from kombo_sync.intake.claims import write_gate
from kombo_sync.state.group_commit import GroupCommit, group_commit
from kombo_sync.state.store import StateStore

PROBE = sa.table("probe", sa.column("name"))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    with store.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE probe (name TEXT PRIMARY KEY)")
    yield store
    store.dispose()


def _insert(event_id: str):
    def work(conn: sa.Connection) -> str:
        conn.execute(PROBE.insert().values(name=event_id))
        return event_id

    return work


def _stored(store: StateStore) -> set[str]:
    with store.transaction(readonly=True) as conn:
        return set(conn.execute(sa.select(PROBE.c.name)).scalars())


def test_a_lone_caller_is_one_transaction_of_its_own(store):
    committer = group_commit(store)
    assert committer is group_commit(store)
    assert committer.run(_insert("one")) == "one"
    assert (committer.transactions, committer.pieces) == (1, 1)
    assert _stored(store) == {"one"}


def test_waiting_callers_are_committed_together_and_each_gets_its_own_answer(store):
    committer = GroupCommit(store, write_gate(store))
    # Hold the process's write gate, as a running transaction would, while eight threads queue their work.
    gate = write_gate(store)
    gate.acquire()
    callers = 8

    def failing(conn: sa.Connection) -> str:
        conn.execute(PROBE.insert().values(name="lost"))
        raise ValueError("this caller's own fault")

    works = [_insert(f"e{index}") for index in range(callers)]
    works[3] = failing

    def call(work):
        try:
            return committer.run(work)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(call, work) for work in works]
        # Every caller is queued, or leading and waiting at the gate we hold, before the gate opens.
        _wait_until_queued(committer, callers - 1)
        gate.release()
        answers = [future.result(timeout=30) for future in futures]
    assert isinstance(answers[3], ValueError) and str(answers[3]) == "this caller's own fault"
    assert [answer for index, answer in enumerate(answers) if index != 3] == [
        f"e{index}" for index in range(callers) if index != 3
    ]
    # The failing caller's insert was rolled back to its savepoint; the others' were kept.
    assert _stored(store) == {f"e{index}" for index in range(callers) if index != 3}
    # The first leader took what had queued when it started (itself, perhaps more); the rest shared one commit.
    assert committer.pieces == callers and committer.transactions <= 2


class CommitFails:
    """The real database, but every transaction's COMMIT fails (a disk error): nothing of it is written."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @contextmanager
    def transaction(self):
        with self.store.engine.connect() as conn:
            conn.begin()
            yield conn
            conn.rollback()
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))


def _wait_until_queued(committer: GroupCommit, count: int) -> None:
    for _ in range(500):
        with committer._cond:
            if len(committer._queue) >= count:
                return
        time.sleep(0.01)
    raise AssertionError(f"{count} callers did not queue behind the gate")


def test_a_failed_commit_is_every_callers_exception_and_nothing_is_written(store):
    failing_store = CommitFails(store)
    gate = write_gate(store)
    committer = GroupCommit(failing_store, gate)  # type: ignore[arg-type]
    gate.acquire()

    def call(name):
        try:
            return committer.run(_insert(name))
        except sa.exc.OperationalError as exc:
            return exc

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(call, name) for name in ("a", "b", "c")]
        # One leads (waiting at the gate we hold) with whatever had queued; the others queue behind it.
        _wait_until_queued(committer, 2)
        gate.release()
        answers = [future.result(timeout=30) for future in futures]
    assert all(
        isinstance(answer, sa.exc.OperationalError) and "disk I/O error" in str(answer) for answer in answers
    ), answers
    assert _stored(store) == set()
    assert committer.pieces == 3
