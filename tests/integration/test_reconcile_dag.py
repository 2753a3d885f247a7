"""The `kombo_reconcile` DAG run by Airflow itself (dag.test()) against the Kombo sandbox and the platform
stand-in, on SQLite and PostgreSQL: its params, its audit, and a failed run when invitations cannot be revoked."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import yaml

from kombo_sync.state.schema import runs
from tests.airflow_support import run_dag, task_states
from tests.integration.intake_helpers import order_states
from tests.integration.reconcile_helpers import channels, invited_orders, reconcile_settings

pytestmark = pytest.mark.airflow

DAG_ID = "kombo_reconcile"


@pytest.fixture
def airflow_env(monkeypatch, tmp_path, state_store, kombo_sandbox, platform_standin):
    connections = {
        "KOMBO_DEFAULT": {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key,
                          "extra": {"max_retries": 2, "backoff_base": 0.05}},
        "KOMBO_STATE": {"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}},
        "KOMBO_PLATFORM": {"conn_type": "http", "host": platform_standin.url, "password": platform_standin.api_key},
    }  # fmt: skip
    for name, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(value))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"reconcile": {"page_size": 2}}))
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))


def audited_runs(store) -> list[dict]:  # type: ignore[no-untyped-def]
    with store.transaction(readonly=True) as conn:
        query = sa.select(runs.c.job, runs.c.status, runs.c.summary).order_by(runs.c.id)
        return [dict(row) for row in conn.execute(query).mappings() if row["job"].startswith("reconcile")]


def test_the_dag_revokes_what_was_cancelled_in_the_ats_and_fails_when_it_cannot(
    airflow_env, state_store, kombo_sandbox, platform_standin
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (cancelled, later, still_open) = invited_orders(
        state_store, kombo_sandbox, settings, invite, 3
    )
    other, _ = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    kombo_sandbox.admin.cancel_order(cancelled)

    preview = run_dag(DAG_ID, conf={"dry_run": True})
    assert str(preview.state) == "success"
    assert order_states(state_store)[cancelled] == "invited"
    assert audited_runs(state_store) == []  # a dry run records nothing
    assert str(run_dag(DAG_ID, conf={"integration_ids": [other]}).state) == "success"
    assert order_states(state_store)[cancelled] == "invited"

    dag_run = run_dag(DAG_ID)
    assert str(dag_run.state) == "success"
    assert task_states(dag_run) == {"reconcile": "success", "report": "success"}
    assert order_states(state_store)[cancelled] == "cancelled"
    assert platform_standin.admin.invitations()["revocations_by_order"] == {cancelled: 1}
    audit = audited_runs(state_store)[-1]
    assert audit["status"] == "success"
    assert (audit["summary"]["checked"], audit["summary"]["cancelled"]) == (4, 1)
    assert audit["summary"]["revocations_revoked"] == 1

    # The platform is down: the run fails at its report (not retried) and the order waits for the next run.
    kombo_sandbox.admin.cancel_order(later)
    platform_standin.admin.set_knobs(failure_rate=1.0)
    failed = run_dag(DAG_ID)
    assert str(failed.state) == "failed"
    assert task_states(failed) == {"reconcile": "success", "report": "failed"}
    assert order_states(state_store)[later] == "invited"
    assert audited_runs(state_store)[-1]["status"] == "failed"

    platform_standin.admin.set_knobs(failure_rate=0.0)
    assert str(run_dag(DAG_ID).state) == "success"
    assert order_states(state_store)[later] == "cancelled"
    assert order_states(state_store)[still_open] == "invited"
    assert platform_standin.admin.invitations()["revocations_by_order"] == {cancelled: 1, later: 1}
