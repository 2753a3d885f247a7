"""`kombo_package_sync` end to end through Airflow (dag.test()), against the sandbox over HTTP."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kombo_sync.catalog.warehouse import create_catalog_tables, write_catalog_tables
from kombo_sync.state.audit import RunAudit
from kombo_sync.state.integrations import IntegrationRepository
from tests.airflow_support import run_dag, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def connection_json(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": parsed.database})
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parsed.host,
            "port": parsed.port,
            "login": parsed.username,
            "password": parsed.password,
            "schema": parsed.database,
        }
    )


def rendered_labels(dag_run, task_id):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskInstance.rendered_map_index)
            .filter(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
            .all()
        )
    return sorted(str(row[0]) for row in rows)


def test_dag_publishes_then_fails_naming_the_broken_integration(
    state_store, kombo_sandbox, tmp_path, monkeypatch
):
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(warehouse_url)
    create_catalog_tables(engine)
    write_catalog_tables(
        engine,
        [
            {"package_id": "ts", "type": "SKILLS_TEST", "name": "TypeScript", "description": "Coding test"},
            {"package_id": "big5", "type": "BEHAVIORAL", "name": "Big Five", "description": "Personality"},
        ],
        {"c1": ["ts", "big5"], "c2": ["ts"]},
    )
    registry = IntegrationRepository(state_store)
    healthy = kombo_sandbox.admin.create_integration("workday", origin_id="c1")["id"]
    registry.upsert(healthy, source="webhook", customer_key="c1")

    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_DEFAULT",
        json.dumps({"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_STATE", connection_json(state_store.url))
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_WAREHOUSE", connection_json(warehouse_url))
    # one integration per shard, so the second run maps two publish tasks (the first, one shard, maps none)
    config = tmp_path / "pipeline.yaml"
    config.write_text("catalog:\n  source: sql\n  shard_size: 1\n")
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))

    first = run_dag("kombo_package_sync")
    assert first.state == "success", task_states(first)
    assert sorted(p["id"] for p in kombo_sandbox.admin.list_packages(healthy)) == ["big5", "ts"]
    # one shard: the plan task published it itself, no publish task was started
    assert task_states(first)["publish"] == "skipped", task_states(first)
    assert RunAudit(state_store).recent("catalog", limit=1)[0].summary["published"] == [healthy]

    # nothing changed: no shard to map, the publish task is skipped and the run still succeeds
    idle = run_dag("kombo_package_sync")
    assert idle.state == "success", task_states(idle)
    assert task_states(idle)["finish"] == "success"
    assert kombo_sandbox.admin.package_history(healthy)["puts"] == 1

    broken = kombo_sandbox.admin.create_integration("lever", origin_id="c2", status="INACTIVE")["id"]
    registry.upsert(broken, source="webhook", customer_key="c2")
    second = run_dag("kombo_package_sync", conf={"force": True})
    states = task_states(second)
    assert second.state == "failed"
    assert states["plan"] == "success" and states["finish"] == "failed"
    assert states["publish[0]"] == states["publish[1]"] == "success"  # the failure is recorded, not raised
    assert rendered_labels(second, "publish") == sorted([healthy, broken])
    assert kombo_sandbox.admin.package_history(healthy)["puts"] == 2  # forced: sent again despite the failure
    audit = RunAudit(state_store).recent("catalog", limit=1)[0]
    assert audit.status == "failed"
    assert [(p["integration_id"], p["code"]) for p in audit.summary["problems"]] == [
        (broken, "INTEGRATION.INACTIVE")
    ]
