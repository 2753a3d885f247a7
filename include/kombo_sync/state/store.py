"""`StateStore`: the engine, migrations, transactions and dialect-aware upserts of the pipeline's own database.

The store is never Airflow's metadata DB. Its URL comes from `resolve_state_url()`: the Airflow connection
`kombo_state` (only looked up when running inside Airflow), then `KOMBO_STATE_DB_URL`, then a SQLite file under
`$KOMBO_SYNC_HOME` (default `<project>/.local/state.db`).

SQLite runs in WAL mode and every write transaction starts with `BEGIN IMMEDIATE`, so writers queue on the
database lock (busy timeout 30 s) instead of failing half-way; PostgreSQL uses the default READ COMMITTED and
row locks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from kombo_sync.connections import get_connection, normalize_url, sqlalchemy_url

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

STATE_CONNECTION_ID = "kombo_state"
URL_ENV = "KOMBO_STATE_DB_URL"
HOME_ENV = "KOMBO_SYNC_HOME"
# include/kombo_sync/state/store.py -> the project root (also the Astro image's /usr/local/airflow).
PROJECT_ROOT = Path(__file__).resolve().parents[3]
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# pg_advisory_xact_lock key for migrations: first 8 bytes of sha256("kombo_sync.state.migrate"), signed.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"kombo_sync.state.migrate").digest()[:8], "big", signed=True
)

_SQLITE_BEGIN_OPTION = "kombo_sqlite_begin"


class StateStoreError(RuntimeError):
    """The state store cannot be used as configured (unknown revision, unsupported database)."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def mask_url(url: str) -> str:
    """The URL with its password hidden, for logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable url>"


def default_sqlite_url() -> str:
    """`sqlite:///$KOMBO_SYNC_HOME/state.db` (default `<project>/.local`), creating the folder."""
    home = Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".local").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'state.db').resolve()}"


def _running_in_airflow(conn_id: str) -> bool:
    # Only look the connection up where Airflow can answer it: a task (supervisor comms), an Airflow
    # server/client process, or an explicit AIRFLOW_CONN_ variable. Elsewhere (CLI, tests, the sandbox) Airflow
    # may be installed without a metadata DB or a task context, and the lookup is skipped.
    if os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"):
        return True
    if os.environ.get("_AIRFLOW_PROCESS_CONTEXT"):
        return True
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def _url_from_airflow_connection(conn_id: str) -> str | None:
    if not _running_in_airflow(conn_id):
        return None
    try:
        conn = get_connection(conn_id)
    except Exception as exc:
        # No reachable backend (e.g. no metadata DB in this process): fall back, but say so.
        log.warning("could not read Airflow connection %s (%s); falling back", conn_id, type(exc).__name__)
        return None
    if conn is None:
        log.debug("Airflow connection %s not defined (or Airflow not installed)", conn_id)
        return None
    return normalize_url(sqlalchemy_url(conn))


def resolve_state_url(conn_id: str = STATE_CONNECTION_ID) -> str:
    """The state store URL: Airflow connection `conn_id` (inside Airflow only), then `KOMBO_STATE_DB_URL`,
    then `sqlite:///$KOMBO_SYNC_HOME/state.db`."""
    url = _url_from_airflow_connection(conn_id)
    if url:
        _announce(f"state store from Airflow connection {conn_id}: {mask_url(url)}")
        return url
    env_url = os.environ.get(URL_ENV, "").strip()
    if env_url:
        url = normalize_url(env_url)
        _announce(f"state store from {URL_ENV}: {mask_url(url)}")
        return url
    url = default_sqlite_url()
    _announce(f"state store is the embedded SQLite file {url}")
    return url


class _ContextLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


@contextmanager
def _without_context_lines() -> Iterator[None]:
    """Reading the revision (every task does) makes Alembic log two context lines; they say nothing there."""
    logger, quiet = logging.getLogger("alembic.runtime.migration"), _ContextLines()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


_announced: set[str] = set()


def _announce(line: str) -> None:
    """Where the state store is, logged once per process (long-lived processes look it up often)."""
    if line in _announced:
        log.debug("%s", line)
        return
    _announced.add(line)
    log.info("%s", line)


# (pid, url) pairs already at head in this process; migrations are checked once per process and URL.
_migrated: set[tuple[int, str]] = set()
_migrated_lock = threading.Lock()
_head_revision: str | None = None


def head_revision() -> str:
    """The newest revision this code ships."""
    global _head_revision
    if _head_revision is None:
        from alembic.script import ScriptDirectory

        from kombo_sync.state.migrations import alembic_config

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        if head is None:
            raise StateStoreError("the state store ships no migration")
        _head_revision = head
    return _head_revision


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from kombo_sync.state.migrations import alembic_config

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


class StateStore:
    """The pipeline's own database: lazy engine, `migrate()`, `transaction()`, dialect-aware `upsert()`.

    Repository methods open their own transactions unless given `conn=`: on SQLite, do not call them without
    `conn` while holding a write `transaction()` in the same thread (the second writer would wait for the first
    until the busy timeout); pass the held connection instead.
    """

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = normalize_url(url)
        self._url = make_url(self.url)
        if self.dialect not in ("sqlite", "postgresql"):
            raise StateStoreError(f"unsupported state database {self.dialect!r}; use SQLite or PostgreSQL")
        self._clock = clock or utcnow
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._engine_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StateStore({mask_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._url.get_backend_name()

    def now(self) -> datetime:
        """The store's clock (injectable for tests), timezone-aware UTC."""
        value = self._clock()
        if value.tzinfo is None:
            raise ValueError("the state store clock returned a naive datetime")
        return value.astimezone(UTC)

    @property
    def engine(self) -> Engine:
        """The engine, created on first use (and again in a forked child, whose inherited pool is unusable)."""
        with self._engine_lock:
            if self._engine is not None and self._engine_pid != os.getpid():
                self._engine.dispose(close=False)
                self._engine = None
            if self._engine is None:
                self._engine = self._create_engine()
                self._engine_pid = os.getpid()
            return self._engine

    def dispose(self) -> None:
        """Close pooled connections (the engine is re-created on next use)."""
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _is_memory_sqlite(self) -> bool:
        return self.dialect == "sqlite" and self._url.database in (None, "", ":memory:")

    def _create_engine(self, *, foreign_keys: bool = True, pooled: bool = True) -> Engine:
        if self.dialect == "postgresql":
            if not pooled:
                return sa.create_engine(self._url, poolclass=sa.pool.NullPool)
            size, overflow = pool_size()
            engine = sa.create_engine(self._url, pool_size=size, max_overflow=overflow)
            _install_idle_ping(engine)
            return engine
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        if self._is_memory_sqlite():
            # One shared connection, or every checkout would see its own empty database.
            engine = sa.create_engine(self._url, connect_args=connect_args, poolclass=StaticPool)
        else:
            Path(self._url.database or "").expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            pool_kwargs: dict[str, Any] = {} if pooled else {"poolclass": sa.pool.NullPool}
            engine = sa.create_engine(self._url, connect_args=connect_args, **pool_kwargs)
        _install_sqlite_hooks(engine, foreign_keys=foreign_keys)
        return engine

    @contextmanager
    def transaction(self, *, readonly: bool = False, conn: Connection | None = None) -> Iterator[Connection]:
        """A connection inside one transaction, committed on exit; SQLite write transactions `BEGIN IMMEDIATE`.

        With `conn` (a connection inside the caller's transaction) nothing is opened: the block runs in that
        transaction, and the caller commits or rolls back. Repositories take such a `conn` so that a caller can
        do several steps in one transaction."""
        if conn is not None:
            yield conn
            return
        self.ensure_migrated()
        with self.engine.connect() as conn:
            if readonly:
                conn = conn.execution_options(**{_SQLITE_BEGIN_OPTION: "DEFERRED"})
            with conn.begin():
                yield conn

    def current_revision(self) -> str | None:
        """The revision the database is at (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        from kombo_sync.state.schema import VERSION_TABLE

        with self.engine.connect() as conn, _without_context_lines():
            conn = conn.execution_options(**{_SQLITE_BEGIN_OPTION: "DEFERRED"})
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()

    def migrate(self) -> str:
        """Upgrade to head; safe to run from several processes at once. Returns the revision."""
        from alembic import command

        from kombo_sync.state.migrations import alembic_config

        log.info("migrating state store %s to %s", mask_url(self.url), head_revision())
        if self._is_memory_sqlite():
            engine = self.engine
        else:
            # Own engine: SQLite must run batch migrations with foreign keys off (PRAGMA is per connection
            # and ignored inside a transaction), and a one-off connection should not stay pooled.
            engine = self._create_engine(foreign_keys=False, pooled=False)
        try:
            with engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Serialises concurrent migrators; released at commit. SQLite: BEGIN IMMEDIATE does it.
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                command.upgrade(alembic_config(conn), "head")
                if self.dialect == "sqlite":
                    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise StateStoreError(f"migration left {len(problems)} foreign key violations")
        finally:
            if engine is not self._engine:
                engine.dispose()
        with _migrated_lock:
            _migrated.add((os.getpid(), self.url))
        revision = self.current_revision()
        log.info("state store %s is at revision %s", mask_url(self.url), revision)
        return revision or ""

    def ensure_migrated(self) -> None:
        """Migrate to head unless this process already saw this URL at head."""
        key = (os.getpid(), self.url)
        if key in _migrated:
            return
        current = self.current_revision()
        if current == head_revision():
            with _migrated_lock:
                _migrated.add(key)
            return
        if current is not None and current not in _known_revisions():
            raise StateStoreError(
                f"state database is at revision {current!r}, which this code does not know: deploy newer code"
            )
        self.migrate()

    def upsert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Iterable[Mapping[str, Any]],
        key_columns: Sequence[str],
        update_columns: Sequence[str] | Mapping[str, Any],
        *,
        where: sa.ColumnElement[bool] | None = None,
    ) -> int:
        """`INSERT ... ON CONFLICT (key_columns)`: update `update_columns` (names take the new row's value,
        a mapping gives values or SQL expressions), or do nothing when empty. Returns the driver's rowcount
        (exact for a single row)."""
        batch = [dict(row) for row in rows]
        if not batch:
            return 0
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        stmt = insert(table)
        if update_columns:
            if isinstance(update_columns, Mapping):
                set_ = dict(update_columns)
            else:
                set_ = {name: stmt.excluded[name] for name in update_columns}
            upsert_stmt = stmt.on_conflict_do_update(index_elements=list(key_columns), set_=set_, where=where)
        else:
            upsert_stmt = stmt.on_conflict_do_nothing(index_elements=list(key_columns))
        # Without preserve_rowcount SQLAlchemy does not keep an INSERT's rowcount (psycopg then reports 0).
        upsert_stmt = upsert_stmt.execution_options(preserve_rowcount=True)
        result = conn.execute(upsert_stmt, batch[0] if len(batch) == 1 else batch)
        return max(result.rowcount, 0)


def _enable_wal(cursor: Any) -> None:
    # WAL is a property of the file and survives reconnects. Switching needs an exclusive lock, and SQLite
    # answers "database is locked" at once (no busy handler) while another connection is switching too.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() in ("wal", "memory"):
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


POOL_SIZE_ENV = "KOMBO_STATE_POOL_SIZE"
DEFAULT_POOL_SIZE = 12
# A pooled connection unused for longer than this is pinged before it is handed out (see `_install_idle_ping`).
PING_AFTER_IDLE_SECONDS = 5.0


def pool_size() -> tuple[int, int]:
    """PostgreSQL connections a process keeps open, and how many more it may open at a peak (closed again when
    returned): `KOMBO_STATE_POOL_SIZE` (default 12: the api-server's 8 webhook threads, its wake-up writer and
    the console, each holding a connection at once), and as many again for peaks. A pool smaller than the
    threads that use it at once closes a connection and opens a new one for most transactions."""
    raw = os.environ.get(POOL_SIZE_ENV, "").strip()
    try:
        size = int(raw) if raw else DEFAULT_POOL_SIZE
    except ValueError:
        log.error("%s=%r is not a whole number; using %d", POOL_SIZE_ENV, raw[:20], DEFAULT_POOL_SIZE)
        size = DEFAULT_POOL_SIZE
    size = max(1, min(size, 200))
    return size, size


def _install_idle_ping(engine: Engine) -> None:
    """Ping a pooled PostgreSQL connection before use only when it sat unused for `PING_AFTER_IDLE_SECONDS`.

    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip on every transaction, an eighth of a
    webhook's. A connection in steady use is not pinged; one that waited (the server may have restarted or
    closed it meanwhile) is, and a dead one is replaced before anybody uses it. A connection that breaks in use
    fails that transaction; the pool then drops every connection opened before the break."""

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["kombo_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("kombo_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            # SQLAlchemy's ping for psycopg: SELECT 1 in autocommit, so no transaction is left open.
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if not engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            # The pool discards this connection and checks out another (SQLAlchemy's documented recipe).
            raise sa.exc.DisconnectionError("idle state-store connection is gone") from exc


def _install_sqlite_hooks(engine: Engine, *, foreign_keys: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module so that SQLAlchemy's begin emits ours (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            _enable_wal(cursor)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction (claims, upserts) can then
        # never fail with SQLITE_BUSY half-way, it waits for the busy timeout instead.
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            # SQLAlchemy "begins" autocommit connections too: no BEGIN, or a one-statement read would hold the
            # write lock until the connection goes back to the pool.
            return
        mode = options.get(_SQLITE_BEGIN_OPTION, "IMMEDIATE")
        if mode == "IMMEDIATE":
            _begin_immediate(conn)
        else:
            conn.exec_driver_sql(f"BEGIN {mode}")


def _begin_immediate(conn: Connection) -> None:
    """`BEGIN IMMEDIATE`, waiting for another process's write lock in short steps of our own.

    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 then 100 ms between tries, so a writer
    that finds the lock taken for 30 ms may wait 50-100 ms more after it was freed (the webhook's tail beside a
    running intake). The first try waits in SQLite's handler for at most 1 ms; after that this polls every 1-2 ms
    (a failed try costs microseconds) until `SQLITE_BUSY_TIMEOUT_SECONDS` passed, then raises SQLite's `database is
    locked` as before. The connection's busy timeout is restored for the statements that follow."""
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 1")
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
        tries = 0
        while time.monotonic() < deadline:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                tries += 1
                time.sleep(0.001 if tries < 50 else 0.002)
        # One last try through SQLAlchemy: still locked, it raises `database is locked` as its OperationalError.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()
