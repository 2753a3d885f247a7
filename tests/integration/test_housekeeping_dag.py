"""The `kombo_housekeeping` DAG run by Airflow itself (dag.test()) on SQLite and PostgreSQL: the retention purge,
erasure on request through the `erase_emails` param, and a bad param that fails the run and erases nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from kombo_sync.state.erasures import ErasureLog
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore
from tests.airflow_support import run_dag, task_states

pytestmark = pytest.mark.airflow

DAG_ID = "kombo_housekeeping"
SALT = "housekeeping-dag-salt-0123"


@pytest.fixture
def airflow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, state_store: StateStore) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_STATE",
        json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_ERASURE_SALT", json.dumps({"conn_type": "generic", "password": SALT})
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text("retention: {candidate_data_days: 90, integration_deleted_days: 30}\n")
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))


def order(order_id: str, email: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "integration_id": "workday:hk",
        "package_id": "p1",
        "status": "OPEN",
        "candidate": {"email": email, "first_name": "Canaryfirst", "last_name": "Canarylast"},
    }


def test_the_dag_purges_old_candidate_data_and_erases_on_request(
    airflow_env: None, state_store: StateStore, state_clock: Any
) -> None:
    from datetime import UTC, datetime

    # The fixture's clock is in the past: "old" ended 100 days before the real now, "recent" 10 days before.
    now = datetime.now(UTC)
    repo = OrderRepository(state_store)
    state_clock.current = now - timedelta(days=100)
    repo.record_order(order("old", "old.canary@candidates.example"), "webhook")
    repo.mark_cancelled("old")
    state_clock.current = now - timedelta(days=10)
    repo.record_order(order("recent", "recent.canary@candidates.example"), "webhook")
    repo.mark_cancelled("recent")
    repo.record_order(order("asked", "asked.canary@candidates.example"), "webhook")

    dag_run = run_dag(DAG_ID)
    assert str(dag_run.state) == "success"
    assert task_states(dag_run) == {"purge": "success", "erase": "success", "report": "success"}
    assert repo.get("old").candidate_email is None  # type: ignore[union-attr]
    assert repo.get("recent").candidate_email  # type: ignore[union-attr]
    assert [record.kind for record in ErasureLog(state_store).recent()] == ["retention"]

    dag_run = run_dag(
        DAG_ID, conf={"erase_emails": ["Asked.Canary@candidates.example"], "erase_reason": "ticket 9"}
    )
    assert str(dag_run.state) == "success"
    asked = repo.get("asked")
    assert asked is not None and asked.candidate_email is None and asked.state == "cancelled"
    assert asked.candidate_email_hash is not None
    latest = ErasureLog(state_store).recent()[0]
    assert (latest.kind, latest.reason, latest.order_ids) == ("request", "ticket 9", ["asked"])
    assert (latest.requested_by or "").startswith(f"airflow:{DAG_ID}/")


def test_a_bad_address_fails_the_run_and_erases_nothing(airflow_env: None, state_store: StateStore) -> None:
    repo = OrderRepository(state_store)
    repo.record_order(order("o1", "kept.canary@candidates.example"), "webhook")
    dag_run = run_dag(DAG_ID, conf={"erase_emails": ["kept.canary@candidates.example", "not-an-address"]})
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert (states["erase"], states["report"], states["purge"]) == ("failed", "failed", "success")
    assert repo.get("o1").candidate_email == "kept.canary@candidates.example"  # type: ignore[union-attr]
    assert ErasureLog(state_store).recent(kind="request") == []
