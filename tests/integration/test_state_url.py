"""Where the state store URL comes from: Airflow connection (inside Airflow), KOMBO_STATE_DB_URL, local SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kombo_sync.state import store as store_module
from kombo_sync.state.store import StateStore, resolve_state_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _outside_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "_AIRFLOW_PROCESS_CONTEXT",
        "AIRFLOW_CONN_KOMBO_STATE",
        "KOMBO_STATE_DB_URL",
        "KOMBO_SYNC_HOME",
    ):
        monkeypatch.delenv(name, raising=False)


def test_environment_url_and_postgres_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMBO_STATE_DB_URL", "postgres://pipeline:s3cret@db.internal:5432/state")
    assert resolve_state_url() == "postgresql+psycopg://pipeline:s3cret@db.internal:5432/state"
    monkeypatch.setenv("KOMBO_STATE_DB_URL", "postgresql://db.internal/state")
    assert resolve_state_url() == "postgresql+psycopg://db.internal/state"
    assert StateStore("postgres://db.internal/state").url == "postgresql+psycopg://db.internal/state"


def test_default_is_sqlite_under_kombo_sync_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "nested" / "home"
    monkeypatch.setenv("KOMBO_SYNC_HOME", str(home))
    assert resolve_state_url() == f"sqlite:///{home / 'state.db'}"
    assert home.is_dir()


def test_default_home_is_project_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(store_module, "PROJECT_ROOT", tmp_path)
    assert resolve_state_url() == f"sqlite:///{tmp_path / '.local' / 'state.db'}"
    assert (tmp_path / ".local").is_dir()


def test_outside_airflow_the_connection_is_not_looked_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.sdk import BaseHook

    def forbidden(conn_id: str) -> None:
        raise AssertionError(f"looked up {conn_id} outside Airflow")

    monkeypatch.setattr(BaseHook, "get_connection", forbidden)
    monkeypatch.setenv("KOMBO_STATE_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_state_url() == f"sqlite:///{tmp_path / 'env.db'}"


def test_airflow_connection_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KOMBO_STATE_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_STATE", "postgres://pipeline:pw@db.internal:5432/state")
    assert resolve_state_url() == "postgresql+psycopg://pipeline:pw@db.internal:5432/state"
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_STATE", f"sqlite:///{tmp_path / 'airflow.db'}")
    assert resolve_state_url() == f"sqlite:///{tmp_path / 'airflow.db'}"


def test_in_a_task_the_connection_is_read_and_missing_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.execution_time import task_runner

    asked: list[str] = []
    connection = SimpleNamespace(
        conn_type="postgres",
        host="db.internal",
        login="pipeline",
        password="pw",
        port=5432,
        schema="state",
        extra=None,
        extra_dejson={},
    )

    def get_connection(conn_id: str) -> SimpleNamespace:
        asked.append(conn_id)
        if conn_id != "kombo_state":
            raise AirflowNotFoundException(conn_id)
        return connection

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", object(), raising=False)
    monkeypatch.setattr(BaseHook, "get_connection", get_connection)
    monkeypatch.setenv("KOMBO_STATE_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_state_url() == "postgresql+psycopg://pipeline:pw@db.internal:5432/state"
    assert resolve_state_url("other_state") == f"sqlite:///{tmp_path / 'env.db'}"
    assert asked == ["kombo_state", "other_state"]


def test_airflow_server_process_without_metadata_db_falls_back(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "_AIRFLOW_PROCESS_CONTEXT": "server",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'missing' / 'airflow.db'}",
        "KOMBO_STATE_DB_URL": f"sqlite:///{tmp_path / 'env.db'}",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from kombo_sync.state.store import resolve_state_url; print(resolve_state_url())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"sqlite:///{tmp_path / 'env.db'}"
