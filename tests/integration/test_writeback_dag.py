"""The `kombo_result_writeback` DAG run by Airflow itself (dag.test()) against the Kombo sandbox, with the
warehouse the platform stand-in fills as its simulated candidates finish."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import ResultOutbox
from sandbox import warehouse
from tests.airflow_support import run_dag, task_states

pytestmark = pytest.mark.airflow

DAG_ID = "kombo_result_writeback"


@pytest.fixture
def airflow_env(monkeypatch, tmp_path, kombo_sandbox, platform_standin):
    """The DAG's connections: the sandbox, a SQLite state store, the platform stand-in's warehouse."""
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    connections = {
        "KOMBO_DEFAULT": {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key,
                          "extra": {"max_retries": 2, "backoff_base": 0.05}},
        "KOMBO_STATE": {"conn_type": "generic", "extra": {"sqlalchemy_url": state_url}},
        "KOMBO_WAREHOUSE": {"conn_type": "generic", "extra": {"sqlalchemy_url": platform_standin.warehouse_url}},
    }  # fmt: skip
    for name, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(value))
    config = tmp_path / "pipeline.yaml"
    # The stand-in serves its result pages over plain http on 127.0.0.1.
    config.write_text(
        yaml.safe_dump({"writeback": {"insecure_url_hosts": ["127.0.0.1"], "max_concurrency": 8}})
    )
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))
    from kombo_sync.state.store import StateStore

    store = StateStore(state_url)
    store.migrate()
    yield store
    store.dispose()


def _invite_and_finish(store, kombo_sandbox, platform_standin, count):
    """Orders in the ATS, recorded and invited on the platform, then the candidates finish."""
    integration = kombo_sandbox.admin.create_integration(tool="greenhouse")["id"]
    repository = OrderRepository(store)
    ids = []
    for _ in range(count):
        order = kombo_sandbox.admin.create_order(integration, "py-basics")
        repository.record_order(order, "webhook", integration_id=integration)
        response = httpx.post(
            f"{platform_standin.url}/api/invitations",
            headers=platform_standin.headers(),
            json={"order_id": order["id"], "integration_id": integration, "package_id": "py-basics",
                  "candidate": order["candidate"], "job": order["job"]},
        )  # fmt: skip
        assert response.status_code in (200, 201), response.text
        ids.append(order["id"])
    platform_standin.admin.simulate(order_ids=ids, seed=3)
    return ids


def test_the_dag_writes_back_what_the_platform_finished_and_a_rerun_sends_nothing(
    airflow_env, kombo_sandbox, platform_standin
):
    ids = _invite_and_finish(airflow_env, kombo_sandbox, platform_standin, 3)
    rows = {row["order_id"]: row for row in warehouse.read_results(platform_standin.warehouse_url)}
    assert set(rows) == set(ids)

    preview = run_dag(DAG_ID, conf={"dry_run": True})
    assert str(preview.state) == "success"
    assert ResultOutbox(airflow_env).counts_by_state()["sent"] == 0

    dag_run = run_dag(DAG_ID)
    assert str(dag_run.state) == "success"
    assert task_states(dag_run) == {"read_results": "success", "send_results": "success", "report": "success"}
    assert ResultOutbox(airflow_env).counts_by_state()["sent"] == 3
    for order_id in ids:
        result = kombo_sandbox.admin.get_order(order_id)["result"]
        assert result["status"] == rows[order_id]["status"].upper()
        assert result["result_url"] == rows[order_id]["result_url"]

    assert str(run_dag(DAG_ID).state) == "success"
    puts = [entry for entry in kombo_sandbox.admin.requests(limit=1000) if entry["method"] == "PUT"]
    assert len(puts) == 3
