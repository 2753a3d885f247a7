"""Shared pytest fixtures. Each concern keeps its fixtures in its own named block."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from kombo_sync.state.store import StateStore

# State store fixtures (kombo_sync.state): `state_store`, `make_state_store`, `state_db_url`, `state_clock`,
# `pg_admin_url`, `pg_state_database`.
#
# `state_store` and `state_db_url` run every test on SQLite (a file under tmp_path) and on PostgreSQL (a database
# `kombo_test_<random>` created on KOMBO_TEST_PG_URL for the session and dropped after it). When PostgreSQL is
# unreachable the postgres case is skipped, except under CI=true, where it fails.

KOMBO_TEST_PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
STATE_DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


class StateClock:
    """A clock the test moves by hand; pass it as `StateStore(url, clock=...)`."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self.current += timedelta(seconds=seconds, **kwargs)
        return self.current


def _pg_admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3}
    )


def _database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _create_pg_database(admin_url: str, icu_locale: str | None = None) -> str:
    name = f"kombo_test_{uuid.uuid4().hex[:12]}"
    # With `icu_locale`, the database compares text by that ICU locale's rules (en-US: "a" < "B"), as a
    # database created with a linguistic default collation does; otherwise by the server's default.
    options = f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'" if icu_locale else ""
    engine = _pg_admin_engine(admin_url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{options}')
    engine.dispose()
    return name


def _drop_pg_database(admin_url: str, name: str) -> None:
    engine = _pg_admin_engine(admin_url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """Admin URL of the test PostgreSQL server; skips (fails under CI=true) when it is unreachable."""
    from kombo_sync.connections import normalize_url

    url = normalize_url(os.environ.get("KOMBO_TEST_PG_URL") or KOMBO_TEST_PG_URL_DEFAULT)
    try:
        engine = _pg_admin_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        reason = (
            f"PostgreSQL unreachable at {make_url(url).render_as_string(hide_password=True)} "
            f"(set KOMBO_TEST_PG_URL): {type(exc).__name__}: {exc}"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def pg_state_database(pg_admin_url: str) -> Iterator[str]:
    """URL of a PostgreSQL database for this test session, migrated to head; dropped at the end."""
    from kombo_sync.state.store import StateStore

    name = _create_pg_database(pg_admin_url)
    url = _database_url(pg_admin_url, name)
    engine = _pg_admin_engine(pg_admin_url)
    with engine.connect() as conn:
        # Test data need not survive a crash: commits stop waiting for the disk.
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    engine.dispose()
    store = StateStore(url)
    store.migrate()
    store.dispose()
    yield url
    _drop_pg_database(pg_admin_url, name)


@pytest.fixture
def make_pg_database(pg_admin_url: str) -> Iterator[Callable[..., str]]:
    """Make fresh, empty PostgreSQL databases (URLs) for this test (`make(icu_locale="en-US")`: one whose text
    compares by that locale); all are dropped after it."""
    names: list[str] = []

    def make(icu_locale: str | None = None) -> str:
        names.append(_create_pg_database(pg_admin_url, icu_locale))
        return _database_url(pg_admin_url, names[-1])

    yield make
    for name in names:
        _drop_pg_database(pg_admin_url, name)


@pytest.fixture
def state_clock() -> StateClock:
    """The clock of `state_store`, starting at 2026-01-05 09:00 UTC."""
    return StateClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))


@pytest.fixture(params=STATE_DATABASES)
def state_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty (unmigrated) state database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    name = _create_pg_database(admin_url)
    yield _database_url(admin_url, name)
    _drop_pg_database(admin_url, name)


@pytest.fixture(params=STATE_DATABASES)
def state_store(
    request: pytest.FixtureRequest, tmp_path: Path, state_clock: StateClock
) -> Iterator[StateStore]:
    """A migrated `StateStore` with empty tables on `state_clock`: SQLite file or the session's PostgreSQL DB."""
    from kombo_sync.state.schema import metadata
    from kombo_sync.state.store import StateStore

    if request.param == "sqlite":
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=state_clock)
        store.migrate()
    else:
        store = StateStore(request.getfixturevalue("pg_state_database"), clock=state_clock)
        # DELETE is much faster than TRUNCATE on tables this small.
        with store.transaction() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
    yield store
    store.dispose()


@pytest.fixture
def make_state_store(state_store: StateStore, state_clock: StateClock) -> Iterator[Callable[[], StateStore]]:
    """Another `StateStore` on the same database and clock (its own engine, like another process)."""
    from kombo_sync.state.store import StateStore

    made: list[StateStore] = []

    def make() -> StateStore:
        store = StateStore(state_store.url, clock=state_clock)
        made.append(store)
        return store

    yield make
    for store in made:
        store.dispose()


# End of the state store fixtures.


# Hostile-input fuzz tests: the number of cases each one tried, printed at the end of the session.


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.support.fuzz import COUNTS

    if COUNTS:
        terminalreporter.write_sep("-", f"hostile input: {sum(COUNTS.values())} cases tried")
        for name, count in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{count:6d}  {name}")
