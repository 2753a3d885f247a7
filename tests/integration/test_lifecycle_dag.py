"""The `kombo_lifecycle` DAG run by Airflow itself (dag.test()) against the platform stand-in, on SQLite and
PostgreSQL: a dry run changes nothing, a run reminds and expires what is due (its audit), one integration only,
and a failed run (not retried) when the invitation of an expired order cannot be revoked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml

from kombo_sync.state.schema import orders, runs
from tests.airflow_support import run_dag, task_states
from tests.integration.intake_helpers import order_states
from tests.integration.lifecycle_helpers import lifecycle_settings, platform_reminders, sent_reminders
from tests.integration.reconcile_helpers import channels, invited_orders

pytestmark = pytest.mark.airflow

DAG_ID = "kombo_lifecycle"


@pytest.fixture
def airflow_env(monkeypatch, tmp_path, state_store, platform_standin):
    connections = {
        "KOMBO_STATE": {"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}},
        "KOMBO_PLATFORM": {"conn_type": "http", "host": platform_standin.url, "password": platform_standin.api_key},
    }  # fmt: skip
    for name, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(value))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"lifecycle": {"page_size": 2}}))
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))


def invited_days_ago(store, order_id: str, days: float) -> None:  # type: ignore[no-untyped-def]
    """The DAG's store reads the real clock: move the invitation back instead."""
    with store.transaction() as conn:
        invited_at = datetime.now(UTC) - timedelta(days=days)
        conn.execute(sa.update(orders).where(orders.c.id == order_id).values(invited_at=invited_at))


def audited_runs(store) -> list[dict]:  # type: ignore[no-untyped-def]
    with store.transaction(readonly=True) as conn:
        query = sa.select(runs.c.job, runs.c.status, runs.c.summary).order_by(runs.c.id)
        return [dict(row) for row in conn.execute(query).mappings() if row["job"].startswith("lifecycle")]


def test_the_dag_reminds_and_expires_what_is_due_and_fails_when_it_cannot_revoke(
    airflow_env, state_store, kombo_sandbox, platform_standin
):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (reminded, expiring, fresh) = invited_orders(state_store, kombo_sandbox, settings, invite, 3)
    other, (other_expiring,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    invited_days_ago(state_store, fresh, 0.1)  # the fixtures' store clock is not today's
    invited_days_ago(state_store, reminded, 2.5)
    invited_days_ago(state_store, expiring, 15)
    invited_days_ago(state_store, other_expiring, 15)

    preview = run_dag(DAG_ID, conf={"dry_run": True})
    assert str(preview.state) == "success"
    assert sent_reminders(state_store) == {} and audited_runs(state_store) == []
    assert order_states(state_store)[expiring] == "invited"

    dag_run = run_dag(DAG_ID, conf={"integration_ids": [integration]})
    assert str(dag_run.state) == "success"
    assert task_states(dag_run) == {"expire": "success", "remind": "success", "report": "success"}
    assert sent_reminders(state_store) == {reminded: [1]}
    assert platform_reminders(platform_standin) == {reminded: [1]}
    states = order_states(state_store)
    assert (states[expiring], states[fresh], states[other_expiring]) == ("cancelled", "invited", "invited")
    audits = {audit["job"]: audit for audit in audited_runs(state_store)}
    assert audits["lifecycle.expire"]["summary"]["expired"] == 1
    assert audits["lifecycle.expire"]["summary"]["revocations_revoked"] == 1
    assert audits["lifecycle.remind"]["summary"]["sent_reminder_1"] == 1

    # The platform is down: the expiry cannot revoke, the run fails at its report and the order waits.
    platform_standin.admin.set_knobs(failure_rate=1.0)
    failed = run_dag(DAG_ID)
    assert str(failed.state) == "failed"
    assert task_states(failed) == {"expire": "success", "remind": "success", "report": "failed"}
    assert order_states(state_store)[other_expiring] == "invited"
    assert audited_runs(state_store)[-2]["status"] == "failed"  # lifecycle.expire
    platform_standin.admin.set_knobs(failure_rate=0.0)

    again = run_dag(DAG_ID)
    assert str(again.state) == "success"
    assert order_states(state_store)[other_expiring] == "cancelled"
    assert platform_reminders(platform_standin) == {reminded: [1]}  # nothing twice
