"""`docker-compose.yaml` run as local processes: the CeleryExecutor deployment on one machine, for tests and
benchmarks that must exercise what the compose file deploys without a Docker engine.

`LocalCeleryDeployment` reads the compose file with `ComposeFile`, maps the container world onto this machine
(service names -> loopback addresses of a PostgreSQL and Redis that already run, image paths -> the project and a
private AIRFLOW_HOME, fresh databases and a dedicated Redis DB number), and starts each Airflow service as its
own process group. Only what must differ on one machine is overridden (ports, one api-server worker); the
overrides are listed in `machine_overrides()`. Everything it started is stopped by `stop()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kombo_sync.connections import normalize_url
from kombo_sync.deploy import bootstrap
from tests.support.compose import ComposeFile, ProcessSpec, read_env_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IMAGE_HOME = "/usr/local/airflow"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Server:
    """A PostgreSQL server to create the deployment's databases on."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""

    @classmethod
    def from_url(cls, url: str) -> Server:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return cls(
            parsed.host or "127.0.0.1",
            parsed.port or 5432,
            parsed.username or "postgres",
            parsed.password or "",
        )

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"{driver}://{auth}@{self.host}:{self.port}/{database}"


@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


@dataclass
class LocalCeleryDeployment:
    """The compose file's Airflow services as local processes against loopback PostgreSQL and Redis."""

    work_dir: Path
    postgres: Server = field(default_factory=Server)
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 13
    compose_file: Path = PROJECT_ROOT / "docker-compose.yaml"
    env_example: Path = PROJECT_ROOT / ".env.example"
    dags_folder: Path = PROJECT_ROOT / "dags"
    variables: dict[str, str] = field(default_factory=dict)
    worker_concurrency: int | None = None
    # The pipeline's settings file (in the image: include/config/pipeline.yaml); None keeps that default.
    pipeline_config: Path | None = None
    # Environment every process gets on top of the compose file's (e.g. a DAG's schedule for a benchmark).
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: "kombo_so_" + uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        self.airflow_home = self.work_dir / "airflow"
        self.log_dir = self.work_dir / "logs"
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.metadata_db = f"{self.name}_airflow"
        self.state_db = f"{self.name}_state"
        self.admin_password = secrets.token_urlsafe(12)
        self.processes: list[RunningProcess] = []
        self.compose = self._read_compose()

    # ---- the compose file, mapped onto this machine --------------------------------------------------------
    def _read_compose(self) -> ComposeFile:
        from cryptography.fernet import Fernet

        from kombo_sync.deploy.bootstrap import init_env

        # As a user starts: `.env` from `.env.example` with every `generate-me` replaced by a fresh secret.
        env_file = self.work_dir / ".env"
        init_env(self.env_example, env_file, force=True)
        variables = read_env_file(env_file)
        variables.update(
            {
                "POSTGRES_USER": self.postgres.user,
                "POSTGRES_PASSWORD": self.postgres.password or "trust",
                "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW_ADMIN_PASSWORD": self.admin_password,
                "AIRFLOW_BASE_URL": f"http://127.0.0.1:{self.api_port}",
                "AIRFLOW_UID": str(os.getuid()),
                "AIRFLOW_DAG_REFRESH_INTERVAL": "5",
                "KOMBO_WEBHOOK_SECRET": secrets.token_urlsafe(24),
            }
        )
        if self.worker_concurrency is not None:
            variables["AIRFLOW_WORKER_CONCURRENCY"] = str(self.worker_concurrency)
        variables.update(self.variables)
        self.variables = variables
        return ComposeFile(self.compose_file, variables)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.api_url}/kombo/webhooks"

    @property
    def state_url(self) -> str:
        return self.postgres.url(self.state_db)

    @property
    def metadata_url(self) -> str:
        return self.postgres.url(self.metadata_db)

    def addresses(self) -> dict[str, str]:
        """Container addresses -> this machine's (longest match wins in the rewrite)."""
        pg = f"{self.postgres.host}:{self.postgres.port}"
        return {
            "postgres:5432/airflow": f"{pg}/{self.metadata_db}",
            "postgres:5432/kombo_state": f"{pg}/{self.state_db}",
            "postgres:5432": pg,
            "redis:6379/0": f"{self.redis_host}:{self.redis_port}/{self.redis_db}",
            "redis:6379": f"{self.redis_host}:{self.redis_port}",
            "airflow-apiserver:8080": f"127.0.0.1:{self.api_port}",
        }

    def paths(self) -> dict[str, str]:
        """The image's layout (project copied to /usr/local/airflow) -> the project and a private home."""
        return {
            f"{IMAGE_HOME}/dags": str(self.dags_folder),
            f"{IMAGE_HOME}/plugins": str(PROJECT_ROOT / "plugins"),
            f"{IMAGE_HOME}/include": str(PROJECT_ROOT / "include"),
            IMAGE_HOME: str(self.airflow_home),
        }

    def base_env(self) -> dict[str, str]:
        """The parent environment without any Airflow or pipeline setting, plus what the image's ENV sets."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KOMBO_", "_AIRFLOW"))}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "include"), str(PROJECT_ROOT)])
        env["KOMBO_SYNC_HOME"] = str(self.work_dir / "kombo")
        if self.pipeline_config is not None:
            env["KOMBO_SYNC_CONFIG"] = str(self.pipeline_config)
        env.update(self.extra_env)
        return env

    def machine_overrides(self, service: str, index: int = 0) -> dict[str, str]:
        """What differs only because every service shares this one machine (ports, api-server workers)."""
        overrides = {
            # Containers each have their own ports; here each process needs free ones.
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            # Two cores: one api-server worker process instead of four.
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        return overrides

    def spec(self, service: str, *, index: int = 0, extra_args: list[str] | None = None) -> ProcessSpec:
        name = service if index == 0 else f"{service}-{index + 1}"
        return self.compose.process_spec(
            service,
            addresses=self.addresses(),
            paths=self.paths(),
            base_env=self.base_env(),
            env_overrides=self.machine_overrides(service, index),
            extra_args=extra_args,
            name=name,
        )

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def create_databases(self) -> None:
        bootstrap.ensure_database(self.metadata_url)
        bootstrap.ensure_database(self.state_url)
        self.flush_redis()

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis(host=self.redis_host, port=self.redis_port, db=self.redis_db)
        try:
            client.flushdb()
        finally:
            client.close()

    def drop_databases(self) -> None:
        for url in (self.metadata_url, self.state_url):
            with contextlib.suppress(Exception):
                drop_database(url)
        with contextlib.suppress(Exception):
            self.flush_redis()

    def run_init(self, timeout: float = 240.0) -> None:
        """Run the compose file's `airflow-init` command to completion (migrations, pool, admin password)."""
        spec = self.spec("airflow-init")
        log_path = self.log_dir / "airflow-init.log"
        with open(log_path, "wb") as log:
            proc = subprocess.run(
                spec.argv,
                env=spec.env,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"airflow-init failed (exit {proc.returncode}):\n{tail(log_path)}")

    def start(self, spec: ProcessSpec) -> RunningProcess:
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = open(log_path, "ab")  # closed in stop()
        popen = subprocess.Popen(
            spec.argv,
            env=spec.env,
            cwd=PROJECT_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills its children too
        )
        running = RunningProcess(spec, popen, log_path, log_file)
        self.processes.append(running)
        return running

    def start_services(self, workers: int = 2) -> None:
        """api-server, scheduler, dag-processor, triggerer and `workers` Celery workers, as the compose file runs them."""
        for service in AIRFLOW_SERVICES:
            self.start(self.spec(service))
        for index in range(workers):
            # Each worker its own Celery node name and queue set: the default queue plus one of its own, so a
            # test can pin a task to one worker.
            node = f"worker{index + 1}"
            self.start(
                self.spec(
                    "airflow-worker",
                    index=index,
                    extra_args=["--celery-hostname", f"{node}@%h", "--queues", f"default,{node}"],
                )
            )

    def check_alive(self) -> None:
        for proc in self.processes:
            code = proc.popen.poll()
            if code is not None:
                raise RuntimeError(f"{proc.spec.name} exited with {code}:\n{tail(proc.log_path)}")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the api-server answers its health check and the scheduler and triggerer are healthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5)
                last = response.text
                if response.status_code == 200:
                    health = response.json()
                    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
                    if all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                        return
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(1.0)
        raise TimeoutError(f"the deployment was not healthy after {timeout:.0f} s (last: {last})")

    def stop(self) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left."""
        for proc in reversed(self.processes):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(self.processes):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Children may outlive their leader (Celery pool processes, the task supervisor): kill the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
            proc.log_file.close()

    # ---- the REST API --------------------------------------------------------------------------------------
    def token(self) -> str:
        user = self.variables.get("AIRFLOW_ADMIN_USER", "admin")
        response = httpx.post(
            f"{self.api_url}/auth/token", json={"username": user, "password": self.admin_password}, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.api_url}/api/v2", headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )


class AirflowRest:
    """The deployment's REST API (`/api/v2`) with a JWT from `/auth/token`: pause, trigger, wait for runs."""

    def __init__(self, deployment: LocalCeleryDeployment) -> None:
        self.deployment = deployment
        self.http = deployment.client()

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.http.patch(f"/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run now; returns its run id."""
        response = self.http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        response.raise_for_status()
        return str(response.json()["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        entry = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """Until the run finished; raises `RunFailed` (with task states) unless it succeeded."""

        def finished() -> dict[str, Any] | None:
            self.deployment.check_alive()
            run = self.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        run = wait_until(finished, timeout, message=f"{dag_id} run {run_id}")
        if run["state"] != "success":
            states = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
            raise RunFailed(f"{dag_id} run {run_id} failed: {states}")
        return run

    def wait_run_of_type(self, dag_id: str, run_type: str, timeout: float = 120) -> dict[str, Any]:
        """The first run of `run_type` (e.g. `asset_triggered`), waited for until it finished."""

        def found() -> dict[str, Any] | None:
            self.deployment.check_alive()
            return next((r for r in self.runs(dag_id) if r["run_type"] == run_type), None)

        run = wait_until(found, timeout, message=f"an {run_type} run of {dag_id}")
        return self.wait_run(dag_id, run["dag_run_id"], timeout)

    def wait_idle(self, dag_id: str, timeout: float = 120) -> None:
        wait_until(
            lambda: all(r["state"] in ("success", "failed") for r in self.runs(dag_id)),
            timeout,
            message=f"{dag_id} to have no active run",
        )


class RunFailed(RuntimeError):
    """A DAG run ended in `failed`."""


def connection_json(conn_type: str, **fields: Any) -> str:
    """An `AIRFLOW_CONN_*` value in Airflow's JSON form."""
    return json.dumps({"conn_type": conn_type, **fields})


def database_connection_json(url: str) -> str:
    """An `AIRFLOW_CONN_*` value for a SQLAlchemy URL (SQLite files by path, anything else as the URL)."""
    if url.startswith("sqlite:///"):
        return connection_json("sqlite", host=url[len("sqlite:///") :])
    return connection_json("generic", extra={"sqlalchemy_url": url})


def drop_database(url: str, *, maintenance_db: str = "postgres") -> None:
    """Drop a PostgreSQL database if it exists, closing its other sessions first."""
    parsed = make_url(normalize_url(url))
    name = parsed.database or ""
    if parsed.get_backend_name() != "postgresql" or not bootstrap.DATABASE_NAME.match(name):
        raise ValueError(f"refusing to drop {name!r}")
    engine = sa.create_engine(
        parsed.set(database=maintenance_db), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


def parse_api_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def logs_tail(deployment: LocalCeleryDeployment, lines: int = 15) -> str:
    return "\n".join(f"--- {p.spec.name}\n{tail(p.log_path, lines)}" for p in deployment.processes)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def wait_until(predicate: Any, timeout: float, interval: float = 1.0, message: str = "condition") -> Any:
    """Poll `predicate()` until it returns something truthy; raise TimeoutError with `message` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)
