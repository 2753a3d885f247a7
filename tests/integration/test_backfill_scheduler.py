"""Backfills as a data team runs them, with a real scheduler (LocalExecutor, api-server, dag-processor, metadata
on PostgreSQL): `airflow backfill create` of the intake over two past hours, twice (the second reads nothing
from Kombo and changes nothing), and the UI's backfill (`POST /api/v2/backfills`) of the write-back over results
that landed in past hours (each sent once; a second backfill sends nothing).

Slow (about a minute and a half): it starts Airflow's components as processes and stops them at the end.
The schedule is set to hourly for this test (`KOMBO_INTAKE_SCHEDULE`), so two hours are two runs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa
import yaml

from tests.integration.intake_helpers import (
    FROM_EMAIL,
    new_order,
    order_states,
    platform_creations,
    register,
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
def airflow_metadata_url(make_pg_database) -> str:
    """A fresh PostgreSQL database for Airflow's metadata (on SQLite the api-server's backfill route and the
    scheduler contend for the one write lock: the UI then shows database errors)."""
    return str(make_pg_database())


@pytest.fixture
def airflow_components(
    tmp_path, state_store, kombo_sandbox, platform_standin, smtp_server, airflow_metadata_url
) -> Iterator[dict[str, str]]:
    """A private Airflow (own home, metadata DB on PostgreSQL) with scheduler, dag-processor and api-server."""
    home = tmp_path / "airflow"
    home.mkdir()
    port = _free_port()
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"intake": {"retry_backoff_seconds": 0}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url,
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
            "KOMBO_WRITEBACK_SCHEDULE": "0 * * * *",
            # The REST API's backfill route (what the UI's "Backfill" dialog calls) with a token, no password.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "KOMBO_SYNC_CONFIG": str(config),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
            "AIRFLOW_CONN_KOMBO_DEFAULT": json.dumps(
                {"conn_type": "http", "host": kombo_sandbox.api_url, "password": kombo_sandbox.api_key}
            ),
            "AIRFLOW_CONN_KOMBO_STATE": json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}}),
            "AIRFLOW_CONN_KOMBO_PLATFORM": json.dumps(
                {"conn_type": "http", "host": platform_standin.url, "password": platform_standin.api_key}
            ),
            "AIRFLOW_CONN_KOMBO_WAREHOUSE": json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": f"sqlite:///{tmp_path / 'warehouse.db'}"}}
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
        env["_API"] = f"http://127.0.0.1:{port}"
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


class _Metadata:
    """Airflow's metadata DB (PostgreSQL here, as in production), read with the DB-API's `?`-style queries."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.postgres = url.startswith("postgresql")

    def __enter__(self) -> _Metadata:
        self.conn = self.engine.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.conn.close()
        self.engine.dispose()

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sa.CursorResult[Any]:
        return self.conn.exec_driver_sql(sql.replace("?", "%s") if self.postgres else sql, params)


def _metadata(env: dict[str, str]) -> _Metadata:
    return _Metadata(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])


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


def _run_backfill(
    env: dict[str, str], start: datetime, end: datetime, dag_id: str = DAG_ID
) -> list[tuple[str, str]]:
    """`airflow backfill create` (no --max-active-runs: the DAGs must be safe without it), then wait until the
    scheduler closes the backfill; its runs' (id, state)."""
    for _attempt in range(5):
        created = _airflow(
            env, "backfill", "create", "--dag-id", dag_id, "--from-date", start.isoformat(),
            "--to-date", end.isoformat(), "--reprocess-behavior", "completed",
        )  # fmt: skip
        # The running scheduler holds SQLite's write lock now and then; the CLI does not wait for it.
        if created.returncode == 0 or "database is locked" not in created.stderr:
            break
        time.sleep(2)
    assert created.returncode == 0, created.stderr[-2000:]
    return _wait_backfill(env, dag_id)


def _ui_backfill(env: dict[str, str], dag_id: str, start: datetime, end: datetime) -> list[tuple[str, str]]:
    """The UI's "Backfill" dialog: `POST /api/v2/backfills` with one run at a time, as the README advises."""
    import httpx

    with httpx.Client(base_url=env["_API"], timeout=30) as api:
        token = api.get("/auth/token").json()["access_token"]
        body = {"dag_id": dag_id, "from_date": start.isoformat(), "to_date": end.isoformat(),
                "max_active_runs": 1, "reprocess_behavior": "completed"}  # fmt: skip
        for _attempt in range(5):
            created = api.post("/api/v2/backfills", json=body, headers={"Authorization": f"Bearer {token}"})
            if created.status_code != 503:  # SQLite busy under the scheduler: the UI shows it; try again
                break
            time.sleep(2)
    assert created.status_code == 200, created.text
    return _wait_backfill(env, dag_id)


def _wait_backfill(env: dict[str, str], dag_id: str) -> list[tuple[str, str]]:
    with _metadata(env) as db:
        backfill_id = db.execute("SELECT max(id) FROM backfill WHERE dag_id = ?", (dag_id,)).fetchone()[0]

    def closed() -> bool:  # the scheduler closes a backfill once none of its runs is queued or running
        with _metadata(env) as db:
            row = db.execute("SELECT completed_at FROM backfill WHERE id = ?", (backfill_id,)).fetchone()
        return row[0] is not None

    _wait_until(closed, 240, f"backfill {backfill_id} to finish", env)
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
    kombo_sandbox.admin.clear_requests()
    first = _run_backfill(env, start, end)
    assert [state for _, state in first] == ["success", "success"]
    recorded = order_states(state_store)
    assert set(recorded) == set(in_range) and too_old not in recorded
    assert set(recorded.values()) == {"invited"}
    assert platform_creations(platform_standin) == dict.fromkeys(in_range, 1)

    # At most one listing per run (the two backfill runs may overlap without --max-active-runs; the scheduled run
    # that unpausing started lists too), and a second backfill of the same range lists nothing: the first
    # one's polls covered it (kombo_sync.state.coverage).
    assert 1 <= _listings(kombo_sandbox) <= 3
    kombo_sandbox.admin.clear_requests()
    second = _run_backfill(env, start, end)
    # The scheduled run of the latest hour (from hour - 1h15m) may poll only now, queued behind the backfill.
    assert _listings(kombo_sandbox, created_before=start + timedelta(hours=1)) == 0
    assert [run_id for run_id, _ in second] == [run_id for run_id, _ in first]  # the same runs, again
    assert [state for _, state in second] == ["success", "success"]
    assert order_states(state_store) == recorded
    assert platform_creations(platform_standin) == dict.fromkeys(in_range, 1)
    assert set(platform_standin.admin.invitations()["requests_by_order"].values()) == {1}


def _listings(sandbox, *, created_before: datetime | None = None) -> int:  # type: ignore[no-untyped-def]
    """Polls' listings (`created_after`), not the dispatcher's re-checks by id; with `created_before`, only those
    listing from before it (the backfill's hours, not the latest hour's scheduled run, which may poll later)."""
    count = 0
    for request in sandbox.admin.requests(path_prefix="/v1/assessment/orders"):
        values = parse_qs(str(request.get("query") or "")).get("created_after")
        if request["method"] != "GET" or not values:
            continue
        listed_from = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
        if created_before is None or listed_from < created_before:
            count += 1
    return count


@pytest.mark.parametrize("state_store", ["postgres"], indirect=True)
def test_ui_backfill_of_the_writeback_sends_each_past_result_once(
    airflow_components, state_store, kombo_sandbox, platform_standin, tmp_path
):
    """Results that landed in past hours (the scheduled runs missed them) are re-sent by a backfill over those
    hours, started as the UI does; a second backfill of the same range sends nothing."""
    from sandbox import warehouse
    from tests.integration.intake_helpers import (
        intake_kombo_client,
        inviters,
        make_settings,
        platform_inviter,
        run_cycle,
    )

    env = airflow_components
    (integration,) = register(state_store, kombo_sandbox)
    order_ids = [new_order(kombo_sandbox, integration)["id"] for _ in range(3)]
    settings = make_settings()
    run_cycle(state_store, intake_kombo_client(kombo_sandbox), inviters(settings, platform=platform_inviter(platform_standin)),
              settings)  # fmt: skip
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = hour - timedelta(hours=3), hour - timedelta(hours=1, minutes=1)
    engine = warehouse.create_schema(f"sqlite:///{tmp_path / 'warehouse.db'}")
    rows = []
    for n, order_id in enumerate(order_ids):
        row = warehouse.simulated_result(
            order_id, f"inv-{n}", with_report=False, base_url="https://platform.example"
        )
        row["updated_at"] = start + timedelta(minutes=20 + 40 * n)  # inside the two backfilled hours
        row["status"], row["score"] = "completed", 10 + n
        rows.append(row)
    warehouse.write_results(engine, rows)
    engine.dispose()

    def dag_known() -> bool:
        with _metadata(env) as db:
            return (
                db.execute("SELECT 1 FROM serialized_dag WHERE dag_id = 'kombo_result_writeback'").fetchone()
                is not None
            )

    _wait_until(dag_known, 90, "the dag-processor to parse the DAG", env)
    assert _airflow(env, "dags", "unpause", "kombo_result_writeback").returncode == 0
    first = _ui_backfill(env, "kombo_result_writeback", start, end)
    assert [state for _, state in first] == ["success", "success"]
    for order_id in order_ids:
        order = kombo_sandbox.admin.get_order(order_id)
        assert order["status"] == "COMPLETED"
        assert [w["outcome"] for w in order["results"]] == ["applied"], order["results"]
    puts = sum(1 for r in kombo_sandbox.admin.requests() if r["method"] == "PUT")

    second = _run_backfill(env, start, end, dag_id="kombo_result_writeback")
    assert [state for _, state in second] == ["success", "success"]
    assert sum(1 for r in kombo_sandbox.admin.requests() if r["method"] == "PUT") == puts  # nothing re-sent
