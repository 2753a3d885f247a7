"""Scratch state stores for benchmarks: a new SQLite file, or a new PostgreSQL database created on a server for one
run and dropped (`WITH (FORCE)`) at its end, so a run never reads what an earlier one left behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kombo_sync.connections import normalize_url
from kombo_sync.state.store import StateStore


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database on `admin_url`'s server, dropped when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(normalize_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def scratch_store(folder: Path, admin_url: str | None, prefix: str) -> tuple[StateStore, Callable[[], None]]:
    """An empty, migrated state store (a new SQLite file in `folder`, or a new PostgreSQL database when
    `admin_url` is given) and the function that disposes of it (and drops the database)."""
    if not admin_url:
        store = StateStore(f"sqlite:///{folder / f'state-{uuid.uuid4().hex[:8]}.db'}")
        store.migrate()
        return store, store.dispose
    database = scratch_database(admin_url, prefix)
    store = StateStore(database.__enter__())
    store.migrate()

    def drop() -> None:
        store.dispose()
        database.__exit__(None, None, None)

    return store, drop
