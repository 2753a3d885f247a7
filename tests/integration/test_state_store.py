"""StateStore on real SQLite and PostgreSQL: migrations, transactions, upserts, timestamps."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kombo_sync.state import store as store_module
from kombo_sync.state.schema import VERSION_TABLE, metadata, runs, webhook_events
from kombo_sync.state.store import (
    DEFAULT_POOL_SIZE,
    POOL_SIZE_ENV,
    StateStore,
    StateStoreError,
    head_revision,
    pool_size,
)

ROOT = Path(__file__).resolve().parents[2]


def _tables(store: StateStore) -> set[str]:
    with store.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_migrate_creates_every_table_and_twice_is_a_noop(state_db_url: str) -> None:
    store = StateStore(state_db_url)
    assert store.current_revision() is None
    assert store.migrate() == head_revision()
    assert _tables(store) == set(metadata.tables) | {VERSION_TABLE}
    with store.transaction() as conn:
        conn.execute(sa.insert(runs).values(job="intake", started_at=datetime.now(UTC), status="running"))
    assert store.migrate() == head_revision()
    with store.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 1
        assert conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1
    store.dispose()


def test_migration_matches_metadata(state_db_url: str) -> None:
    store = StateStore(state_db_url)
    store.migrate()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []
    store.dispose()


def test_first_transaction_migrates_a_fresh_database(state_db_url: str) -> None:
    store = StateStore(state_db_url)
    with store.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one() == 0
    assert store.current_revision() == head_revision()
    store.dispose()


def test_concurrent_migrations_from_several_processes(state_db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)])}
    command = [sys.executable, "-m", "kombo_sync.state", "migrate", "--url", state_db_url]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    current = subprocess.run(
        [sys.executable, "-m", "kombo_sync.state", "current", "--url", state_db_url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert current.stdout.strip() == head_revision()
    store = StateStore(state_db_url)
    with store.transaction() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1
    store.dispose()


def test_concurrent_migrations_from_several_engines(state_db_url: str) -> None:
    stores = [StateStore(state_db_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def migrate(store: StateStore) -> str:
        barrier.wait()
        return store.migrate()

    with ThreadPoolExecutor(len(stores)) as pool:
        revisions = list(pool.map(migrate, stores))
    assert revisions == [head_revision()] * len(stores)
    assert _tables(stores[0]) == set(metadata.tables) | {VERSION_TABLE}
    for store in stores:
        store.dispose()


def test_unknown_revision_is_refused(state_db_url: str) -> None:
    store = StateStore(state_db_url)
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'from_the_future'"))
    other = StateStore(state_db_url)  # a fresh process would not have the URL cached
    from kombo_sync.state import store as store_module

    store_module._migrated.clear()
    with pytest.raises(StateStoreError, match="from_the_future"):
        other.ensure_migrated()
    store.dispose()
    other.dispose()


def test_transaction_commits_and_rolls_back(state_store: StateStore) -> None:
    now = state_store.now()
    with pytest.raises(RuntimeError), state_store.transaction() as conn:
        conn.execute(sa.insert(runs).values(job="intake", started_at=now, status="running"))
        raise RuntimeError("boom")
    with state_store.transaction() as conn:
        conn.execute(sa.insert(runs).values(job="writeback", started_at=now, status="running"))
    with state_store.transaction(readonly=True) as conn:
        assert list(conn.execute(sa.select(runs.c.job)).scalars()) == ["writeback"]


def test_timestamps_are_utc_aware_and_naive_is_refused(state_store: StateStore) -> None:
    paris = timezone(timedelta(hours=1))
    started = datetime(2026, 3, 1, 10, 30, 15, 123456, tzinfo=paris)
    with state_store.transaction() as conn:
        conn.execute(sa.insert(runs).values(job="intake", started_at=started, status="running"))
    with state_store.transaction(readonly=True) as conn:
        stored = conn.execute(sa.select(runs.c.started_at)).scalar_one()
        assert stored == started
        assert stored.utcoffset() == timedelta(0)
        assert stored.hour == 9
        # Comparisons happen in UTC on both databases.
        assert conn.execute(
            sa.select(runs.c.id).where(runs.c.started_at < datetime(2026, 3, 1, 9, 31, tzinfo=UTC))
        ).first()
    with pytest.raises(sa.exc.StatementError, match="naive"), state_store.transaction() as conn:
        conn.execute(sa.insert(runs).values(job="intake", started_at=datetime(2026, 3, 1), status="running"))


def test_upsert_inserts_updates_or_ignores(state_store: StateStore) -> None:
    now = state_store.now()
    row = {"id": "ev1", "type": "a", "received_at": now, "response_status": None, "response_body": None}
    with state_store.transaction() as conn:
        assert state_store.upsert(conn, webhook_events, [row], ["id"], []) == 1
        assert state_store.upsert(conn, webhook_events, [{**row, "type": "b"}], ["id"], []) == 0
        state_store.upsert(
            conn, webhook_events, [{**row, "type": "c", "response_status": 200}], ["id"], ["type"]
        )
        state_store.upsert(
            conn, webhook_events, [row], ["id"], {"response_status": webhook_events.c.response_status + 1}
        )
        state_store.upsert(
            conn,
            webhook_events,
            [{**row, "id": f"ev{n}", "type": "many"} for n in range(2, 6)],
            ["id"],
            ["type"],
        )
    with state_store.transaction(readonly=True) as conn:
        first = conn.execute(sa.select(webhook_events).where(webhook_events.c.id == "ev1")).mappings().one()
        assert (first["type"], first["response_status"]) == ("c", None)
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one() == 5


def test_store_settings_per_dialect(state_store: StateStore) -> None:
    with state_store.engine.connect() as conn:
        if state_store.dialect == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            # A file on this machine: nothing to ping before every checkout (a round trip per transaction).
            assert state_store.engine.pool._pre_ping is False  # type: ignore[attr-defined]
        else:
            assert state_store.engine.url.drivername == "postgresql+psycopg"
            # Pinged only after sitting idle (test_idle_postgres_connection_*), not at every checkout.
            assert state_store.engine.pool._pre_ping is False  # type: ignore[attr-defined]
            assert state_store.engine.pool.size() == DEFAULT_POOL_SIZE  # type: ignore[attr-defined]


def test_pool_size_setting(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(POOL_SIZE_ENV, raising=False)
    assert pool_size() == (DEFAULT_POOL_SIZE, DEFAULT_POOL_SIZE)
    monkeypatch.setenv(POOL_SIZE_ENV, "3")
    assert pool_size() == (3, 3)
    monkeypatch.setenv(POOL_SIZE_ENV, "many")
    assert pool_size() == (DEFAULT_POOL_SIZE, DEFAULT_POOL_SIZE)
    assert f"{POOL_SIZE_ENV}='many' is not a whole number" in caplog.text


def _backend_pid(store: StateStore) -> int:
    with store.transaction() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(store: StateStore, pid: int) -> None:
    with store.transaction() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()


@pytest.mark.postgres
@pytest.mark.parametrize("state_store", ["postgres"], indirect=True)
def test_idle_postgres_connection_that_died_is_replaced_before_use(
    state_store: StateStore, make_state_store: Callable[[], StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closed a pooled connection while it sat idle (a restart, an idle timeout): the next
    transaction gets a live one and never sees the error."""
    other = make_state_store()
    pid = _backend_pid(state_store)
    _terminate(other, pid)
    monkeypatch.setattr(store_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _backend_pid(state_store) != pid


@pytest.mark.postgres
@pytest.mark.parametrize("state_store", ["postgres"], indirect=True)
def test_postgres_connection_in_steady_use_is_not_pinged(
    state_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    ping = state_store.engine.dialect.do_ping
    monkeypatch.setattr(state_store.engine.dialect, "do_ping", lambda conn: pings.append(conn) or ping(conn))
    for _ in range(20):
        _backend_pid(state_store)
    assert pings == []
    monkeypatch.setattr(store_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    pid = _backend_pid(state_store)
    assert len(pings) == 1
    # The ping's transaction was ended before the connection was handed out: no statement of the caller's
    # runs in a transaction opened at the ping.
    with state_store.engine.connect() as conn:
        status = conn.connection.driver_connection.info.transaction_status
    assert len(pings) == 2
    assert status == psycopg.pq.TransactionStatus.IDLE
    assert _backend_pid(state_store) == pid


def test_autocommit_read_takes_no_lock_and_joined_transaction_commits_once(state_store: StateStore) -> None:
    with state_store.engine.connect() as reader:
        reader = reader.execution_options(isolation_level="AUTOCOMMIT")
        assert reader.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 0
        # While the reader's connection is still checked out, a writer is not kept waiting (SQLite used to
        # BEGIN IMMEDIATE on it and hold the write lock until the connection went back to the pool).
        started = time.monotonic()
        with state_store.transaction() as conn:
            conn.execute(sa.delete(runs))
        assert time.monotonic() - started < 5
    # `transaction(conn=...)` joins the caller's transaction: nothing is committed until the caller's block ends.
    with state_store.transaction() as outer:
        with state_store.transaction(conn=outer) as inner:
            assert inner is outer
    with pytest.raises(RuntimeError), state_store.transaction() as outer:
        with state_store.transaction(conn=outer) as inner:
            inner.execute(
                sa.insert(webhook_events).values(id="joined", type="t", received_at=state_store.now())
            )
        raise RuntimeError("roll the whole thing back")
    with state_store.transaction(readonly=True) as conn:
        assert (
            conn.execute(sa.select(webhook_events.c.id).where(webhook_events.c.id == "joined")).first()
            is None
        )


def test_clock_must_be_aware(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}", clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        store.now()
    assert StateStore(f"sqlite:///{tmp_path / 's.db'}").now().tzinfo is not None


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(StateStoreError, match="mysql"):
        StateStore("mysql+pymysql://user@localhost/db")


def _hold_write_lock(path: Path, seconds: float, held: threading.Event, released: list[float]) -> None:
    """Another writer (its own sqlite3 connection, as another process would have): the write lock for `seconds`;
    `released` gets the moment it let go."""
    import sqlite3

    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        released.append(time.monotonic())
    finally:
        other.close()


def _hold_in_thread(path: Path, seconds: float) -> tuple[threading.Thread, list[float]]:
    held, released = threading.Event(), list[float]()
    holder = threading.Thread(target=_hold_write_lock, args=(path, seconds, held, released))
    holder.start()
    assert held.wait(5)
    return holder, released


def test_sqlite_writer_gets_the_lock_within_milliseconds_of_its_release(tmp_path: Path) -> None:
    """SQLite's own busy handler sleeps 50, 50, then 100 ms between its later tries, so a writer waiting for a 250
    ms transaction would take the lock up to 78 ms after it was freed; BEGIN IMMEDIATE polls every 1-2 ms."""
    path = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{path}")
    store.migrate()
    holder, released = _hold_in_thread(path, 0.25)
    with store.transaction() as conn:
        acquired = time.monotonic()
        conn.execute(sa.insert(runs).values(job="intake", started_at=datetime.now(UTC), status="running"))
    holder.join()
    assert acquired - released[0] < 0.05, acquired - released[0]
    with store.engine.connect() as conn:  # the connection's busy timeout is back for its later statements
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
    store.dispose()


def test_sqlite_writer_still_gives_up_after_the_busy_timeout(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kombo_sync.state import store as store_module

    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.3)
    path = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{path}")
    store.migrate()
    holder, _ = _hold_in_thread(path, 1.0)
    started = time.monotonic()
    # As before the change, SQLAlchemy's OperationalError: the webhook answers it with a 503.
    with pytest.raises(sa.exc.OperationalError, match="database is locked"), store.transaction():
        pass
    assert 0.25 <= time.monotonic() - started < 0.9
    holder.join()
    store.dispose()


def test_migration_0013_swaps_the_duplicate_indexes_and_goes_back(state_db_url: str) -> None:
    from alembic import command

    from kombo_sync.state.migrations import alembic_config

    def indexes(conn: sa.Connection) -> set[str]:
        return {index["name"] for index in sa.inspect(conn).get_indexes("orders")}

    engine = sa.create_engine(state_db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0013_duplicate_lookup_indexes")
        with engine.connect() as conn:
            now = indexes(conn)
        # SQLAlchemy's SQLite and PostgreSQL inspectors skip expression indexes (with a warning): the hash one shows.
        assert "ix_orders_candidate_email_hash" in now and "ix_orders_application_remote_id" in now
        assert not now & {"ix_orders_duplicate_application", "ix_orders_duplicate_email_hash"}
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0012_rate_budgets")
        with engine.connect() as conn:
            before = indexes(conn)
        assert {"ix_orders_duplicate_application", "ix_orders_duplicate_email_hash"} <= before
        assert "ix_orders_candidate_email_hash" not in before
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()
