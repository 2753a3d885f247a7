"""Discarding dead letters and quarantined rows (the write-back's `discard_*` params, used by the console),
on SQLite and PostgreSQL, and through the DAG itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import yaml

from kombo_sync.runs import StepFailed
from kombo_sync.state.audit import Quarantine
from kombo_sync.state.outbox import DISCARDED, OutboxEntry, ResultOutbox
from kombo_sync.state.schema import result_outbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.job import discard_dead_letters
from kombo_sync.writeback.mapping import payload_hash
from tests.airflow_support import run_dag, task_states

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def entry(order_id: str, score: float = 80) -> OutboxEntry:
    payload = {"status": "COMPLETED", "result_url": f"https://r.example/{order_id}", "score": score}
    return OutboxEntry(order_id, "lever:abc", payload_hash(payload), payload, T0)


def dead_letter(outbox: ResultOutbox, order_id: str) -> OutboxEntry:
    item = entry(order_id)
    outbox.enqueue([item])
    claimed = outbox.claim_batch("w", 100, 60)
    assert order_id in {c.order_id for c in claimed}
    assert outbox.mark_dead(order_id, item.payload_hash, "REMOTE.INPUT_INVALID", "bad", "https://log/1")
    return item


def test_a_discarded_dead_letter_keeps_its_reason_and_is_never_replayed_or_requeued(
    state_store: StateStore,
) -> None:
    outbox = ResultOutbox(state_store)
    item = dead_letter(outbox, "o1")
    dead_letter(outbox, "o2")
    assert outbox.discard(["o1", "unknown"], "  customer left  ") == 1
    row = outbox.get("o1", item.payload_hash)
    assert row is not None and (row.state, row.discard_reason) == (DISCARDED, "customer left")
    # Kombo's answer is kept beside the reason.
    assert (row.last_error_code, row.log_url) == ("REMOTE.INPUT_INVALID", "https://log/1")
    assert [letter.order_id for letter in outbox.dead_letters()] == ["o2"]
    assert outbox.requeue(["o1"]) == 0
    assert outbox.enqueue([item]) == 0  # the same payload read again is not queued again
    assert outbox.get("o1", item.payload_hash).state == DISCARDED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="reason"):
        outbox.discard(["o2"], " ")


def test_the_state_constraint_allows_discarded_and_nothing_unknown(state_store: StateStore) -> None:
    outbox = ResultOutbox(state_store)
    dead_letter(outbox, "o1")
    outbox.discard(["o1"], "why")
    with pytest.raises(sa.exc.IntegrityError), state_store.transaction() as conn:
        conn.execute(sa.update(result_outbox).values(state="thrown_away"))


def test_discard_job_resolves_quarantined_rows_and_needs_a_reason(state_store: StateStore) -> None:
    outbox = ResultOutbox(state_store)
    dead_letter(outbox, "o1")
    jail = Quarantine(state_store)
    row_id = jail.add("writeback", "o9", "score above max_score", {"order_id": "o9"})
    with pytest.raises(StepFailed, match="reason"):
        discard_dead_letters(state_store, order_ids=["o1"], reason="")
    preview = discard_dead_letters(state_store, order_ids=["o1"], reason="x", dry_run=True)
    assert preview["would_discard"] == 1 and outbox.dead_letters()
    summary = discard_dead_letters(
        state_store, order_ids=["o1"], quarantine_ids=[row_id], reason="duplicate test account"
    )
    assert (summary["discarded"], summary["quarantine_resolved"]) == (1, 1)
    assert jail.list_open() == []
    with state_store.transaction(readonly=True) as conn:
        resolution = conn.execute(sa.text("SELECT resolution FROM quarantine")).scalar_one()
    assert resolution == "discarded: duplicate test account"


@pytest.mark.airflow
def test_the_dag_discards_by_its_params(monkeypatch, tmp_path, kombo_sandbox, platform_standin) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    connections = {
        "KOMBO_DEFAULT": {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key},
        "KOMBO_STATE": {"conn_type": "generic", "extra": {"sqlalchemy_url": state_url}},
        "KOMBO_WAREHOUSE": {"conn_type": "generic", "extra": {"sqlalchemy_url": platform_standin.warehouse_url}},
    }  # fmt: skip
    for name, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(value))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"writeback": {"insecure_url_hosts": ["127.0.0.1"]}}))
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))
    store = StateStore(state_url)
    store.migrate()
    outbox = ResultOutbox(store)
    item = dead_letter(outbox, "order-gone")
    row_id = Quarantine(store).add("writeback", "order-bad", "score above max_score")

    run = run_dag(
        "kombo_result_writeback",
        conf={
            "discard_order_ids": ["order-gone"],
            "discard_quarantine_ids": [row_id],
            "discard_reason": "candidate withdrew",
        },
    )
    assert task_states(run)["read_results"] == "success", task_states(run)
    row = outbox.get("order-gone", item.payload_hash)
    assert row is not None and (row.state, row.discard_reason) == (DISCARDED, "candidate withdrew")
    assert Quarantine(store).list_open() == []
    store.dispose()
