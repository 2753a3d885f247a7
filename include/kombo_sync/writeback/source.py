"""Read the team's completed-results query from the warehouse in bounded chunks.

The query (``include/sql/results.sql`` by default) takes ``:window_start`` and ``:window_end`` and returns the
rows whose ``updated_at`` lies in ``[window_start, window_end)``. Rows are streamed (a server-side cursor on
PostgreSQL, ``fetchmany`` on SQLite) ``chunk_rows`` at a time, so memory does not grow with the backlog.
A manual run can also ask for chosen orders: the query is then wrapped and filtered on the id column.
Results keyed by the platform's invitation id are joined to Kombo order ids through the state store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kombo_sync.state.schema import invitations, orders
from kombo_sync.state.store import StateStore
from kombo_sync.storable import text_problem
from kombo_sync.writeback.mapping import check_columns
from kombo_sync.writeback.window import EARLIEST, LATEST

log = logging.getLogger(__name__)

# Stands in for "no lower / upper bound" when a manual run names orders instead of a window.
_IDS_PER_QUERY = 500
ID_FILTER_COLUMNS = ("order_id", "invitation_id")


def load_results_sql(path: Path) -> str:
    """The query text, checked for the two bind parameters it must take."""
    # Whole-line comments go: SQLAlchemy would read a ":name" in a comment as a bind parameter.
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--")
    ]
    sql = "\n".join(lines).strip().rstrip(";").strip()
    missing = [name for name in (":window_start", ":window_end") if name not in sql]
    if missing:
        raise ValueError(
            f"{path} must use the bind parameter(s) {', '.join(missing)} (see docs/writeback.md)"
        )
    return sql


def _bind_time(value: datetime, dialect: str) -> datetime | str:
    """UTC for the warehouse: on SQLite the text SQLAlchemy stores (``YYYY-MM-DD HH:MM:SS.ffffff``), so text
    comparison is time comparison; elsewhere an aware datetime (the session runs in UTC, see below)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if dialect == "sqlite":
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _statement(sql: str, id_filter: Mapping[str, Sequence[str]] | None = None) -> sa.TextClause:
    """The query as is, or wrapped to keep only rows whose id columns hold one of the given ids."""
    if not id_filter:
        return sa.text(sql)
    conditions = []
    for position, (column, ids) in enumerate(id_filter.items()):
        if column not in ID_FILTER_COLUMNS:
            raise ValueError(f"cannot filter results on {column!r}")
        placeholders = ", ".join(f":id_{position}_{index}" for index in range(len(ids)))
        conditions.append(f"results.{column} IN ({placeholders})")
    return sa.text(
        f"SELECT * FROM (\n{sql}\n) AS results WHERE {' OR '.join(conditions)} ORDER BY results.updated_at"
    )


def query_columns(engine: Engine, sql: str) -> list[str]:
    """The column names the query returns (runs it with an empty window, so it reads nothing)."""
    with engine.connect() as conn:
        params = {
            "window_start": _bind_time(LATEST, engine.dialect.name),
            "window_end": _bind_time(EARLIEST, engine.dialect.name),
        }
        return list(conn.execute(sa.text(sql), params).keys())


def _read_chunks(
    conn: Connection, statement: sa.TextClause, params: dict[str, Any], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    for chunk in pd.read_sql(statement, conn, params=params, chunksize=chunk_rows):
        if len(chunk):
            yield chunk


def read_result_chunks(
    engine: Engine,
    sql: str,
    *,
    window_start: datetime,
    window_end: datetime,
    chunk_rows: int,
    id_filters: Iterable[Mapping[str, Sequence[str]]] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_rows`` rows: the window, or (with ``id_filters``) chosen results.

    Each id filter maps ``order_id`` and/or ``invitation_id`` to a slice of ids (a few hundred at most, to keep
    the bound-parameter count small); a row matching any of them is read.
    """
    if window_end <= window_start:
        return
    dialect = engine.dialect.name
    base = {"window_start": _bind_time(window_start, dialect), "window_end": _bind_time(window_end, dialect)}
    # stream_results: a named (server-side) cursor on PostgreSQL; yield_per bounds the driver's buffer.
    options = {"stream_results": True, "yield_per": chunk_rows}
    with engine.connect() as conn, conn.begin():
        if dialect == "postgresql":
            # Naive timestamp columns then compare with the UTC window as UTC, whatever the server's zone.
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        conn = conn.execution_options(**options)
        if id_filters is None:
            yield from _read_chunks(conn, _statement(sql), base, chunk_rows)
            return
        for id_filter in id_filters:
            id_filter = {column: list(ids) for column, ids in id_filter.items() if ids}
            if not id_filter:
                continue
            params = dict(base)
            for position, ids in enumerate(id_filter.values()):
                params.update({f"id_{position}_{index}": value for index, value in enumerate(ids)})
            yield from _read_chunks(conn, _statement(sql, id_filter), params, chunk_rows)


def _id_text(series: pd.Series) -> pd.Series:
    """Ids as trimmed text. Cells no query can carry (undecodable bytes, NUL, lone surrogates) become NA, so no
    lookup sees them; the mapping rejects their rows naming the column."""

    def text(value: Any) -> str | None:
        if (
            value is None
            or value is pd.NA
            or value is pd.NaT
            or (isinstance(value, float) and value != value)
        ):
            return None
        if isinstance(value, bytes | bytearray | memoryview):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return None
        value = str(value).strip()
        return None if text_problem(value) else value

    return series.map(text).astype("string")


def resolve_orders(store: StateStore, frame: pd.DataFrame) -> pd.DataFrame:
    """Fill ``order_id`` (from ``invitation_id``) and ``integration_id`` from the state store's orders.

    A result whose order the pipeline never recorded keeps a null ``integration_id`` (and is quarantined by
    the mapping), unless the query itself returns ``integration_id``.
    """
    check_columns(frame.columns)
    frame = frame.copy()
    if "order_id" not in frame.columns:
        frame["order_id"] = None
    raw_order_ids = frame["order_id"]
    order_ids = _id_text(raw_order_ids)
    unreadable = raw_order_ids.notna() & order_ids.isna()
    if "invitation_id" in frame.columns:
        missing = (order_ids.isna() | (order_ids == "")).fillna(True) & ~unreadable
        invitation_ids = _id_text(frame["invitation_id"])
        wanted = [str(value) for value in invitation_ids[missing].dropna().unique()]
        if wanted:
            by_invitation = invitation_to_order(store, wanted)
            mapped = invitation_ids[missing].map(
                lambda value: by_invitation.get(str(value)) if pd.notna(value) else None
            )
            order_ids = order_ids.where(~missing, mapped.astype("string"))
    known = [str(value) for value in order_ids.dropna().unique() if str(value)]
    integration_by_order = order_integrations(store, known)
    from_store = order_ids.map(lambda value: integration_by_order.get(value) if pd.notna(value) else None)
    # An id no query could carry stays as it was, for the mapping to name it.
    frame["order_id"] = order_ids.astype(object).where(~unreadable, raw_order_ids)
    if "integration_id" in frame.columns:
        given = _id_text(frame["integration_id"]).replace("", pd.NA)
        # The state store knows which integration an order came from; a query value only fills gaps.
        frame["integration_id"] = from_store.astype("string").fillna(given)
    else:
        frame["integration_id"] = from_store.astype("string")
    return frame


def invitation_to_order(store: StateStore, invitation_ids: Sequence[str]) -> dict[str, str]:
    """Platform invitation id -> Kombo order id, from ``invitations.external_id`` and ``orders.invitation_id``."""
    found: dict[str, str] = {}
    with store.transaction(readonly=True) as conn:
        for start in range(0, len(invitation_ids), _IDS_PER_QUERY):
            batch = list(invitation_ids[start : start + _IDS_PER_QUERY])
            for external_id, order_id in conn.execute(
                sa.select(invitations.c.external_id, invitations.c.order_id).where(
                    invitations.c.external_id.in_(batch)
                )
            ):
                found[str(external_id)] = str(order_id)
            for invitation_id, order_id in conn.execute(
                sa.select(orders.c.invitation_id, orders.c.id).where(orders.c.invitation_id.in_(batch))
            ):
                found.setdefault(str(invitation_id), str(order_id))
    return found


def order_integrations(store: StateStore, order_ids: Sequence[str]) -> dict[str, str]:
    """Kombo order id -> integration id, for the orders the state store has recorded."""
    found: dict[str, str] = {}
    with store.transaction(readonly=True) as conn:
        for start in range(0, len(order_ids), _IDS_PER_QUERY):
            batch = list(order_ids[start : start + _IDS_PER_QUERY])
            for order_id, integration_id in conn.execute(
                sa.select(orders.c.id, orders.c.integration_id).where(orders.c.id.in_(batch))
            ):
                found[str(order_id)] = str(integration_id)
    return found


def invitation_ids_of(store: StateStore, order_ids: Sequence[str]) -> list[str]:
    """The platform invitation ids of these orders (to filter a query keyed by ``invitation_id``)."""
    result: list[str] = []
    with store.transaction(readonly=True) as conn:
        for start in range(0, len(order_ids), _IDS_PER_QUERY):
            batch = list(order_ids[start : start + _IDS_PER_QUERY])
            rows = conn.execute(
                sa.select(invitations.c.external_id).where(
                    invitations.c.order_id.in_(batch), invitations.c.external_id.is_not(None)
                )
            )
            result.extend(str(row[0]) for row in rows)
            rows = conn.execute(
                sa.select(orders.c.invitation_id).where(
                    orders.c.id.in_(batch), orders.c.invitation_id.is_not(None)
                )
            )
            result.extend(str(row[0]) for row in rows)
    return list(dict.fromkeys(result))


def id_filters_for(
    store: StateStore, columns: Sequence[str], order_ids: Sequence[str]
) -> Iterator[dict[str, list[str]]]:
    """Filters that find these orders' rows by ``order_id``, and by their invitation ids when the query has
    ``invitation_id`` (rows may carry only one of the two)."""
    unique = list(dict.fromkeys(order_ids))
    for start in range(0, len(unique), _IDS_PER_QUERY):
        batch = unique[start : start + _IDS_PER_QUERY]
        id_filter: dict[str, list[str]] = {}
        if "order_id" in columns:
            id_filter["order_id"] = batch
        if "invitation_id" in columns:
            id_filter["invitation_id"] = invitation_ids_of(store, batch)
        yield id_filter
