"""The `kombo_order_intake` DAG run by Airflow itself (dag.test()) against the sandbox, the platform stand-in and a
local SMTP server, on SQLite and PostgreSQL; backfills over past ranges are idempotent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kombo_sync.state.orders import OrderRepository
from tests.airflow_support import ensure_airflow_db, run_dag, task_states
from tests.integration.intake_helpers import (
    FROM_EMAIL,
    invitation_rows,
    new_order,
    order_states,
    platform_creations,
    register,
)

pytestmark = pytest.mark.airflow

DAG_ID = "kombo_order_intake"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture
def airflow_env(monkeypatch, tmp_path, state_store, kombo_sandbox, platform_standin, smtp_server):
    """Point the DAG's connections at the sandbox, the platform stand-in, the SMTP server and the test's store."""
    connections = {
        "KOMBO_DEFAULT": {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key,
                          "extra": {"max_retries": 2, "backoff_base": 0.05}},
        "KOMBO_STATE": {"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}},
        "KOMBO_PLATFORM": {"conn_type": "http", "host": platform_standin.url, "password": platform_standin.api_key},
        "KOMBO_SMTP": {"conn_type": "smtp", "host": smtp_server.host, "port": smtp_server.port,
                       "extra": {"from_email": FROM_EMAIL, "disable_tls": True}},
    }  # fmt: skip
    for name, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(value))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"intake": {"retry_backoff_seconds": 0, "overlap_minutes": 15}}))
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))
    return connections


def test_the_dag_records_and_invites_through_both_channels(
    airflow_env, state_store, kombo_sandbox, platform_standin, smtp_server
):
    (by_platform,) = register(state_store, kombo_sandbox, channel="platform")
    (by_email,) = register(state_store, kombo_sandbox, channel="email")
    platform_ids = kombo_sandbox.admin.bulk_create_orders(by_platform, 3)
    email_ids = kombo_sandbox.admin.bulk_create_orders(by_email, 2)

    dag_run = run_dag(DAG_ID)
    assert str(dag_run.state) == "success"
    assert task_states(dag_run) == {"poll": "success", "dispatch": "success", "report": "success"}
    assert set(order_states(state_store).values()) == {"invited"}
    assert platform_creations(platform_standin) == dict.fromkeys(platform_ids, 1)
    assert {entry["message_id"] for entry in smtp_server.messages()} == {
        f"<kombo-invitation.{i}@provider.example.com>" for i in email_ids
    }
    assert OrderRepository(state_store).get(email_ids[0]).first_seen_via == "poll"

    # Run again: nothing new, nothing sent twice.
    assert str(run_dag(DAG_ID).state) == "success"
    assert sum(platform_creations(platform_standin).values()) == 3
    assert len(smtp_server.messages()) == 2


def test_dry_run_param_records_and_sends_nothing(airflow_env, state_store, kombo_sandbox, platform_standin):
    (integration,) = register(state_store, kombo_sandbox)
    kombo_sandbox.admin.bulk_create_orders(integration, 2)
    dag_run = run_dag(DAG_ID, conf={"dry_run": True, "integration_ids": [integration]})
    assert str(dag_run.state) == "success"
    assert order_states(state_store) == {} and platform_creations(platform_standin) == {}


def test_a_failing_integration_fails_the_run_but_the_others_are_invited(
    airflow_env, state_store, kombo_sandbox, platform_standin
):
    from kombo_sync.state.integrations import IntegrationRepository

    (healthy,) = register(state_store, kombo_sandbox)
    IntegrationRepository(state_store).upsert("workday:gone-from-kombo", source="admin")
    ids = kombo_sandbox.admin.bulk_create_orders(healthy, 2)
    dag_run = run_dag(DAG_ID)
    assert task_states(dag_run) == {"poll": "success", "dispatch": "success", "report": "failed"}
    assert str(dag_run.state) == "failed"
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)


def _aligned(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def test_backfill_over_past_ranges_repolls_them_and_changes_nothing_already_done(
    airflow_env, state_store, kombo_sandbox, platform_standin
):
    (integration,) = register(state_store, kombo_sandbox)
    now = datetime.now(UTC)
    two_hours_ago = _aligned(now - timedelta(hours=2))
    one_hour_ago = _aligned(now - timedelta(hours=1))
    # Created before either range (minus the 15-minute overlap): no run of this test asks for it.
    too_old = new_order(kombo_sandbox, integration, created_at=two_hours_ago - timedelta(minutes=40))["id"]
    in_first = [
        new_order(kombo_sandbox, integration, created_at=two_hours_ago - timedelta(minutes=m))["id"]
        for m in (2, 10)
    ]
    in_second = [new_order(kombo_sandbox, integration, created_at=one_hour_ago - timedelta(minutes=3))["id"]]

    second_range = run_dag(DAG_ID, logical_date=one_hour_ago)
    assert str(second_range.state) == "success"
    assert set(order_states(state_store)) == set(in_second)

    first_range = run_dag(DAG_ID, logical_date=two_hours_ago)
    assert str(first_range.state) == "success"
    recorded = order_states(state_store)
    assert set(recorded) == set(in_first + in_second) and too_old not in recorded
    snapshot = {i: OrderRepository(state_store).get(i) for i in recorded}
    invitations = invitation_rows(state_store)

    # The same backfill again: the same range is re-polled, nothing changes, nothing is sent.
    assert str(run_dag(DAG_ID, logical_date=two_hours_ago).state) == "success"
    assert str(run_dag(DAG_ID, logical_date=one_hour_ago).state) == "success"
    after = {i: OrderRepository(state_store).get(i) for i in order_states(state_store)}
    assert {i: (r.state, r.invitation_id, r.attempts) for i, r in after.items()} == {
        i: (r.state, r.invitation_id, r.attempts) for i, r in snapshot.items()
    }
    assert invitation_rows(state_store) == invitations
    assert platform_creations(platform_standin) == dict.fromkeys(in_first + in_second, 1)
    assert set(platform_standin.admin.invitations()["requests_by_order"].values()) == {1}


def test_airflow_backfill_create_exists_and_plans_the_two_hour_range(monkeypatch):
    """`airflow backfill create` is how the team backfills; a dry run over two past hours plans 24 runs."""
    ensure_airflow_db()
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    usage = subprocess.run([AIRFLOW, "backfill", "create", "--help"], capture_output=True, text=True, env=env)
    assert usage.returncode == 0
    for option in (
        "--dag-id",
        "--from-date",
        "--to-date",
        "--reprocess-behavior",
        "--dry-run",
        "--max-active-runs",
    ):
        assert option in usage.stdout
    # Register the DAG in the metadata DB the way dag.test() does (an empty registry: no Kombo call is made).
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_DEFAULT",
        json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/v1", "password": "k"}),
    )
    run_dag(DAG_ID, conf={"dry_run": True})
    start = _aligned(datetime.now(UTC) - timedelta(hours=3))
    planned = subprocess.run(
        [AIRFLOW, "backfill", "create", "--dag-id", DAG_ID, "--from-date", start.isoformat(),
         "--to-date", (start + timedelta(hours=2)).isoformat(), "--dry-run", "--reprocess-behavior", "completed"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr[-2000:]
    planned_dates = {
        datetime.fromisoformat(line.strip("| ").split(" |")[0]) for line in planned.stdout.splitlines()
        if line.startswith("| 20")
    }  # fmt: skip
    every_five_minutes = {start + timedelta(minutes=5 * n) for n in range(1, 25)}
    assert every_five_minutes <= planned_dates, planned.stdout[-3000:]
