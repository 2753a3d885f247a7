"""`airflow backfill create` over two past hours, run by a real scheduler (LocalExecutor, api-server,
dag-processor, SQLite metadata DB), twice: the second backfill re-polls the range and changes nothing.

Slow (about a minute and a half): it starts Airflow's components as processes and stops them at the end.
The schedule is set to hourly for this test (`KOMBO_INTAKE_SCHEDULE`), so two hours are two runs.
"""

# ruff: noqa: F811 (pytest fixtures imported from the helpers module)
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.integration.test_intake_helpers import (  # noqa: F401
    FROM_EMAIL,
    new_order,
    order_states,
    platform_creations,
    register,
    smtp_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "kombo_order_intake"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _airflow(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def airflow_components(
    tmp_path, state_store, kombo_sandbox, platform_standin, smtp_server
) -> Iterator[dict[str, str]]:
    """A private Airflow (own home and SQLite metadata DB) with scheduler, dag-processor and api-server running."""
    home = tmp_path / "airflow"
    home.mkdir()
    port = _free_port()
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"intake": {"retry_backoff_seconds": 0}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "no-plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "KOMBO_INTAKE_SCHEDULE": "0 * * * *",
            "KOMBO_SYNC_CONFIG": str(config),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
            "AIRFLOW_CONN_KOMBO_DEFAULT": json.dumps(
                {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key}
            ),
            "AIRFLOW_CONN_KOMBO_STATE": json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}}),
            "AIRFLOW_CONN_KOMBO_PLATFORM": json.dumps(
                {"conn_type": "http", "host": platform_standin.url, "password": platform_standin.api_key}
            ),
            "AIRFLOW_CONN_KOMBO_SMTP": json.dumps(
                {"conn_type": "smtp", "host": smtp_server.host, "port": smtp_server.port,
                 "extra": {"from_email": FROM_EMAIL, "disable_tls": True}}
            ),
        }
    )  # fmt: skip
    (tmp_path / "no-plugins").mkdir()
    migrated = _airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert _airflow(env, "pools", "set", "kombo_api", "4", "Kombo calls").returncode == 0
    processes = []
    logs = tmp_path / "logs"
    logs.mkdir()
    for component in ("api-server", "scheduler", "dag-processor"):
        log = open(logs / f"{component}.log", "wb")
        processes.append(
            (subprocess.Popen([str(BIN / "airflow"), component], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True), log)
        )  # fmt: skip
    try:
        env["_LOGS"] = str(logs)
        yield env
    finally:
        for process, _log in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, log in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()


def _metadata(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db", timeout=30)


def _wait_until(condition, timeout: float, what: str, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    tails = {p.name: p.read_text(errors="replace")[-3000:] for p in Path(env["_LOGS"]).glob("*.log")}
    with _metadata(env) as db:
        runs = db.execute("SELECT run_id, run_type, state FROM dag_run").fetchall()
        tasks = db.execute("SELECT run_id, task_id, state, pool FROM task_instance").fetchall()
    raise AssertionError(f"timed out waiting for {what}; runs {runs}; tasks {tasks}; logs: {tails}")


def _run_backfill(env: dict[str, str], start: datetime, end: datetime) -> list[tuple[str, str]]:
    """`airflow backfill create`, then wait until the scheduler closes the backfill; its runs' (id, state)."""
    for _attempt in range(5):
        created = _airflow(
            env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", start.isoformat(),
            "--to-date", end.isoformat(), "--reprocess-behavior", "completed",
        )  # fmt: skip
        # The running scheduler holds SQLite's write lock now and then; the CLI does not wait for it.
        if created.returncode == 0 or "database is locked" not in created.stderr:
            break
        time.sleep(2)
    assert created.returncode == 0, created.stderr[-2000:]
    with _metadata(env) as db:
        backfill_id = db.execute("SELECT max(id) FROM backfill WHERE dag_id = ?", (DAG_ID,)).fetchone()[0]

    def closed() -> bool:  # the scheduler closes a backfill once none of its runs is queued or running
        with _metadata(env) as db:
            row = db.execute("SELECT completed_at FROM backfill WHERE id = ?", (backfill_id,)).fetchone()
        return row[0] is not None

    _wait_until(closed, 150, f"backfill {backfill_id} to finish", env)
    with _metadata(env) as db:
        return db.execute(
            "SELECT run_id, state FROM dag_run WHERE backfill_id = ? ORDER BY logical_date", (backfill_id,)
        ).fetchall()


# One database is enough here (the fast tests cover both); PostgreSQL, as in a multi-process deployment.
@pytest.mark.parametrize("state_store", ["postgres"], indirect=True)
def test_backfill_create_over_two_past_hours_is_idempotent(
    airflow_components, state_store, kombo_sandbox, platform_standin
):
    env = airflow_components
    (integration,) = register(state_store, kombo_sandbox)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # Logical dates start and start+1h. The range stops short of the run that unpausing schedules (the latest
    # hour): reprocessing a run the scheduler is working on races it (Airflow 3.3 then restarts its loop).
    start, end = hour - timedelta(hours=3), hour - timedelta(hours=1, minutes=1)
    too_old = new_order(kombo_sandbox, integration, created_at=start - timedelta(minutes=45))["id"]
    in_range = [
        new_order(kombo_sandbox, integration, created_at=start + timedelta(minutes=m))["id"]
        for m in (10, 40, 70)
    ]

    def dag_known() -> bool:
        with _metadata(env) as db:
            return (
                db.execute("SELECT 1 FROM serialized_dag WHERE dag_id = ?", (DAG_ID,)).fetchone() is not None
            )

    _wait_until(dag_known, 90, "the dag-processor to parse the DAG", env)
    # The scheduler runs no task of a paused DAG, backfill or not (new DAGs start paused).
    assert _airflow(env, "dags", "unpause", DAG_ID).returncode == 0

    # Hourly schedule: one run per hour of [start, end); each polls from its interval start minus 15 minutes.
    first = _run_backfill(env, start, end)
    assert [state for _, state in first] == ["success", "success"]
    recorded = order_states(state_store)
    assert set(recorded) == set(in_range) and too_old not in recorded
    assert set(recorded.values()) == {"invited"}
    assert platform_creations(platform_standin) == dict.fromkeys(in_range, 1)

    second = _run_backfill(env, start, end)
    assert [run_id for run_id, _ in second] == [run_id for run_id, _ in first]  # the same runs, again
    assert [state for _, state in second] == ["success", "success"]
    assert order_states(state_store) == recorded
    assert platform_creations(platform_standin) == dict.fromkeys(in_range, 1)
    assert set(platform_standin.admin.invitations()["requests_by_order"].values()) == {1}
