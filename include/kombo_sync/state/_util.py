"""Small helpers shared by the repositories."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from kombo_sync.state.store import StateStore

T = TypeVar("T")

# Keeps IN lists well below SQLite's and PostgreSQL's bound-parameter limits.
IN_CHUNK = 500
MAX_ERROR_CHARS = 4000


def not_by_index(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The same text value as `column` (never NULL), but one no index can order or filter by (`column || ''`),
    so that the planner takes the index the query is written for: on SQLite without statistics, or PostgreSQL's
    generic plan for a prepared statement on statistics from a smaller table, another index on this column can
    look as good and read far more rows."""
    return column.op("||")(sa.literal_column("''"))


def chunked(items: Iterable[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def to_jsonable(value: Any) -> Any:
    """A JSON-safe copy: timestamps as ISO text, decimals and unknown objects as text, NaN as null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes | bytearray):
        return [to_jsonable(item) for item in value]
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        try:
            return to_jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def clip(text: str | None, limit: int = MAX_ERROR_CHARS) -> str | None:
    """Error text cut to a size that fits a row."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


_field_names: dict[type, frozenset[str]] = {}


def from_row(cls: type[T], row: Mapping[Any, Any], **extra: Any) -> T:
    """A record dataclass from a result row; columns the dataclass does not know (added later) are ignored."""
    names = _field_names.get(cls)
    if names is None:
        names = _field_names[cls] = frozenset(field.name for field in fields(cls))  # type: ignore[arg-type]
    return cls(**{key: value for key, value in row.items() if key in names}, **extra)


def expire_leases_of_earlier_tries(
    store: StateStore, table: sa.Table, held_state: str, family: str, owner: str, now: datetime
) -> int:
    """End now the leases that other tries of this task instance (owners starting with ``family``, not
    ``owner``) still hold in ``table``: those tries are over, so their rows need not wait for the lease to
    run out. The claims then treat the rows as any abandoned lease. Returns how many leases were ended."""
    lease_owner, lease_expires_at = table.c.lease_owner, table.c.lease_expires_at
    with store.transaction() as conn:
        result = conn.execute(
            sa.update(table)
            .where(
                table.c.state == held_state,
                lease_owner.startswith(family, autoescape=True),
                lease_owner != owner,
                sa.or_(lease_expires_at.is_(None), lease_expires_at > now),
            )
            .values(lease_expires_at=now)
        )
    return int(result.rowcount or 0)


class _ByteOrder(sa.ColumnElement[Any]):
    """`in_byte_order(column)`: the column, compared by its bytes (PostgreSQL: `COLLATE "C"`)."""

    inherit_cache = True
    _traverse_internals = [("clause", InternalTraversal.dp_clauseelement)]

    def __init__(self, clause: sa.ColumnElement[Any]) -> None:
        self.clause = clause
        self.type = clause.type


@compiles(_ByteOrder)
def _byte_order_default(element: _ByteOrder, compiler: Any, **kw: Any) -> str:
    # SQLite compares text with BINARY (memcmp of UTF-8) unless a column says otherwise: Python's order already.
    return str(compiler.process(element.clause, **kw))


@compiles(_ByteOrder, "postgresql")
def _byte_order_postgresql(element: _ByteOrder, compiler: Any, **kw: Any) -> str:
    return f'{compiler.process(element.clause, **kw)} COLLATE "C"'


def in_byte_order(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """`column` to ORDER BY in Python's string order (code points, which UTF-8's byte order follows) whatever the
    database's collation. Writers that lock several rows lock them in this order (`sorted()` in Python, this in
    SQL): under a linguistic collation (en_US: "a" < "B", Python: "B" < "a") mixed-case ids would be locked in
    different orders by different writers, and two of them could deadlock on PostgreSQL."""
    return _ByteOrder(column)
