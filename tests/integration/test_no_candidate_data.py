"""Logs and alerts never hold candidate data: canary candidates (a unique e-mail, names, phone) go through the
real pipeline (Kombo's signed webhook -> the webhook app -> kombo_order_intake -> the platform invitation -> the
warehouse -> kombo_result_writeback -> kombo_housekeeping, with a failed run that alerts), then every log file
the run wrote, the captured logging and output, and every alert are searched for the canaries."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore
from tests.airflow_support import ensure_airflow_db
from tests.integration.intake_helpers import register
from tests.support.candidate_data import candidate_data_in_files, candidate_data_in_texts, log_files

pytestmark = pytest.mark.airflow

SALT = "canary-test-salt-0123456789"
ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def run_dag_logged(dag_id: str, logs: Path, conf: dict[str, Any] | None = None) -> int:
    """`airflow dags test` at INFO level (the test session runs Airflow at WARNING), its whole output written to
    a log file under `logs`, as a team running the DAG by hand would keep it; returns the exit code."""
    ensure_airflow_db()
    env = {
        **os.environ,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
    }
    args = [AIRFLOW, "dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{dag_id}-{len(list(logs.iterdir()))}.log").open("w") as out:
        return subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300).returncode


def canaries() -> list[dict[str, str]]:
    token = uuid.uuid4().hex[:10]
    return [
        {"remote_id": f"cand-{token}-{n}", "email": f"canary.{token}.{n}@candidates.example",
         "first_name": f"Canaryfirst{token}{n}", "last_name": f"Canarylast{token}{n}",
         "phone": f"+49 155 {int(token[:6], 16) % 10000:04d} {n}{n}{n}"}
        for n in range(2)
    ]  # fmt: skip


def patterns_for(candidates: list[dict[str, str]]) -> list[re.Pattern[str]]:
    values = [c[key] for c in candidates for key in ("email", "first_name", "last_name", "phone")]
    # Also the e-mail's local part alone, and the phone without spaces.
    values += [c["email"].split("@")[0] for c in candidates] + [
        c["phone"].replace(" ", "") for c in candidates
    ]
    return [re.compile(re.escape(value), re.IGNORECASE) for value in values]


@pytest.fixture
def pipeline(monkeypatch, tmp_path, kombo_sandbox, platform_standin, webhook_recorder):  # type: ignore[no-untyped-def]
    """Connections, settings and the webhook: Kombo's deliveries reach the real webhook app (in-process)."""
    from fastapi.testclient import TestClient

    from kombo_sync.webhooks.app import create_app

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    connections = {
        "KOMBO_DEFAULT": {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key,
                          "extra": {"max_retries": 2, "backoff_base": 0.05}},
        "KOMBO_STATE": {"conn_type": "generic", "extra": {"sqlalchemy_url": store.url}},
        "KOMBO_PLATFORM": {"conn_type": "http", "host": platform_standin.url, "password": platform_standin.api_key},
        "KOMBO_WAREHOUSE": {"conn_type": "generic", "extra": {"sqlalchemy_url": platform_standin.warehouse_url}},
        "KOMBO_ALERTS": {"conn_type": "http", "host": f"{webhook_recorder.url}/alerts"},
        "KOMBO_ERASURE_SALT": {"conn_type": "generic", "password": SALT},
    }  # fmt: skip
    for name, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(value))
    monkeypatch.setenv("KOMBO_WEBHOOK_SECRET", kombo_sandbox.webhook_secret)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump({
            "intake": {"retry_backoff_seconds": 0},
            "writeback": {"insecure_url_hosts": ["127.0.0.1"], "max_concurrency": 8},
            "alerts": {"channels": {"webhook": {"conn_id": "kombo_alerts", "include_details": True}},
                       "repeat_minutes": 0},
        })
    )  # fmt: skip
    monkeypatch.setenv("KOMBO_SYNC_CONFIG", str(config))

    webhook_app = TestClient(create_app(), raise_server_exceptions=False)

    def respond(received: Any) -> tuple[int, Any]:
        if not received.path.startswith("/kombo/webhooks"):
            return 200, {}  # an alert
        headers = {k: v for k, v in received.headers.items() if k.lower() not in ("host", "content-length")}
        answer = webhook_app.post("/webhooks", content=received.body, headers=headers)
        return answer.status_code, answer.json()

    webhook_recorder.responder = respond
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    yield store
    kombo_sandbox.set_webhook(None)
    webhook_app.close()
    store.dispose()


def test_no_log_or_alert_holds_candidate_data(  # type: ignore[no-untyped-def]
    pipeline, kombo_sandbox, platform_standin, webhook_recorder, caplog, capfd, tmp_path, request
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kombo_sync")
    logs = tmp_path / "logs"
    # Airflow's logging setup replaces the root handlers (caplog's too): the in-process webhook's lines go to a
    # log file of their own, as the api-server's would.
    logs.mkdir(parents=True, exist_ok=True)
    in_process = logging.FileHandler(logs / "in-process.log")
    in_process.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger("kombo_sync").addHandler(in_process)
    request.addfinalizer(lambda: logging.getLogger("kombo_sync").removeHandler(in_process))
    store: StateStore = pipeline
    candidates = canaries()
    patterns = patterns_for(candidates)
    (integration,) = register(store, kombo_sandbox, channel="platform")

    order_ids = []
    for candidate in candidates:
        created = kombo_sandbox.admin.create_order(
            integration, "py-basics", candidate=candidate, application={"remote_id": f"app-{candidate['remote_id']}"},
            job={"remote_id": "job-1", "name": "Data Engineer"}, deliver_webhook=True,
        )  # fmt: skip
        assert created["webhook"]["status_code"] == 200, created["webhook"]
        order_ids.append(created["id"])
    repo = OrderRepository(store)
    assert {repo.get(i).first_seen_via for i in order_ids} == {"webhook"}  # type: ignore[union-attr]

    assert run_dag_logged("kombo_order_intake", logs) == 0
    assert {repo.get(i).state for i in order_ids} == {"invited"}  # type: ignore[union-attr]
    # Positive control: the canaries did reach the channel that needs them.
    assert candidates[0]["email"] in json.dumps(platform_standin.admin.invitations())

    platform_standin.admin.simulate(order_ids=order_ids, seed=5, cancel_rate=0.0)
    assert run_dag_logged("kombo_result_writeback", logs) == 0
    assert all(kombo_sandbox.admin.get_order(i)["result"] for i in order_ids)

    # Erasure on request through the DAG param, then a bad address: the run fails and is alerted.
    assert run_dag_logged("kombo_housekeeping", logs, {"erase_emails": [candidates[0]["email"]]}) == 0
    run_dag_logged("kombo_housekeeping", logs, {"erase_emails": [candidates[1]["email"], "not-an-address"]})
    assert repo.get(order_ids[1]).candidate_email == candidates[1]["email"]  # type: ignore[union-attr]
    alerts = [r for r in webhook_recorder.received if r.path.startswith("/alerts")]
    assert alerts, "the failed run sent no alert (the alert path was not exercised)"
    assert repo.get(order_ids[0]).candidate_email is None  # type: ignore[union-attr]

    # Every log file the run wrote: Airflow's home (task logs, dag-processor, ...), this test's folders.
    files = log_files(Path(os.environ["AIRFLOW_HOME"]), tmp_path, Path(os.environ["KOMBO_SYNC_HOME"]))
    captured = capfd.readouterr()
    texts = [
        ("captured logging", caplog.text),
        ("captured stdout", captured.out),
        ("captured stderr", captured.err),
        *((f"alert {n}", alert.body.decode(errors="replace")) for n, alert in enumerate(alerts)),
    ]
    # The scan sees what it must: the tasks' INFO lines and the webhook's were captured, and a planted canary
    # would be found.
    task_logs = "".join(path.read_text(errors="replace") for path in files)
    assert "invited via platform" in task_logs and "erasure on request" in task_logs
    assert "order(s) recorded via webhook" in (logs / "in-process.log").read_text()
    assert candidate_data_in_texts([("control", f"x {candidates[1]['phone']} y")], patterns)
    found = candidate_data_in_files(files, patterns) + candidate_data_in_texts(texts, patterns)
    assert found == [], found
