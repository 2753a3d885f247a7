"""The assessment provider's warehouse table `assessment_results` (not the pipeline's state store).

The platform stand-in fills it as simulated candidates finish; tests and benchmarks can also write rows directly
with `write_results` (executemany in batches: a million rows in well under a minute on SQLite).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)

DEFAULT_WAREHOUSE_URL = "sqlite:///.local/platform-warehouse.db"

metadata = MetaData()

assessment_results = Table(
    "assessment_results",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("invitation_id", Text),
    Column("status", Text, nullable=False),  # 'completed' | 'cancelled'
    Column("score", Float),
    Column("max_score", Float),
    Column("completed_at", DateTime),
    Column("result_url", Text),
    Column("report_url", Text),
    Column("report_bytes", LargeBinary),
    Column("report_name", Text),
    Column("report_content_type", Text),
    Column("sub_results", Text),  # JSON list of {id, label, score, max, status}
    Column("attributes", Text),  # JSON list of {label, value}
    Column("updated_at", DateTime, nullable=False),
    Index("ix_assessment_results_updated_at", "updated_at"),
)

COLUMNS = tuple(column.name for column in assessment_results.columns)
_COLUMN_SET = frozenset(COLUMNS)
_SQLITE_INSERT = (
    f"INSERT INTO assessment_results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)

# A valid one-page PDF, small enough to store with every row.
TINY_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)

SUB_TESTS = (
    ("logic", "Logical reasoning"),
    ("verbal", "Verbal reasoning"),
    ("numerical", "Numerical reasoning"),
)


@contextmanager
def _engine(url_or_engine: str | Engine) -> Iterator[Engine]:
    """The given engine, or a short-lived one for a URL (disposed afterwards), with the schema in place."""
    engine = create_schema(url_or_engine)
    try:
        yield engine
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()


def make_engine(url_or_engine: str | Engine) -> Engine:
    """An engine for the warehouse; SQLite files get WAL so a reader and the writer do not block each other."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    engine = create_engine(url_or_engine)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def create_schema(url_or_engine: str | Engine) -> Engine:
    engine = make_engine(url_or_engine)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
    return engine


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    if not _COLUMN_SET.issuperset(row):
        raise ValueError(f"unknown warehouse columns: {sorted(set(row) - _COLUMN_SET)}")
    values = {column: row.get(column) for column in COLUMNS}
    for column in ("sub_results", "attributes"):
        if values[column] is not None and type(values[column]) is not str:
            values[column] = json.dumps(values[column])
    if values["completed_at"] is not None and values["completed_at"].tzinfo is not None:
        values["completed_at"] = _naive_utc(values["completed_at"])
    if values["updated_at"] is None or values["updated_at"].tzinfo is not None:
        values["updated_at"] = _naive_utc(values["updated_at"] or datetime.now(UTC))
    return values


class _SqliteRows:
    """Rows as driver tuples; datetimes in the text form SQLAlchemy's SQLite DateTime type reads back."""

    def __init__(self) -> None:
        self._formatted: dict[datetime, str] = {}

    def value(self, value: Any) -> Any:
        if type(value) is datetime:
            text = self._formatted.get(value)
            if text is None:
                if len(self._formatted) > 100_000:
                    self._formatted.clear()
                text = self._formatted[value] = value.strftime("%Y-%m-%d %H:%M:%S.%f")
            return text
        return value

    def tuples(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        value = self.value
        return [tuple([value(row[column]) for column in COLUMNS]) for row in rows]


def write_results(
    url_or_engine: str | Engine,
    rows: Iterable[Mapping[str, Any]],
    *,
    batch_size: int = 10_000,
    replace: bool = False,
) -> int:
    """Insert rows into `assessment_results` in executemany batches; returns the number written.

    `replace=True` first deletes rows with the same `order_id` (an upsert that works on every dialect).
    JSON columns may be given as Python lists; datetimes are stored as naive UTC. On SQLite the batches go
    straight to the driver's `executemany` (about 1 s per 100,000 rows).
    """
    written = 0
    batch: list[dict[str, Any]] = []
    sqlite_rows = _SqliteRows()

    def flush(engine: Engine) -> None:
        nonlocal written
        if not batch:
            return
        with engine.begin() as connection:
            if replace:
                ids = [row["order_id"] for row in batch]
                for start in range(0, len(ids), 500):
                    connection.execute(
                        delete(assessment_results).where(
                            assessment_results.c.order_id.in_(ids[start : start + 500])
                        )
                    )
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql(_SQLITE_INSERT, sqlite_rows.tuples(batch))
            else:
                connection.execute(insert(assessment_results), batch)
        written += len(batch)
        batch.clear()

    with _engine(url_or_engine) as engine:
        for row in rows:
            batch.append(_normalise(row))
            if len(batch) >= batch_size:
                flush(engine)
        flush(engine)
    return written


def read_results(url_or_engine: str | Engine, order_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """All rows (or those of `order_ids`) with JSON columns decoded; for tests and small checks."""
    query = select(assessment_results).order_by(
        assessment_results.c.updated_at, assessment_results.c.order_id
    )
    if order_ids is not None:
        query = query.where(assessment_results.c.order_id.in_(list(order_ids)))
    with _engine(url_or_engine) as engine, engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    for row in rows:
        for column in ("sub_results", "attributes"):
            row[column] = json.loads(row[column]) if row[column] else []
    return rows


def count_results(url_or_engine: str | Engine) -> int:
    with _engine(url_or_engine) as engine, engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(assessment_results)).scalar_one())


def truncate_results(url_or_engine: str | Engine) -> None:
    with _engine(url_or_engine) as engine, engine.begin() as connection:
        connection.execute(delete(assessment_results))


def simulated_result(
    order_id: str,
    invitation_id: str,
    *,
    seed: int | None = 0,
    cancel_rate: float = 0.1,
    base_url: str = "http://127.0.0.1:8766",
    with_report: bool = True,
    now: datetime | None = None,
    invited_at: datetime | None = None,
) -> dict[str, Any]:
    """One candidate's outcome; the same (seed, order_id) always gives the same scores.

    `completed_at` lies in the hour before `now`, but never before `invited_at`.
    """
    rng = random.Random(f"{seed}:{order_id}")
    now = now or datetime.now(UTC)
    cancelled = rng.random() < cancel_rate
    completed_at = now - timedelta(seconds=rng.randint(0, 3600))
    if invited_at is not None:
        completed_at = max(completed_at, invited_at)
    sub_results = []
    for sub_id, label in SUB_TESTS[: rng.randint(2, 3)]:
        maximum = rng.choice((10, 20, 50))
        sub_results.append(
            {
                "id": sub_id,
                "label": label,
                "score": None if cancelled else rng.randint(0, maximum),
                "max": maximum,
                "status": "cancelled" if cancelled else "completed",
            }
        )
    report = with_report and not cancelled
    return {
        "order_id": order_id,
        "invitation_id": invitation_id,
        "status": "cancelled" if cancelled else "completed",
        "score": None if cancelled else float(rng.randint(20, 100)),
        "max_score": None if cancelled else 100.0,
        "completed_at": completed_at,
        "result_url": f"{base_url}/assessments/{invitation_id}/result",
        "report_url": f"{base_url}/reports/{invitation_id}.pdf" if report else None,
        "report_bytes": TINY_PDF if report else None,
        "report_name": "Assessment report.pdf" if report else None,
        "report_content_type": "application/pdf" if report else None,
        "sub_results": sub_results,
        "attributes": [
            {"label": "Role fit", "value": rng.choice(("High", "Medium", "Low"))},
            {"label": "Time taken (minutes)", "value": str(rng.randint(12, 90))},
        ],
        "updated_at": now,
    }


def generate_results(
    count: int,
    *,
    seed: int = 0,
    start: int = 0,
    cancel_rate: float = 0.1,
    base_url: str = "http://127.0.0.1:8766",
    with_report_bytes: bool = False,
    order_id_prefix: str = "order-",
    now: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Synthetic rows for benchmarks (`order-0000001`, ...): cheap, deterministic by seed, yielded lazily.

    `write_results(url, generate_results(1_000_000))` therefore runs in bounded memory.
    """
    rng = random.Random(seed)
    naive_now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    completed_times = [naive_now - timedelta(seconds=offset) for offset in range(3600)]
    role_fit = [json.dumps([{"label": "Role fit", "value": value}]) for value in ("High", "Medium", "Low")]
    for index in range(start, start + count):
        invitation_id = f"inv-{index:07d}"
        cancelled = rng.random() < cancel_rate
        logic, verbal = int(rng.random() * 21), int(rng.random() * 21)
        status = "cancelled" if cancelled else "completed"
        yield {
            "order_id": f"{order_id_prefix}{index:07d}",
            "invitation_id": invitation_id,
            "status": status,
            "score": None if cancelled else float(logic + verbal) * 2.5,
            "max_score": None if cancelled else 100.0,
            "completed_at": completed_times[int(rng.random() * 3600)],
            "result_url": f"{base_url}/assessments/{invitation_id}/result",
            "report_url": None if cancelled else f"{base_url}/reports/{invitation_id}.pdf",
            "report_bytes": TINY_PDF if with_report_bytes and not cancelled else None,
            "report_name": None if cancelled else "Assessment report.pdf",
            "report_content_type": None if cancelled else "application/pdf",
            "sub_results": (
                f'[{{"id": "logic", "label": "Logical reasoning", "score": {logic}, "max": 20, "status": "{status}"}}, '
                f'{{"id": "verbal", "label": "Verbal reasoning", "score": {verbal}, "max": 20, "status": "{status}"}}]'
            ),
            "attributes": role_fit[index % 3],
            "updated_at": naive_now,
        }
