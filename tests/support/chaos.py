"""The chaos run: the compose deployment under the scheduled soak's traffic, with its infrastructure failing.

docker-compose.yaml's services run as local processes (`LocalCeleryDeployment`: api-server, scheduler,
dag-processor, triggerer, two Celery workers), on a PostgreSQL cluster (metadata and state store) and a Redis that
this run starts for itself on free ports, so stopping them touches nothing else on the machine. The soak's
recruiters, candidates, sandbox faults and invariant checks (`tests.support.soak.Soak`) run unchanged on top. At
moments drawn from ``seed``, one fault at a time: a Celery worker SIGKILLed while it sends (the intake's dispatch
or the write-back's send), the scheduler, the triggerer or the api-server SIGKILLed and restarted (the api-server
during a webhook burst), Redis or PostgreSQL stopped for ``outage_seconds``. A service that exits on its own is
restarted after a pause, as compose's `restart: always` would. After the traffic the pipeline drains and the soak's
invariants are checked, plus: every webhook answered 2xx is recorded, every one answered 5xx or refused was found
by the intake's poll. The figures (faults by kind with injection and recovery times, orders and results,
violations, duplicates absorbed by idempotency keys and by leases) are printed and written to ``--report``.

    python bench/chaos.py --minutes 20 --seed 11        # the long form (docs/reliability.md, "Chaos run")

Over 400 lines on purpose: the run's own servers, the fault plan and each fault's injection and restore, and the
figures share the run's state; split, each part would reach into the others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.support.local_deployment import (
    AirflowRest,
    LocalCeleryDeployment,
    RunningProcess,
    Server,
    connection_json,
    database_connection_json,
    free_port,
    port_open,
)
from tests.support.soak import (
    CUSTOMERS,
    DAGS,
    ROOT,
    Soak,
    SoakConfig,
    format_summary,
)

log = logging.getLogger("chaos")

FAULT_KINDS = (
    "worker_kill",
    "scheduler_kill",
    "triggerer_kill",
    "api_server_kill",
    "redis_stop",
    "postgres_stop",
)
# The tasks that send (to the platform, to Kombo): a worker is killed while one of them runs on it.
SENDING_TASKS = {
    "intake": ("kombo_order_intake", "dispatch"),
    "writeback": ("kombo_result_writeback", "send_results"),
}
SERVICE_OF = {
    "scheduler_kill": "airflow-scheduler",
    "triggerer_kill": "airflow-triggerer",
    "api_server_kill": "airflow-apiserver",
}
WORKERS = ("airflow-worker", "airflow-worker-2")
KILL_DOWN_SECONDS = 3.0  # how long a killed process stays down before it is started again
SENDING_WAIT_SECONDS = 90.0  # how long a worker kill waits for a sending task before it kills a worker anyway
FAULT_GAP_SECONDS = 10.0  # at least this long between one fault's restore and the next injection
RESTART_PAUSE_SECONDS = 10.0  # `restart: always` of a service that exited by itself, at most this often


@dataclass
class ChaosConfig(SoakConfig):
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_count: int = 0  # 0: one fault of each kind
    outage_seconds: float = 30.0  # Redis and PostgreSQL stay down this long
    report: Path | None = None


@dataclass
class Fault:
    kind: str
    planned_seconds: float  # after the traffic started
    injected_at: datetime | None = None
    restored_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _as_root_or_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class OwnPostgres:
    """A PostgreSQL cluster of this run only: initdb in a temp folder, trust auth, its own port and socket folder."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kombo-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "300",
            "fsync": "off",  # a throw-away cluster: no crash safety needed, less disk load
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "90", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def server(self) -> Server:
        return Server("127.0.0.1", self.port, "postgres")

    def _run(self, tool: str, *args: str) -> None:
        argv = _as_root_or_postgres([str(Path("/usr/local/bin") / tool), *args])
        done = subprocess.run(argv, capture_output=True, timeout=180, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-800:]}"
            )


class OwnRedis:
    """A redis-server of this run only, on a free port, with nothing persisted (a restart loses every message)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kombo-chaos-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir)]  # fmt: skip
        with open(self.dir / "redis.log", "ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ChaosRun(Soak):
    """The soak's traffic and checks on the compose deployment, with the deployment's parts failing."""

    config: ChaosConfig

    def __init__(self, config: ChaosConfig) -> None:
        super().__init__(config)
        self.pg = OwnPostgres()
        self.redis = OwnRedis()
        self.name = "kombo_chaos_" + os.urandom(4).hex()
        self.deployment: LocalCeleryDeployment | None = None
        self.faults_done: list[Fault] = []
        self.active: Fault | None = None
        self.restore_at = 0.0
        self.down: set[str] = set()  # services stopped on purpose (not restarted by the supervisor)
        self.last_restart: dict[str, float] = {}
        self.supervisor_restarts: list[dict[str, Any]] = []
        self.burst_until = 0.0
        self.load = {"start": os.getloadavg()}

    # Setup: the run's own PostgreSQL and Redis, then the compose deployment on them --------------------------

    def setup(self) -> None:
        self.pg.init()
        self.pg.start()
        self.redis.start()
        super().setup()

    def _database_url(self, kind: str) -> str:
        from kombo_sync.deploy import bootstrap

        url = self.pg.server.url(f"{self.name}_{kind}")
        bootstrap.ensure_database(url)
        return url

    def _start_airflow(self) -> None:
        started = time.monotonic()
        connections = self._connections()
        deployment = LocalCeleryDeployment(
            work_dir=self.work / "airflow",
            postgres=self.pg.server,
            redis_host="127.0.0.1",
            redis_port=self.redis.port,
            redis_db=0,
            worker_concurrency=4,
            pipeline_config=self.work / "pipeline.yaml",
            name=self.name,
            extra_env={
                "AIRFLOW_CONN_KOMBO_ALERTS": connections["AIRFLOW_CONN_KOMBO_ALERTS"],
                "KOMBO_INTAKE_SCHEDULE": "* * * * *",
                "KOMBO_WRITEBACK_SCHEDULE": "* * * * *",
                "KOMBO_CATALOG_SCHEDULE": "*/2 * * * *",
                "KOMBO_RECONCILE_SCHEDULE": "*/2 * * * *",
                "KOMBO_LIFECYCLE_SCHEDULE": "* * * * *",
            },
            variables={
                "AIRFLOW_CONN_KOMBO_DEFAULT": connections["AIRFLOW_CONN_KOMBO_DEFAULT"],
                "AIRFLOW_CONN_KOMBO_STATE": database_connection_json(self.state_url),
                "AIRFLOW_CONN_KOMBO_WAREHOUSE": database_connection_json(self.warehouse_url),
                "AIRFLOW_CONN_KOMBO_PLATFORM": connection_json(
                    "http", host=self.platform.url, password="soak-platform"
                ),
                "AIRFLOW_CONN_KOMBO_SMTP": connections["AIRFLOW_CONN_KOMBO_SMTP"],
                "KOMBO_WEBHOOK_SECRET": self.secret,
            },
        )
        self.deployment = deployment
        deployment.run_init()
        deployment.start_services(workers=2)
        deployment.wait_ready(timeout=240)
        self.sandbox.set_webhook(deployment.webhook_url, secret=self.secret)
        self._wait(lambda: self._parsed() >= set(DAGS), 180, "the dag-processor to parse the DAGs")
        self.api = AirflowRest(deployment)
        for dag_id in DAGS:
            self.api.set_paused(dag_id, False)
        self.api.trigger("kombo_package_sync")
        # The traffic and the faults start once recruiters can order (the first catalog publish is done).
        first = ("acme", "globex", "initech")
        self._wait(lambda: all(self._published(c) for c in first), 300, "the first catalog publish")
        self.timings["airflow_start_seconds"] = round(time.monotonic() - started, 1)

    # The fault plan -----------------------------------------------------------------------------------------

    def plan(self) -> list[Fault]:
        """Each kind once (in an order drawn from the seed), then kinds drawn at random up to `fault_count`; the
        moments spread over the traffic's 10%-85%."""
        kinds = list(self.config.fault_kinds)
        self.rng.shuffle(kinds)
        while len(kinds) < self.config.fault_count:
            kinds.append(self.rng.choice(self.config.fault_kinds))
        total = self.config.minutes * 60
        moments = sorted(self.rng.uniform(0.10 * total, 0.85 * total) for _ in kinds)
        return [Fault(kind, at) for kind, at in zip(kinds, moments, strict=True)]

    def drive(self) -> None:
        """Traffic for `minutes` with the faults of the plan, one at a time; a fault that could not start by the
        end of the traffic still runs (the traffic goes on until the last one is restored)."""
        total = self.config.minutes * 60
        plan = self.plan()
        self.expected.event("fault_plan", kinds=[f.kind for f in plan])
        if self.config.faults:
            self.faults(True)
        start = time.monotonic()
        next_order = start
        connected = False
        while (elapsed := time.monotonic() - start) < total or plan or self.active:
            # A lost integration-created webhook is not found by any poll (docs/reliability.md): the new customer
            # connects while nothing is down, so the run checks the rest, not that known gap.
            if not connected and elapsed >= 0.25 * total and self.active is None and self._api_up():
                connected = True
                self.expected.event("integration_connected", integration=self._connect("newco", webhook=True))
            if self.active is not None and time.monotonic() >= self.restore_at:
                self.restore(self.active)
            elif self.active is None and plan and elapsed >= plan[0].planned_seconds and self._gap_passed():
                if self.inject(plan[0]):
                    plan.pop(0)
            if time.monotonic() >= next_order:
                with self._store_may_be_down("an order"):
                    self.create_order()
                next_order += self.rng.uniform(0.5, 1.5) * self.config.order_interval_seconds
            if time.monotonic() < self.burst_until or (self.active and self.active.kind == "api_server_kill"):
                for _ in range(2):
                    self.webhook_order()
            with self._store_may_be_down("the candidates"):
                self.finish_email_candidates()
                self.cancel_no_shows()
                self.correct_some_results()
            self.supervise()
            time.sleep(1)
        self.load["end_of_traffic"] = os.getloadavg()

    def _api_up(self) -> bool:
        assert self.deployment is not None
        try:
            return httpx.get(f"{self.deployment.api_url}/api/v2/monitor/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def _gap_passed(self) -> bool:
        last = self.faults_done[-1].restored_at if self.faults_done else None
        return last is None or (datetime.now(UTC) - last).total_seconds() >= FAULT_GAP_SECONDS

    @contextlib.contextmanager
    def _store_may_be_down(self, what: str) -> Any:
        """The driver's own reads of the state store fail while PostgreSQL is stopped; it carries on."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            if not (self.active and self.active.kind == "postgres_stop"):
                raise
            log.debug("%s skipped while PostgreSQL is down (%s)", what, type(exc).__name__)

    def webhook_order(self) -> None:
        """One order of the burst: announced by webhook, for a package the customer has."""
        customers = [c for c in self.integrations if c in self.published]
        if customers:
            customer = self.rng.choice(customers)
            package = self.rng.choice(CUSTOMERS[customer][2])
            self._create(self.integrations[customer], package, self._candidate(), True, "invite")

    # Faults -------------------------------------------------------------------------------------------------

    def _process(self, service: str) -> RunningProcess:
        assert self.deployment is not None
        return [p for p in self.deployment.processes if p.spec.name == service][-1]

    def _kill(self, service: str) -> None:
        proc = self._process(service)
        self.down.add(service)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(
                proc.popen.pid, signal.SIGKILL
            )  # the whole group: a worker's pool and task processes too
        proc.popen.wait(timeout=30)
        proc.log_file.close()

    def _start_again(self, service: str) -> None:
        assert self.deployment is not None
        self.deployment.start(self._process(service).spec)
        self.down.discard(service)
        self.last_restart[service] = time.monotonic()

    def inject(self, fault: Fault) -> bool:
        """Start the fault; False when its moment has not come yet (a worker kill waits for a sending task)."""
        if fault.kind == "worker_kill":
            target = self._sending_worker(fault)
            if target is None:
                return False
            fault.detail.update(target)
            self._kill(target["worker"])
            down = KILL_DOWN_SECONDS
        elif fault.kind in SERVICE_OF:
            self._kill(SERVICE_OF[fault.kind])
            down = KILL_DOWN_SECONDS
        elif fault.kind == "redis_stop":
            self.redis.stop()
            down = self.config.outage_seconds
        elif fault.kind == "postgres_stop":
            self.pg.stop()
            down = self.config.outage_seconds
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        fault.injected_at = datetime.now(UTC)
        self.active, self.restore_at = fault, time.monotonic() + down
        self.expected.event("fault_injected", fault=fault.kind, **fault.detail)
        return True

    def restore(self, fault: Fault) -> None:
        if fault.kind == "worker_kill":
            self._start_again(fault.detail["worker"])
        elif fault.kind in SERVICE_OF:
            self._start_again(SERVICE_OF[fault.kind])
            if fault.kind == "api_server_kill":
                self.burst_until = time.monotonic() + 20  # webhooks go on while it starts and once it answers
        elif fault.kind == "redis_stop":
            self.redis.start()
        elif fault.kind == "postgres_stop":
            self.pg.start()
        fault.restored_at = datetime.now(UTC)
        self.faults_done.append(fault)
        self.active = None
        self.expected.event("fault_restored", fault=fault.kind)

    def _sending_worker(self, fault: Fault) -> dict[str, Any] | None:
        """The worker running a sending task (the intake's dispatch or the write-back's send, alternating by the
        seed); after SENDING_WAIT_SECONDS, the worker running any task, else the first worker."""
        import psutil

        fault.detail.setdefault("wanted", self.rng.choice(sorted(SENDING_TASKS)))
        fault.detail.setdefault("waiting_since", time.monotonic())
        waited = time.monotonic() - fault.detail["waiting_since"]
        with self._metadata().connect() as conn:
            running = conn.execute(
                sa.text("SELECT id, dag_id, task_id, pid FROM task_instance WHERE state = 'running'")
            ).all()
        sending = {pair: family for family, pair in SENDING_TASKS.items()}
        wanted = SENDING_TASKS[fault.detail["wanted"]]
        candidates = [ti for ti in running if (ti.dag_id, ti.task_id) == wanted]
        if not candidates and waited > SENDING_WAIT_SECONDS / 2:
            candidates = [ti for ti in running if (ti.dag_id, ti.task_id) in sending]
        if not candidates and waited > SENDING_WAIT_SECONDS:
            candidates = list(running)
        for ti in candidates:
            for worker in WORKERS:
                proc = self._process(worker)
                with contextlib.suppress(psutil.Error):
                    tree = psutil.Process(proc.popen.pid).children(recursive=True)
                    if any(p.pid == ti.pid or str(ti.id) in " ".join(p.cmdline()) for p in tree):
                        fault.detail.pop("waiting_since")
                        return {"worker": worker, "task": f"{ti.dag_id}.{ti.task_id}",
                                "while_sending": (ti.dag_id, ti.task_id) in sending,
                                "waited_seconds": round(waited)}  # fmt: skip
        if waited > SENDING_WAIT_SECONDS * 1.5:
            fault.detail.pop("waiting_since")
            return {
                "worker": WORKERS[0],
                "task": None,
                "while_sending": False,
                "waited_seconds": round(waited),
            }
        return None

    def supervise(self) -> None:
        """compose's `restart: always`: a service that exited by itself is started again (after a pause)."""
        assert self.deployment is not None
        names = {p.spec.name for p in self.deployment.processes}
        for name in sorted(names - self.down):
            proc = self._process(name)
            code = proc.popen.poll()
            if code is None or time.monotonic() - self.last_restart.get(name, 0) < RESTART_PAUSE_SECONDS:
                continue
            proc.log_file.close()
            during = self.active.kind if self.active else None
            self.supervisor_restarts.append({"service": name, "exit_code": code, "during": during})
            self.expected.event("service_exited", service=name, exit_code=code, during=during)
            self._start_again(name)

    # Drain and checks ---------------------------------------------------------------------------------------

    def drained(self) -> bool:
        self.supervise()
        return super().drained()

    def check(self) -> list[str]:
        broken = super().check()
        with self.store.engine.connect() as conn:
            seen: dict[str, str] = dict(conn.execute(sa.text("SELECT id, first_seen_via FROM orders")).all())  # type: ignore[arg-type]
        self.webhooks: dict[str, int] = {"answered_2xx": 0, "answered_5xx_or_refused": 0, "found_by_poll": 0}
        for order_id, answer in self.expected.webhook_answers.items():
            if self.expected.orders[order_id]["kind"] == "not_entitled":
                continue  # answered 422 and never recorded (the soak checks it)
            if 200 <= answer < 300:
                self.webhooks["answered_2xx"] += 1
                if order_id not in seen:
                    broken.append(f"webhook for {order_id} answered {answer} but the order is not recorded")
            elif answer == 0 or answer >= 500:
                self.webhooks["answered_5xx_or_refused"] += 1
                if order_id not in seen:
                    broken.append(
                        f"webhook for {order_id} answered {answer or 'nothing'}; the poll never found it"
                    )
                elif seen[order_id] == "poll":
                    self.webhooks["found_by_poll"] += 1
        return broken

    def _check_latency(self, platform: dict[str, Any]) -> list[str]:
        """Latency is a figure here, not an invariant: outages hold invitations back by design."""
        self.anomalies += super()._check_latency(platform)
        return []

    # Figures ------------------------------------------------------------------------------------------------

    def figures(self, broken: list[str]) -> dict[str, Any]:
        runs = [r for r in self.dag_runs() if r["run_type"] == "scheduled"]
        faults = []
        for fault in self.faults_done:
            assert fault.injected_at is not None and fault.restored_at is not None
            recovery = self._recovery(fault.restored_at, runs)
            faults.append({"kind": fault.kind, "injected_at": fault.injected_at.isoformat(timespec="seconds"),
                           "down_seconds": round((fault.restored_at - fault.injected_at).total_seconds(), 1),
                           **recovery, "webhook_answers": self._webhook_answers(fault),
                           **{k: v for k, v in fault.detail.items() if k != "wanted"}})  # fmt: skip
        by_kind: dict[str, dict[str, Any]] = {}
        for item in faults:
            entry = by_kind.setdefault(
                item["kind"], {"count": 0, "recovery_seconds": [], "next_run_completed": 0}
            )
            entry["count"] += 1
            entry["recovery_seconds"].append(item["recovery_seconds"])
            entry["next_run_completed"] += bool(item["next_run_completed"])
        return {
            "seed": self.config.seed,
            "minutes": self.config.minutes,
            "outage_seconds": self.config.outage_seconds,
            "load_average": {
                k: [round(x, 2) for x in v] for k, v in {**self.load, "end": os.getloadavg()}.items()
            },
            "faults_injected": len(faults),
            "faults_by_kind": by_kind,
            "faults": faults,
            "supervisor_restarts": self.supervisor_restarts,
            "orders_processed": len(self.expected.orders),
            "results_processed": len(self.finished_orders()),
            "webhooks": getattr(self, "webhooks", {}),
            "duplicates_prevented": self._duplicates_prevented(),
            "invariant_violations": len(broken),
        }

    def _webhook_answers(self, fault: Fault) -> dict[str, int]:
        """The HTTP answers of the webhooks sent from the fault's injection until 20 s after its restore (0: no
        answer, the connection refused or dropped)."""
        assert fault.injected_at is not None and fault.restored_at is not None
        start, end = fault.injected_at.timestamp(), fault.restored_at.timestamp() + 20
        answers: dict[str, int] = {}
        for order_id, answer in self.expected.webhook_answers.items():
            if start <= self.expected.orders[order_id]["created"] <= end:
                answers[str(answer)] = answers.get(str(answer), 0) + 1
        return answers

    def _recovery(self, restored: datetime, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Seconds from the restore until a scheduled intake and write-back run that started after it succeeded;
        whether the first such run of each succeeded (the target: the next scheduled run completes the work)."""
        seconds: list[float] = []
        first_ok = True
        for dag_id in ("kombo_order_intake", "kombo_result_writeback"):
            after = [
                r
                for r in runs
                if r["dag_id"] == dag_id and r["start_date"] and _utc(r["start_date"]) >= restored
            ]
            if not after:
                return {"recovery_seconds": None, "next_run_completed": False}
            first_ok = first_ok and after[0]["state"] == "success"
            done = next((r for r in after if r["state"] == "success" and r["end_date"]), None)
            if done is None:
                return {"recovery_seconds": None, "next_run_completed": False}
            seconds.append((_utc(done["end_date"]) - restored).total_seconds())
        return {"recovery_seconds": round(max(seconds), 1), "next_run_completed": first_ok}

    def _duplicates_prevented(self) -> dict[str, int]:
        """Repeats absorbed by idempotency keys (the platform's and Kombo's own counts) and by the state store's
        leases (sends whose commit was fenced off, counted in each run's summary as `lease_lost`)."""
        platform = self.platform.admin.invitations()
        requests, creations = platform["requests_by_order"], platform["creations_by_order"]
        finished = list(self.finished_orders())
        kombo = self.sandbox.admin.list_orders(ids=finished) if finished else []
        with self.store.engine.connect() as conn:
            summaries = conn.execute(sa.text("SELECT summary FROM runs")).scalars().all()
        return {
            "by_idempotency_key_invitations": sum(n - creations.get(o, 0) for o, n in requests.items()),
            "by_idempotency_key_reminders": sum(platform["remind_requests_by_order"].values())
            - len(platform["reminders"]),
            "by_kombo_same_payload_noop": sum(
                1 for o in kombo for w in o.get("results") or [] if w.get("outcome") == "noop"
            ),
            "by_lease_lost": sum(_count(s, "lease_lost") for s in summaries),
        }

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()
        super().stop()
        self.redis.remove()
        self.pg.remove()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _count(summary: Any, key: str) -> int:
    """The sum of every `key` in a run summary, at any depth."""
    if isinstance(summary, str):
        with contextlib.suppress(ValueError):
            summary = json.loads(summary)
    if isinstance(summary, dict):
        return sum(int(v) if k == key and isinstance(v, int) else _count(v, key) for k, v in summary.items())
    if isinstance(summary, list):
        return sum(_count(v, key) for v in summary)
    return 0


def run_chaos(config: ChaosConfig) -> dict[str, Any]:
    """The soak's set-up, drive, drain and check with this run's faults; the summary with `chaos` figures."""
    from tests.support.soak import run_soak

    runs: list[ChaosRun] = []

    def runner(soak_config: SoakConfig) -> ChaosRun:
        assert isinstance(soak_config, ChaosConfig)
        runs.append(ChaosRun(soak_config))
        return runs[-1]

    summary = run_soak(config, runner=runner, figures=lambda soak, broken: runs[-1].figures(broken))
    if config.report is not None:
        Path(config.report).write_text(format_figures(summary) + "\n" + format_summary(summary))
    return summary


def format_figures(summary: dict[str, Any]) -> str:
    chaos = summary.get("chaos") or {}
    lines = [f"Chaos run: seed {chaos.get('seed')}, {chaos.get('minutes')} minutes of traffic, outages "
             f"{chaos.get('outage_seconds')} s, load average {chaos.get('load_average')}", "",
             "| fault | count | recovery s (each) | next scheduled run completed |", "|---|---|---|---|"]  # fmt: skip
    for kind, entry in (chaos.get("faults_by_kind") or {}).items():
        lines.append(f"| {kind} | {entry['count']} | {entry['recovery_seconds']} | "
                     f"{entry['next_run_completed']} of {entry['count']} |")  # fmt: skip
    lines += ["", "faults in order:"]
    lines += [f"  {json.dumps(f, default=str)}" for f in chaos.get("faults") or []]
    for key in ("faults_injected", "supervisor_restarts", "orders_processed", "results_processed", "webhooks",
                "duplicates_prevented", "invariant_violations"):  # fmt: skip
        lines.append(f"{key}: {chaos.get(key)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/chaos.py", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="minutes of traffic (then it drains)")
    parser.add_argument(
        "--seed", type=int, default=11, help="draws the fault order and moments, and the traffic"
    )
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="fault kinds to use, comma-separated")
    parser.add_argument("--fault-count", type=int, default=None,
                        help="faults to inject (default: 2.6 a minute, at least one of each kind)")  # fmt: skip
    parser.add_argument(
        "--outage-seconds", type=float, default=30.0, help="how long Redis and PostgreSQL stay down"
    )
    parser.add_argument("--report", default=None, help="also write the figures and the summary to this file")
    parser.add_argument("--workdir", default=str(ROOT / ".local" / "chaos"))
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="seconds to wait for the drain")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown:
        parser.error(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("mail.log", "httpx", "httpcore", "alembic", "kombo_sync.state"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    count = args.fault_count if args.fault_count is not None else max(len(kinds), round(2.6 * args.minutes))
    config = ChaosConfig(minutes=args.minutes, seed=args.seed, workdir=Path(args.workdir), database="postgres",
                         drain_timeout_seconds=args.drain_timeout, fault_kinds=kinds, fault_count=count,
                         outage_seconds=args.outage_seconds, report=Path(args.report) if args.report else None)  # fmt: skip
    summary = run_chaos(config)
    print(format_summary(summary))
    print(format_figures(summary))
    return 1 if summary.get("broken_invariants") else 0
