"""Helpers of the write-back integration tests (imported by the test_writeback_* modules); their fixtures
(`warehouse_engine`, `_pg_warehouse_url`, `fast_kombo_client`) are in tests/integration/conftest.py.

The warehouse runs on the same engine as the test's state store: a SQLite file, or a PostgreSQL database of its
own (created once per module, emptied before every test), so every test reads the team's SQL on both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.limits import RateBudget
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.state.schema import result_outbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.mapping import map_results
from sandbox import warehouse

PLATFORM = "https://platform.example"
# A fixed "now" for warehouse rows; windows in the tests are built around it.
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def fast_client(sandbox: Any, *, timeout: float = 5.0, max_retries: int = 3) -> KomboClient:
    """A client on the sandbox with short backoffs (a 429 without headers pauses 50 ms, not a second)."""
    return KomboClient(
        sandbox.api_url,
        sandbox.api_key,
        timeout=timeout,
        max_retries=max_retries,
        backoff_base=0.02,
        backoff_cap=0.2,
        rate_budget=RateBudget(None, default_pause=0.05),
    )


def wb_settings(**writeback: Any) -> PipelineSettings:
    """Settings for tests: small chunks (several per test), no retry delay, few threads."""
    values = {
        "chunk_rows": 7,
        "retry_backoff_seconds": 0,
        "max_concurrency": 8,
        "claim_batch_rows": 10,
        "overlap_minutes": 60,
        **writeback,
    }
    return PipelineSettings.model_validate({"writeback": values})


def new_orders(
    store: StateStore, sandbox: Any, count: int, integration_id: str | None = None
) -> tuple[str, list[str]]:
    """`count` OPEN orders at the sandbox, recorded in the state store as the intake would; (integration, ids)."""
    integration_id = integration_id or sandbox.admin.create_integration(tool="workday")["id"]
    repository = OrderRepository(store)
    ids = []
    for _ in range(count):
        order = sandbox.admin.create_order(integration_id, "py-basics")
        repository.record_order(order, "poll", integration_id=integration_id)
        ids.append(order["id"])
    return integration_id, ids


def result_row(order_id: str, updated_at: datetime = T0, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """A completed result as the platform writes it, with https links and no report bytes."""
    row = warehouse.simulated_result(
        order_id, f"inv-{order_id}", seed=seed, cancel_rate=0.0, base_url=PLATFORM, now=updated_at
    )
    row["report_bytes"] = None
    row.update(overrides)
    return row


def write_rows(engine: sa.Engine, rows: Sequence[dict[str, Any]]) -> None:
    warehouse.write_results(engine, rows, replace=True)


def expected_payload(row: dict[str, Any]) -> dict[str, Any]:
    """What the mapping makes of one warehouse row: the payload Kombo must hold for the order."""
    values = {**row, "integration_id": "any"}
    for column in ("sub_results", "attributes"):
        if not isinstance(values[column], str | None):
            values[column] = json.dumps(values[column])
    mapped = map_results(pd.DataFrame([values]))
    assert not mapped.rejections, mapped.rejections
    payload: dict[str, Any] = mapped.results.iloc[0]["payload"]
    return payload


def kombo_result(sandbox: Any, order_id: str) -> dict[str, Any] | None:
    """The result Kombo holds for the order (the last applied write's body)."""
    result: dict[str, Any] | None = sandbox.admin.get_order(order_id)["result"]
    return result


def applied_bodies(sandbox: Any, order_id: str) -> list[dict[str, Any]]:
    """Every distinct body Kombo accepted for the order, in order."""
    bodies: list[dict[str, Any]] = []
    for write in sandbox.admin.get_order(order_id)["results"]:
        if write["outcome"] == "applied" and write["body"] not in bodies:
            bodies.append(write["body"])
    return bodies


def put_count(sandbox: Any) -> int:
    """PUT result requests the sandbox has seen since its last reset."""
    return sum(1 for entry in sandbox.admin.requests(limit=100_000) if entry["method"] == "PUT")


def outbox_rows(store: StateStore) -> list[dict[str, Any]]:
    with store.transaction(readonly=True) as conn:
        return [dict(row) for row in conn.execute(sa.select(result_outbox)).mappings()]


def outbox_states(store: StateStore) -> dict[str, int]:
    return {state: count for state, count in ResultOutbox(store).counts_by_state().items() if count}


def window(
    start: datetime = T0 - timedelta(hours=1), end: datetime = T0 + timedelta(hours=1)
) -> dict[str, datetime]:
    return {"window_start": start, "window_end": end}
