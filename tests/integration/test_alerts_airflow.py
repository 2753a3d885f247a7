"""KomboAlertNotifier inside Airflow itself: a DAG whose task fails, run with dag.test() in a child process
(its own Airflow home and dags folder), with the notifier as the task's and the DAG's on_failure_callback,
configured only through pipeline.yaml and an AIRFLOW_CONN_* connection, as in production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kombo_sync.alerts.ledger import AlertLedger
from kombo_sync.state.store import StateStore
from sandbox.testing import WebhookRecorder

ROOT = Path(__file__).resolve().parents[2]
CANARY = "zebulon.quackenbush@canary-candidate.example"

DAG_FILE = """
from datetime import UTC, datetime

from airflow.sdk import dag, task

from kombo_sync.alerts import KomboAlertNotifier


@dag(
    dag_id="alerts_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    on_failure_callback=KomboAlertNotifier(),
)
def alerts_probe():
    @task(retries=0, on_failure_callback=KomboAlertNotifier())
    def send():
        raise ValueError("candidate CANARY Zebulon Quackenbush +1 555 0199 4242")

    send()


alerts_probe()

if __name__ == "__main__":
    from airflow.dag_processing.dagbag import DagBag

    run = DagBag(dag_folder=__file__).dags["alerts_probe"].test()
    print("STATE", run.state)
""".replace("CANARY", CANARY)


@pytest.mark.airflow
@pytest.mark.slow
def test_a_failed_dag_run_alerts_once_through_airflow_callbacks(
    tmp_path: Path, webhook_recorder: WebhookRecorder
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    dag_file = dags / "alerts_probe.py"
    dag_file.write_text(DAG_FILE)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "alerts:\n"
        "  channels:\n"
        "    webhook: {conn_id: kombo_alerts_webhook}\n"
        "  airflow_base_url: https://airflow.provider.example\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "KOMBO_SYNC_CONFIG": str(config),
        "KOMBO_STATE_DB_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "AIRFLOW_CONN_KOMBO_ALERTS_WEBHOOK": json.dumps(
            {"conn_type": "http", "host": f"{webhook_recorder.url}/hooks/alerts"}
        ),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=env, timeout=300)
    result = subprocess.run(
        [sys.executable, str(dag_file)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert "STATE failed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    # The task's callback sent it; the DAG's callback for the same failure found it in alerts_sent.
    [received] = webhook_recorder.received
    text = received.json()["text"]
    assert text.startswith("DAG run failed: alerts_probe (task send)")
    assert "Failed task(s): send" in text and "Error type: ValueError" in text
    assert "https://airflow.provider.example/dags/alerts_probe/runs/manual__" in text
    for canary in (CANARY, "Zebulon", "Quackenbush", "555 0199"):
        assert canary not in received.body.decode()
    store = StateStore(env["KOMBO_STATE_DB_URL"])
    [(subject, times)] = AlertLedger(store).sent("failed_run").items()
    store.dispose()
    assert subject.startswith("alerts_probe/manual__") and subject.endswith("/send") and times == 1
