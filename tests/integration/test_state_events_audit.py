"""WebhookEventLog, RunAudit and Quarantine on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.events import WebhookEventLog
from kombo_sync.state.store import StateStore

REJECTION = {"status": "ORDER_REJECTED", "message": "Package not part of your plan"}


def test_a_redelivered_event_gets_the_stored_answer(state_store: StateStore, state_clock: Any) -> None:
    events = WebhookEventLog(state_store)
    first = events.record_or_get("evt1", "assessment:order-received", "workday:1", "order1")
    assert first.created and not first.answered
    assert events.store_response("evt1", 422, REJECTION)
    state_clock.advance(30)
    again = events.record_or_get("evt1", "assessment:order-received", "workday:1", "order1")
    assert not again.created
    assert (again.response_status, again.response_body) == (422, REJECTION)
    assert again.received_at == first.received_at
    stored = events.get("evt1")
    assert stored is not None and stored.answered and stored.order_id == "order1"
    assert events.get("evt2") is None
    assert events.store_response("evt2", 200, {}) is False


def test_concurrent_deliveries_record_one_event(
    state_store: StateStore, make_state_store: Callable[[], StateStore]
) -> None:
    logs = [WebhookEventLog(make_state_store()) for _ in range(4)]
    barrier = threading.Barrier(len(logs))

    def deliver(index: int) -> bool:
        barrier.wait()
        return logs[index].record_or_get("evt-race", "integration-created", "lever:1", None).created

    with ThreadPoolExecutor(len(logs)) as pool:
        assert sorted(pool.map(deliver, range(len(logs)))) == [False, False, False, True]


def test_old_events_are_purged(state_store: StateStore, state_clock: Any) -> None:
    events = WebhookEventLog(state_store)
    events.record_or_get("old", "integration-deleted")
    state_clock.advance(days=31)
    events.record_or_get("new", "integration-deleted")
    assert events.purge_received_before(state_clock() - timedelta(days=30)) == 1
    assert events.get("old") is None and events.get("new") is not None


def test_run_audit(state_store: StateStore, state_clock: Any) -> None:
    audit = RunAudit(state_store)
    started = state_clock()
    run = audit.start("kombo_order_intake", "scheduled__2026-01-05T09:00:00+00:00")
    state_clock.advance(12)
    assert audit.finish(
        run, "success", {"orders": 12, "invited": 11, "when": datetime(2026, 1, 5, tzinfo=UTC)}
    )
    record = audit.get(run)
    assert record is not None
    assert (record.status, record.started_at, record.finished_at) == ("success", started, state_clock())
    assert record.summary == {"orders": 12, "invited": 11, "when": "2026-01-05T00:00:00+00:00"}
    other = audit.start("kombo_result_writeback", None)
    assert [r.id for r in audit.recent()] == [other, run]
    assert [r.id for r in audit.recent("kombo_order_intake")] == [run]
    assert audit.finish(999_999, "failed") is False


def test_quarantine(state_store: StateStore) -> None:
    quarantine = Quarantine(state_store)
    bad_row = {"order_id": "o1", "score": float("nan"), "max_score": Decimal("100.5"), "email": "a@b.example"}
    first = quarantine.add("writeback", "o1", "score is not a number", bad_row, run_id="run-1")
    second = quarantine.add("catalog", "pkg-1", "missing column package_name")
    opened = quarantine.list_open()
    assert [(q.id, q.job, q.source_key) for q in opened] == [
        (first, "writeback", "o1"),
        (second, "catalog", "pkg-1"),
    ]
    assert opened[0].row_json == {
        "order_id": "o1",
        "score": None,
        "max_score": "100.5",
        "email": "a@b.example",
    }
    assert opened[0].run_id == "run-1"
    assert "a@b.example" not in repr(opened[0])
    assert [q.id for q in quarantine.list_open("catalog")] == [second]
    assert quarantine.resolve([first]) == 1
    assert quarantine.resolve([first]) == 0
    assert [q.id for q in quarantine.list_open()] == [second]
