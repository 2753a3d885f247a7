"""`make up` as a user meets it: `python -m sandbox.demo --up` started as a subprocess, left alone, stopped
with SIGTERM.

Slow (about 4-5 minutes on 2 cores): the trial migrates its own Airflow metadata DB, starts the api-server,
scheduler, dag-processor and triggerer, publishes the catalog, creates orders, and then waits for one-minute
schedules to invite the candidates, for the candidates to finish on their own (`--finish-after`) and for the
write-back to bring their results to the Kombo sandbox, and for a scheduled reconcile run (every 5 minutes in
the trial) to succeed. Then it SIGKILLs the scheduler and waits for the trial
to restart it and for the next scheduled run to succeed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from sandbox.testing import SandboxAdmin

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = (
    480  # the first run migrates Airflow's metadata DB (about a minute on a busy 2-core machine)
)
FLOW_TIMEOUT = 330  # results must flow back within about 5 minutes of the trial being up


def _output(path: Path) -> str:
    return path.read_text(errors="replace")


def _wait_for_banner(proc: subprocess.Popen[bytes], out: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = _output(out)
        if "Ctrl-C stops everything." in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"the trial exited with {proc.returncode} before it was up:\n{text[-6000:]}")
        time.sleep(2)
    raise AssertionError(f"the trial was not up after {STARTUP_TIMEOUT} s:\n{_output(out)[-6000:]}")


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in the trial's output:\n{text[-4000:]}"
    return match.group(1)


def _tree(pid: int) -> set[int]:
    try:
        return {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> list[str]:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return alive


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _listeners(port: int) -> list[tuple[str, int | None]]:
    return [
        (conn.laddr.ip, conn.pid)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    ]


def test_make_up_runs_the_pipeline_on_its_own_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "up.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KOMBO_"))}
    env["KOMBO_SYNC_HOME"] = str(tmp_path / "not-this-one")  # --home wins over the environment
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.demo", "--up", "--home", str(home), "--finish-after", "15"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    started: set[int] = set()
    stopped_cleanly = False
    try:
        text = _wait_for_banner(proc, out)
        base_url = _field(r"Airflow UI\s+(http://127\.0\.0\.1:\d+)\s", text)
        user = _field(r"user: (\S+)", text)
        password = _field(r"password: (\S+)", text)
        cli = _field(r"^\s+(export AIRFLOW_HOME=.*)$", text)
        kombo_url = _field(r"Kombo sandbox\s+(http://127\.0\.0\.1:\d+)/v1", text)
        api_port = int(base_url.rsplit(":", 1)[1])
        airflow_home = Path(_field(r"AIRFLOW_HOME=(\S+)", cli))
        assert airflow_home == home / "airflow"
        started = _tree(proc.pid)

        # The api-server listens on 127.0.0.1 only.
        listening = _listeners(api_port)
        assert listening and {ip for ip, _ in listening} == {"127.0.0.1"}, listening

        # The printed login works.
        token = httpx.post(
            f"{base_url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        assert token.status_code == 201, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

        # The connections are in Airflow's metadata DB, seen by the CLI with the printed line, and no Airflow
        # component gets them as AIRFLOW_CONN_* variables (which would hide edits made in the UI).
        listed = subprocess.run(
            ["bash", "-c", f"{cli} && airflow connections list -o json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr[-3000:]
        conn_ids = {conn["conn_id"] for conn in json.loads(listed.stdout[listed.stdout.index("[") :])}
        assert {"kombo_default", "kombo_state", "kombo_warehouse", "kombo_platform", "kombo_smtp",
                "kombo_webhook"} <= conn_ids  # fmt: skip
        for pid in _tree(proc.pid) - {proc.pid}:
            try:
                environ = psutil.Process(pid).environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            assert not [key for key in environ if key.startswith("AIRFLOW_CONN_")], (pid, sorted(environ))

        # Left alone, the schedules invite, the candidates finish and their results reach Kombo.
        def scheduled_successes(dag_id: str) -> list[dict[str, Any]]:
            response = httpx.get(
                f"{base_url}/api/v2/dags/{dag_id}/dagRuns",
                params={"run_type": "scheduled", "state": "success"},
                headers=headers,
                timeout=30,
            )
            return list(response.json()["dag_runs"]) if response.status_code == 200 else []

        admin = SandboxAdmin(kombo_url)
        deadline = time.monotonic() + FLOW_TIMEOUT
        intake: list[dict[str, Any]] = []
        writeback: list[dict[str, Any]] = []
        catalog: list[dict[str, Any]] = []
        reconcile: list[dict[str, Any]] = []
        written: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            started |= _tree(proc.pid)
            assert proc.poll() is None, _output(out)[-4000:]
            intake = scheduled_successes("kombo_order_intake")
            writeback = scheduled_successes("kombo_result_writeback")
            catalog = scheduled_successes("kombo_package_sync")  # every 2 minutes in the trial
            reconcile = scheduled_successes("kombo_reconcile")  # every 5 minutes in the trial
            written = [order for order in admin.list_orders() if order.get("result")]
            if intake and writeback and catalog and reconcile and written:
                break
            time.sleep(10)
        with sqlite3.connect(airflow_home / "airflow.db", timeout=30) as db:
            runs = db.execute("SELECT dag_id, run_type, state FROM dag_run ORDER BY id").fetchall()
            retried = db.execute(
                "SELECT dag_id, task_id, run_id, state, try_number FROM task_instance WHERE try_number > 1"
            ).fetchall()
        logs = {p.name: p.read_text(errors="replace")[-1500:] for p in (home / "logs").glob("*.log")}
        context = f"runs {runs}; output {_output(out)[-3000:]}; logs {logs}"
        assert intake, f"no scheduled kombo_order_intake run succeeded; {context}"
        assert writeback, f"no scheduled kombo_result_writeback run succeeded; {context}"
        assert catalog, f"no scheduled kombo_package_sync run succeeded; {context}"
        assert reconcile, f"no scheduled kombo_reconcile run succeeded; {context}"
        assert written, f"no result reached the Kombo sandbox; {context}"
        # Nothing ran before the api-server answered, so no first try failed with `Connection refused`.
        assert not retried, f"tasks needed retries: {retried}; {context}"
        admin.close()

        # A scheduler that dies is noticed and restarted (`airflow standalone` leaves it dead), its orphaned
        # LocalExecutor workers are stopped, and the schedules carry on.
        (scheduler,) = [
            child
            for child in psutil.Process(proc.pid).children()
            if child.cmdline()[-1:] == ["scheduler"] and "airflow" in " ".join(child.cmdline())
        ]
        old_group = set(_tree(scheduler.pid))
        started |= old_group
        killed_at = time.time()
        scheduler.kill()
        deadline = time.monotonic() + 240
        restarted_runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not restarted_runs:
            time.sleep(10)
            started |= _tree(proc.pid)
            assert proc.poll() is None, _output(out)[-4000:]
            restarted_runs = [
                run
                for run in scheduled_successes("kombo_order_intake")
                if run.get("start_date") and _epoch(run["start_date"]) > killed_at + 1
            ]
        assert "restarted the scheduler" in _output(out), _output(out)[-3000:]
        assert restarted_runs, f"no scheduled intake run succeeded after the restart: {_output(out)[-3000:]}"
        assert not _alive(old_group), f"the dead scheduler's processes are left: {_alive(old_group)}"

        started |= _tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        stopped_cleanly = True
    finally:
        if not stopped_cleanly and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        leftovers = _alive(started)
        for pid in started:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                continue
    assert proc.returncode == 0, _output(out)[-3000:]
    assert "stopped" in _output(out).splitlines()[-1]
    assert not leftovers, f"still running after the trial stopped: {leftovers}"
    assert not _listeners(api_port)
