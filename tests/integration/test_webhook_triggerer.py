"""End to end through real Airflow: a webhook wakes `kombo_order_intake` via the triggerer, and the candidate
is invited.

Starts api-server, scheduler, dag-processor and triggerer on a private AIRFLOW_HOME (SQLite metadata DB,
LocalExecutor), the project's DAGs and plugin, the Kombo sandbox and the platform stand-in. The intake's cron is
pushed far away, so the only way a run can start is the asset `kombo_orders_received`, whose watcher
(`WakeupTrigger`, in the triggerer) consumes the wake-up the webhook requested.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import pending_wakeups
from tests.support.webhooks import LiveAirflow

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SECRET = "triggerer-test-webhook-secret"
DAG_ID = "kombo_order_intake"
PACKAGE_SYNC_DAG_ID = "kombo_package_sync"
CUSTOMER = "customer-e2e"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _dag_runs(home: Path, dag_id: str = DAG_ID) -> list[dict]:
    with sqlite3.connect(home / "airflow.db", timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT run_id, run_type, state, queued_at, start_date FROM dag_run WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    return [dict(row) for row in rows]


def _new_asset_run(home: Path, dag_id: str, before: set[str]) -> dict | None:
    runs = [
        run
        for run in _dag_runs(home, dag_id)
        if run["run_id"] not in before and run["run_type"] == "asset_triggered"
    ]
    return runs[0] if runs else None


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, _kombo_sandbox_server, _platform_standin_server):
    home = tmp_path_factory.mktemp("airflow-e2e")
    state_db = home / "state.db"
    # The package sync reads a small YAML catalog: customer CUSTOMER gets package pkg-1.
    catalog = home / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "packages": [
                    {"id": "pkg-1", "name": "Python", "description": "Python skills", "type": "SKILLS_TEST"}
                ],
                "entitlements": {CUSTOMER: ["pkg-1"]},
            }
        )
    )
    config = home / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"catalog": {"source": "yaml", "yaml_file": str(catalog)}}))
    sandbox, platform = _kombo_sandbox_server, _platform_standin_server
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "KOMBO_INTAKE_SCHEDULE": "0 0 1 1 *",
        "KOMBO_CATALOG_SCHEDULE": "0 0 1 1 *",
        "KOMBO_SYNC_CONFIG": str(config),
        "KOMBO_SYNC_HOME": str(home),
        "KOMBO_WEBHOOK_SECRET": SECRET,
        "AIRFLOW_CONN_KOMBO_STATE": json.dumps({"conn_type": "sqlite", "host": str(state_db)}),
        "AIRFLOW_CONN_KOMBO_DEFAULT": json.dumps(
            {"conn_type": "http", "host": sandbox.api_url, "password": sandbox.api_key}
        ),
        "AIRFLOW_CONN_KOMBO_PLATFORM": json.dumps(
            {"conn_type": "http", "host": platform.url, "password": platform.api_key}
        ),
    }
    live = LiveAirflow(
        home / "airflow",
        env=env,
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        log_dir=home / "logs",
    )
    live.start(timeout=180)
    try:
        live.airflow("pools", "set", "kombo_api", "4", "Kombo API calls")
        for dag_id in (DAG_ID, PACKAGE_SYNC_DAG_ID):
            _wait(lambda dag_id=dag_id: _dag_parsed(live, dag_id), 120, f"{dag_id} parsed", interval=2)
            live.airflow("dags", "unpause", dag_id)
        yield live, StateStore(f"sqlite:///{state_db}")
    finally:
        live.stop()


def _dag_parsed(live: LiveAirflow, dag_id: str) -> bool:
    try:
        with sqlite3.connect(live.home / "airflow.db", timeout=10) as conn:
            return bool(conn.execute("SELECT 1 FROM dag WHERE dag_id = ?", (dag_id,)).fetchone())
    except sqlite3.Error:
        return False


def test_webhook_wakes_the_intake_through_the_triggerer_and_the_candidate_is_invited(
    stack, kombo_sandbox, platform_standin
):
    live, store = stack
    kombo_sandbox.set_webhook(live.webhook_url, secret=SECRET)
    before_sync = {run["run_id"] for run in _dag_runs(live.home, PACKAGE_SYNC_DAG_ID)}
    before = {run["run_id"] for run in _dag_runs(live.home)}

    # A new assessment integration: the package sync is woken through its own asset.
    integration = kombo_sandbox.admin.create_integration(tool="greenhouse", origin_id=CUSTOMER)
    created_at = time.monotonic()
    assert integration["webhook"]["status_code"] == 200
    assert integration["webhook"]["json"]["packages_sync_requested"] is True
    _wait(
        lambda: _new_asset_run(live.home, PACKAGE_SYNC_DAG_ID, before_sync),
        60,
        "an asset-triggered kombo_package_sync run",
    )
    assert pending_wakeups(store, "integrations") == 0
    # ... which publishes the customer's packages to Kombo straight away.
    packages = _wait(
        lambda: kombo_sandbox.admin.list_packages(integration["id"]), 60, "packages published to the sandbox"
    )
    assert [package["id"] for package in packages] == ["pkg-1"]
    print(f"packages published {time.monotonic() - created_at:.1f} s after integration-created")

    order = kombo_sandbox.admin.create_order(integration["id"], "pkg-1")
    sent_at = time.monotonic()
    assert order["webhook"]["status_code"] == 200, order["webhook"]

    def asset_run():
        return _new_asset_run(live.home, DAG_ID, before)

    run = _wait(asset_run, 60, "an asset-triggered kombo_order_intake run")
    started_after = time.monotonic() - sent_at
    assert pending_wakeups(store, "orders") == 0  # the triggerer consumed the request
    print(f"asset-triggered run {run['run_id']} {started_after:.1f} s after the webhook")

    def invited():
        record = OrderRepository(store).get(order["id"])
        return record if record is not None and record.state == "invited" else None

    record = _wait(invited, 90, "the order invited by the woken intake run")
    assert record.channel == "platform" and record.first_seen_via == "webhook"
    print(f"order invited {time.monotonic() - sent_at:.1f} s after the webhook")
