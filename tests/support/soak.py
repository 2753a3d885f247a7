"""The scheduled soak: the DAGs on one- and two-minute schedules under a real scheduler, with traffic and faults.

Starts the local Kombo sandbox, the platform stand-in and an SMTP server (threads of this process), and Airflow's
api-server (with the webhook plugin), scheduler, dag-processor and triggerer (LocalExecutor; metadata and state
store on PostgreSQL when it is reachable, SQLite otherwise). For ``minutes`` recruiters create orders (most
announced by the webhook, some only found by polling, some duplicates, some for packages the customer does not
have), candidates finish (completed and cancelled; some results corrected in the warehouse afterwards) or never
start (the recruiter then cancels the order in the ATS and the scheduled reconcile must revoke the invitation), a
new integration is connected, and faults are on: Kombo 5xx, 429s and lost responses, platform failures, one SIGKILL
of a running task process, one scheduler restart, and the write-back paused for a few minutes (so the run after
it must reach back over the missed intervals: the write-back overlap is 0 here). Then the traffic stops, the
faults go off, the pipeline drains, and :func:`check` compares the pipeline with the sandbox's and the platform's
own records. The summary (counts, timings, anomalies, broken invariants) is written to ``summary.json`` and
``summary.txt`` in the work folder.

    python -m tests.support.soak --minutes 20          # `make soak`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "include", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.support.candidate_data import candidate_data_in_files, candidate_data_in_texts, log_files  # noqa: E402
from tests.support.webhooks import LiveAirflow, free_port  # noqa: E402

log = logging.getLogger("soak")

DAGS = (
    "kombo_package_sync",
    "kombo_order_intake",
    "kombo_result_writeback",
    "kombo_reconcile",
    "kombo_lifecycle",
    "kombo_housekeeping",
)
PACKAGES = [
    ("py-basics", "SKILLS_TEST", "Python basics", "45-minute Python coding test"),
    ("sql-core", "SKILLS_TEST", "SQL fundamentals", "Joins, aggregates and window functions"),
    ("big-five", "BEHAVIORAL", "Personality profile", "Big-five personality questionnaire"),
    ("video-1", "VIDEO_INTERVIEW", "One-way video interview", "Three recorded questions"),
]
# customer key -> (ATS, channel, entitled packages); "newco" connects during the soak.
CUSTOMERS = {
    "acme": ("greenhouse", "platform", ["py-basics", "sql-core", "big-five"]),
    "globex": ("workday", "platform", ["sql-core", "video-1"]),
    "initech": ("smartrecruiters", "email", ["py-basics", "big-five"]),
    "newco": ("lever", "platform", ["py-basics", "video-1"]),
}
FINAL_ORDER_STATES = {"invited", "duplicate", "rejected", "cancelled", "failed"}
KOMBO_FAULTS = {"error_rate": 0.06, "bare_503_rate": 0.02, "throttle_rate": 0.05, "lost_response_rate": 0.05}
FROM_EMAIL = "assessments@provider.example"
PLATFORM_FAULTS = {"failure_rate": 0.1, "lost_response_rate": 0.05}
# Candidates who never start. On the platform customers with a lifecycle (EXPIRING), half of them are reminded and
# their orders expire; the others' recruiters cancel the order in the ATS this long after the candidate was due to
# finish, and the reconcile must revoke the invitation.
NO_SHOW_RATE = 0.1
GIVE_UP_AFTER_SECONDS = 15.0
EXPIRING = ("acme", "globex")
DAY = 86400.0
REMINDER_SECONDS = (50.0, 110.0)  # after the invitation, like the default 2 and 5 days
EXPIRY_SECONDS = 240.0  # like the default 14 days
# After its expiry is due, how long the drain waits for the lifecycle (every minute) and the write-back.
EXPIRY_GRACE_SECONDS = 180.0


@dataclass
class SoakConfig:
    minutes: float = 5.0
    seed: int = 7
    workdir: Path = field(default_factory=lambda: ROOT / ".local" / "soak")
    order_interval_seconds: float = 4.0
    finish_after_seconds: float = 20.0
    drain_timeout_seconds: float = 600.0
    database: str = "auto"  # auto (PostgreSQL when reachable), postgres, sqlite
    pg_admin_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    faults: bool = True


@dataclass
class Expected:
    """What the driver did, to check against the pipeline: order id -> what should happen to it."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook_answers: dict[str, int] = field(default_factory=dict)
    duplicate_pairs: list[tuple[str, str]] = field(default_factory=list)
    corrected: set[str] = field(default_factory=set)
    email_finished: set[str] = field(default_factory=set)
    cancelled_in_ats: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: str, **details: Any) -> None:
        self.events.append({"at": datetime.now(UTC).isoformat(timespec="seconds"), "kind": kind, **details})
        log.info("soak event: %s %s", kind, details)


def reordered_after_cancel(
    first: str,
    twin: str,
    states: dict[str, str],
    times: dict[str, tuple[datetime | None, datetime | None]],
    gone: set[str],
) -> bool:
    """Both orders of a duplicate pair invited is right when one of them had been cancelled in the ATS (or had
    expired) before the other was invited: the duplicate rule looks for an *active* order of the same candidate,
    and the order still open in the ATS must reach the candidate. `times`: order id -> (invited_at, updated_at);
    a cancelled order's updated_at is its closing (or later, which only makes this stricter)."""
    for closed, other in ((first, twin), (twin, first)):
        closed_at = times.get(closed, (None, None))[1]
        invited_at = times.get(other, (None, None))[0]
        if (
            closed in gone
            and states.get(closed) == "cancelled"
            and states.get(other) in ("invited", "cancelled")
            and closed_at is not None
            and invited_at is not None
            and invited_at >= closed_at
        ):
            return True
    return False


def _pg_reachable(url: str) -> bool:
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return True
    except Exception:
        return False


class Soak:
    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.work = Path(config.workdir)
        self.rng = random.Random(config.seed)
        self.expected = Expected()
        self.secret = uuid.uuid4().hex
        self.created_databases: list[str] = []
        self.live: LiveAirflow | None = None
        self.integrations: dict[str, str] = {}  # customer key -> integration id
        self.candidates = 0
        self.published: set[str] = set()
        self.anomalies: list[str] = []
        self.timings: dict[str, float] = {}
        self.lifecycle_counts: Counter[str] = Counter()
        self.left_to_expire: set[str] = set()  # no-shows' orders left to the lifecycle (reminders, expiry)
        self.no_shows_on_expiring = 0
        self.result_outcomes: dict[str, int] = {}  # state of each finished result's newest version

    # Setup ----------------------------------------------------------------------------------------------------

    def _database_url(self, kind: str) -> str:
        use_pg = self.config.database == "postgres" or (
            self.config.database == "auto" and _pg_reachable(self.config.pg_admin_url)
        )
        if self.config.database == "postgres" and not _pg_reachable(self.config.pg_admin_url):
            raise RuntimeError(f"PostgreSQL is not reachable at {self.config.pg_admin_url}")
        if not use_pg:
            return f"sqlite:///{self.work / f'{kind}.db'}"
        name = f"kombo_soak_{kind}_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(
            self.config.pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        self.created_databases.append(name)
        return str(sa.engine.make_url(self.config.pg_admin_url).set(database=name).render_as_string(False))

    def setup(self) -> None:
        from kombo_sync.state.store import StateStore
        from sandbox.kombo_app import KomboSandboxSettings
        from sandbox.platform_app import PlatformSettings
        from sandbox.smtp import run_in_thread
        from sandbox.testing import WebhookRecorder, run_kombo_sandbox, run_platform_standin

        if self.work.exists():
            import shutil

            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.state_url = self._database_url("state")
        self.metadata_url = self._database_url("airflow")
        self.warehouse_url = f"sqlite:///{self.work / 'warehouse.db'}"
        self.store = StateStore(self.state_url)
        self.store.migrate()
        self.sandbox = run_kombo_sandbox(KomboSandboxSettings(api_key="soak-key", webhook_secret=self.secret))
        self.platform = run_platform_standin(
            settings=PlatformSettings(
                warehouse_url=self.warehouse_url,
                api_key="soak-platform",
                finish_after_seconds=self.config.finish_after_seconds,
                cancel_rate=0.2,
                no_show_rate=NO_SHOW_RATE,
            )
        )
        self.smtp = run_in_thread(self.work / "mailbox")
        self.alerts = WebhookRecorder().start()  # the team's chat tool: every alert the pipeline sends
        self._seed_warehouse_catalog()
        for customer in ("acme", "globex", "initech"):
            self._connect(customer, webhook=False)
        self._bootstrap_registry()
        self._write_config()
        self._start_airflow()

    def _seed_warehouse_catalog(self) -> None:
        import sqlite3

        with sqlite3.connect(self.work / "warehouse.db") as db:
            db.executescript((ROOT / "include" / "sql" / "warehouse_catalog_schema.sql").read_text())
            db.executemany(
                "INSERT INTO catalog_packages (package_id, type, name, description, active) VALUES (?, ?, ?, ?, 1)",
                PACKAGES,
            )
            db.executemany(
                "INSERT INTO catalog_entitlements (customer_key, package_id) VALUES (?, ?)",
                [(customer, pkg) for customer, (_, _, pkgs) in CUSTOMERS.items() for pkg in pkgs],
            )

    def _connect(self, customer: str, *, webhook: bool) -> str:
        tool = CUSTOMERS[customer][0]
        created = self.sandbox.admin.create_integration(
            tool=tool, organization_name=customer.title(), origin_id=customer, emit_webhook=webhook
        )
        self.integrations[customer] = created["id"]
        return str(created["id"])

    def _bootstrap_registry(self) -> None:
        entries = [
            {"id": self.integrations[c], "tool": CUSTOMERS[c][0], "customer_key": c,
             "organization_name": c.title(), "invitation_channel": CUSTOMERS[c][1]}
            for c in ("acme", "globex", "initech")
        ]  # fmt: skip
        path = self.work / "integrations.yaml"
        path.write_text(yaml.safe_dump({"integrations": entries}))
        subprocess.run(
            [sys.executable, "-m", "kombo_sync.registry", "load-bootstrap", str(path)],
            cwd=ROOT, env=self._env(), check=True, capture_output=True,
        )  # fmt: skip

    def _write_config(self) -> None:
        config = yaml.safe_load((ROOT / "include" / "config" / "pipeline.yaml").read_text())
        config["intake"].update(
            {"retry_backoff_seconds": 5, "retry_backoff_max_seconds": 30, "lease_seconds": 60}
        )
        # No overlap: results finished while the write-back was paused are read only if the run after the pause
        # reaches back to the last successful run (the catch-up this soak proves).
        config["writeback"].update({"overlap_minutes": 0, "retry_backoff_seconds": 5, "max_attempts": 12})
        # Alerts to a local receiver, as a chat webhook; the checker reads them for candidate data.
        config["alerts"]["channels"]["webhook"]["conn_id"] = "kombo_alerts"
        config["alerts"]["repeat_minutes"] = 0
        # The lifecycle in seconds instead of days, for the platform customers in EXPIRING only: the e-mail
        # customer's candidates all finish, and its results can wait longer than EXPIRY_SECONDS for the write-back
        # while it is paused (an e-mail invitation cannot be revoked, so such an order would expire).
        config["lifecycle"].update(
            {"reminder_days": [], "expiry_days": 0, "retry_backoff_seconds": 5, "lease_seconds": 60,
             "integrations": {self.integrations[c]: {"reminder_days": [r / DAY for r in REMINDER_SECONDS],
                                                     "expiry_days": EXPIRY_SECONDS / DAY} for c in EXPIRING}}
        )  # fmt: skip
        (self.work / "pipeline.yaml").write_text(yaml.safe_dump(config))

    def _connections(self) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_KOMBO_DEFAULT": json.dumps(
                {"conn_type": "http", "host": self.sandbox.api_url, "password": self.sandbox.api_key,
                 "extra": {"timeout": 10, "max_retries": 4}}
            ),
            "AIRFLOW_CONN_KOMBO_STATE": json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": self.state_url}}),
            "AIRFLOW_CONN_KOMBO_WAREHOUSE": json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": self.warehouse_url}}
            ),
            "AIRFLOW_CONN_KOMBO_PLATFORM": json.dumps(
                {"conn_type": "http", "host": self.platform.url, "password": "soak-platform"}
            ),
            "AIRFLOW_CONN_KOMBO_ALERTS": json.dumps({"conn_type": "http", "host": self.alerts.webhook_url}),
            "AIRFLOW_CONN_KOMBO_SMTP": json.dumps(
                {"conn_type": "smtp", "host": self.smtp.host, "port": self.smtp.port,
                 "extra": {"from_email": FROM_EMAIL, "disable_tls": True}}
            ),
        }  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KOMBO_"))}
        env.update(self._connections())
        env.update(
            {
                "KOMBO_SYNC_CONFIG": str(self.work / "pipeline.yaml"),
                "KOMBO_SYNC_HOME": str(self.work),
                "KOMBO_WEBHOOK_SECRET": self.secret,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
            }
        )
        return env

    def _start_airflow(self) -> None:
        port = free_port()
        env = self._env()
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "KOMBO_INTAKE_SCHEDULE": "* * * * *",
                "KOMBO_WRITEBACK_SCHEDULE": "* * * * *",
                "KOMBO_CATALOG_SCHEDULE": "*/2 * * * *",
                "KOMBO_RECONCILE_SCHEDULE": "*/2 * * * *",
                "KOMBO_LIFECYCLE_SCHEDULE": "* * * * *",
            }
        )
        started = time.monotonic()
        self.live = LiveAirflow(
            self.work / "airflow",
            components=("api-server", "scheduler", "dag-processor", "triggerer"),
            port=port,
            env=env,
        )
        self.live.start(timeout=240)
        self.live.airflow("pools", "set", "kombo_api", "4", "Kombo API calls")
        self.sandbox.set_webhook(self.live.webhook_url, secret=self.secret)
        self._wait(lambda: self._parsed() >= set(DAGS), 180, "the dag-processor to parse the DAGs")
        for dag_id in DAGS:
            self.live.airflow("dags", "unpause", dag_id)
        self.timings["airflow_start_seconds"] = round(time.monotonic() - started, 1)
        # The catalog's first publish (triggered by hand, as a team does after connecting its warehouse).
        self.live.airflow("dags", "trigger", "kombo_package_sync")

    # Airflow's metadata -----------------------------------------------------------------------------------

    def _metadata(self) -> sa.Engine:
        if not hasattr(self, "_metadata_engine"):
            self._metadata_engine = sa.create_engine(self.metadata_url, poolclass=sa.pool.NullPool)
        return self._metadata_engine

    def _parsed(self) -> set[str]:
        with self._metadata().connect() as conn:
            return set(conn.execute(sa.text("SELECT dag_id FROM serialized_dag")).scalars())

    def dag_runs(self) -> list[dict[str, Any]]:
        query = sa.text(
            "SELECT dag_id, run_id, run_type, state, start_date, end_date FROM dag_run ORDER BY start_date"
        )
        with self._metadata().connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _wait(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except Exception as exc:  # a database restarting, a component not up yet
                log.debug("waiting for %s: %s", what, exc)
            time.sleep(2)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    # Traffic and faults -----------------------------------------------------------------------------------

    def _candidate(self) -> dict[str, Any]:
        self.candidates += 1
        n = self.candidates
        return {"email": f"candidate.{n}@candidates.example", "first_name": f"First{n}", "last_name": f"Last{n}",
                "phone": f"+4915550{n:05d}", "remote_id": f"cand-{n}"}  # fmt: skip

    def create_order(self) -> None:
        # A recruiter can order only once the customer's packages are in its ATS (published to Kombo).
        customers = [c for c in self.integrations if self._published(c)]
        if not customers:
            return
        customer = self.rng.choice(customers)
        integration = self.integrations[customer]
        entitled = CUSTOMERS[customer][2]
        roll = self.rng.random()
        webhook = self.rng.random() < 0.75
        if roll < 0.08:
            package = next(p for p, *_ in PACKAGES if p not in entitled)
            kind = "not_entitled"
        else:
            package = self.rng.choice(entitled)
            kind = "invite"
        candidate = self._candidate()
        order = self._create(integration, package, candidate, webhook, kind)
        if kind == "invite" and self.rng.random() < 0.1:
            # The recruiter orders the same test for the same candidate again, at once.
            twin = self._create(integration, package, dict(candidate), self.rng.random() < 0.5, "duplicate")
            self.expected.duplicate_pairs.append((order, twin))

    def _published(self, customer: str) -> bool:
        if customer not in self.published:
            if not self.sandbox.admin.list_packages(self.integrations[customer]):
                return False
            self.published.add(customer)
            self.expected.event("packages_published", customer=customer)
        return True

    def _create(
        self, integration: str, package: str, candidate: dict[str, Any], webhook: bool, kind: str
    ) -> str:
        created = self.sandbox.admin.create_order(
            integration, package, candidate=candidate, application={"remote_id": f"app-{candidate['remote_id']}"},
            job={"remote_id": "job-1", "name": "Data Engineer"}, deliver_webhook=webhook,
        )  # fmt: skip
        order_id = str(created["id"])
        answer = (created.get("webhook") or {}).get("status_code")
        self.expected.orders[order_id] = {
            "integration_id": integration, "package_id": package, "kind": kind, "webhook": webhook,
            "created": time.time(), "webhook_status": answer,
        }  # fmt: skip
        if webhook:
            self.expected.webhook_answers[order_id] = answer or 0
        return order_id

    def finish_email_candidates(self) -> None:
        """E-mail-invited candidates finish too (the platform stand-in only finishes its own invitations)."""
        from sandbox.warehouse import simulated_result, write_results

        query = sa.text(
            "SELECT id FROM orders WHERE state = 'invited' AND channel = 'email' AND invited_at < :before"
        )
        before = datetime.now(UTC) - timedelta(seconds=self.config.finish_after_seconds)
        with self.store.engine.connect() as conn:
            due = [
                o
                for o in conn.execute(query, {"before": before}).scalars()
                if o not in self.expected.email_finished
            ]
        rows = [
            simulated_result(o, f"email-{o}", seed=self.config.seed, cancel_rate=0.2, with_report=False)
            for o in due
        ]
        if rows:
            write_results(self.warehouse_url, rows)
            self.expected.email_finished.update(due)

    def cancel_no_shows(self) -> None:
        """The recruiter gives up on candidates who never started and cancels their orders in the ATS (Kombo
        does not tell us: the reconcile finds it and revokes the invitation)."""
        from kombo_sync.runs import as_utc

        before = datetime.now(UTC) - timedelta(
            seconds=self.config.finish_after_seconds + GIVE_UP_AFTER_SECONDS
        )
        for invitation in self.platform.admin.invitations()["invitations"]:
            order_id = invitation["order_id"]
            created = as_utc(invitation["created_at"])
            if invitation["status"] != "invited" or order_id in self.expected.cancelled_in_ats or not created:
                continue
            # Only a candidate who never starts: one whose finishing is merely late (the warehouse it writes to
            # was down) is not given up on, or the recruiter would cancel an order whose result is on its way.
            if not invitation.get("no_show"):
                continue
            if created >= before or order_id not in self.expected.orders or order_id in self.left_to_expire:
                continue
            integration = self.expected.orders[order_id]["integration_id"]
            expiring = {self.integrations[c] for c in EXPIRING if c in self.integrations}
            # On the customers with a lifecycle, every other no-show (the first one included) is left to expire.
            if integration in expiring and self.no_shows_on_expiring % 2 == 0:
                self.no_shows_on_expiring += 1
                self.left_to_expire.add(order_id)
                self.expected.event("left_to_expire", order=order_id)
                continue
            self.no_shows_on_expiring += integration in expiring
            self.sandbox.admin.cancel_order(order_id)
            self.expected.cancelled_in_ats.add(order_id)
            self.expected.event("cancelled_in_ats", order=order_id)

    def correct_some_results(self) -> None:
        """The provider re-scores a few results after they were first written to the warehouse."""
        from sandbox.warehouse import read_results, write_results

        rows = [r for r in read_results(self.warehouse_url) if r["order_id"] not in self.expected.corrected]
        for row in rows:
            if row["status"] != "completed" or self.rng.random() > 0.15:
                continue
            row = dict(row)
            # A valid re-score (0 <= score <= max_score): an invalid one would be quarantined, by design.
            score, top = float(row.get("score") or 0), float(row.get("max_score") or 100)
            row["score"] = score + 1 if score + 1 <= top else score - 1
            row["updated_at"] = datetime.now(UTC)
            write_results(self.warehouse_url, [row], replace=True)
            self.expected.corrected.add(row["order_id"])

    def faults(self, on: bool) -> None:
        self.sandbox.admin.set_knobs(**(KOMBO_FAULTS if on else dict.fromkeys(KOMBO_FAULTS, 0.0)))
        self.platform.admin.set_knobs(**(PLATFORM_FAULTS if on else dict.fromkeys(PLATFORM_FAULTS, 0.0)))
        self.expected.event("faults_on" if on else "faults_off")

    def kill_a_task_process(self) -> bool:
        """SIGKILL the process of a running task (preferably one that sends), as a dying worker would."""
        import psutil

        for _ in range(60):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(proc.info.get("cmdline") or [])
                # A task's own process is titled "airflow worker -- <task instance id>" (the executor's
                # workers are "airflow worker -- LocalExecutor: ...").
                ti_id = cmdline.split("-- ", 1)[1].strip() if cmdline.startswith("airflow worker -- ") else ""
                if _is_uuid(ti_id):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
                        self.expected.event(
                            "sigkill_task", pid=proc.info["pid"], ti=ti_id, task=self._task_of(ti_id)
                        )
                        return True
            time.sleep(1)
        self.anomalies.append("no running task process found to kill within 60 s")
        return False

    def _task_of(self, ti_id: str) -> str | None:
        with contextlib.suppress(Exception), self._metadata().connect() as conn:
            row = conn.execute(
                sa.text("SELECT dag_id, task_id FROM task_instance WHERE id = :id"), {"id": ti_id}
            ).first()
            return f"{row[0]}.{row[1]}" if row else None
        return None

    def restart_scheduler(self) -> None:
        assert self.live is not None
        proc = self.live.processes["scheduler"]
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.live.restart("scheduler")
        self.expected.event("scheduler_restarted")

    def drive(self) -> None:
        """Traffic for ``minutes``, with the faults and disruptions placed at fixed fractions of it."""
        total = self.config.minutes * 60
        start = time.monotonic()
        plan = [
            (0.10, "faults_on"),
            (0.25, "connect_newco"),
            (0.35, "kill_task"),
            (0.45, "pause_writeback"),
            (0.55, "restart_scheduler"),
            (0.80, "unpause_writeback"),
            (0.90, "faults_off"),
        ]
        done: set[str] = set()
        next_order = start
        while (elapsed := time.monotonic() - start) < total:
            for fraction, step in plan:
                if step not in done and elapsed >= fraction * total:
                    done.add(step)
                    self._step(step)
            if time.monotonic() >= next_order:
                self.create_order()
                next_order += self.rng.uniform(0.5, 1.5) * self.config.order_interval_seconds
            self.finish_email_candidates()
            self.cancel_no_shows()
            self.correct_some_results()
            time.sleep(1)
        for _fraction, step in plan:
            if step not in done:
                self._step(step)

    def _step(self, step: str) -> None:
        assert self.live is not None
        if step == "faults_on" and self.config.faults:
            self.faults(True)
        elif step == "faults_off" and self.config.faults:
            self.faults(False)
        elif step == "connect_newco":
            integration = self._connect("newco", webhook=True)
            self.expected.event("integration_connected", integration=integration)
        elif step == "kill_task" and self.config.faults:
            self.kill_a_task_process()
        elif step == "restart_scheduler" and self.config.faults:
            self.restart_scheduler()
        elif step == "pause_writeback":
            self.live.airflow("dags", "pause", "kombo_result_writeback")
            self.expected.event("writeback_paused")
        elif step == "unpause_writeback":
            self.live.airflow("dags", "unpause", "kombo_result_writeback")
            self.expected.event("writeback_unpaused")

    # Drain and check ----------------------------------------------------------------------------------------

    def finished_orders(self) -> dict[str, str]:
        """Order id -> 'completed' / 'cancelled' for every candidate who finished (the warehouse's record)."""
        from sandbox.warehouse import read_results

        return {row["order_id"]: row["status"] for row in read_results(self.warehouse_url)}

    def drained(self) -> bool:
        self.finish_email_candidates()
        self.cancel_no_shows()
        with self.store.engine.connect() as conn:
            open_orders = conn.execute(
                sa.text(
                    "SELECT count(*) FROM orders WHERE state NOT IN ('invited','duplicate','rejected','cancelled','failed')"
                )
            ).scalar_one()
            pending = conn.execute(
                sa.text("SELECT count(*) FROM result_outbox WHERE state IN ('pending', 'sending', 'claimed')")
            ).scalar_one()
        platform = self.platform.admin.invitations()
        waiting = [i for i in platform["invitations"] if i.get("status") == "invited"]
        finished = self.finished_orders()
        kombo = {o["id"]: o for o in self.sandbox.admin.list_orders(ids=list(finished))} if finished else {}
        unwritten = [o for o in finished if kombo.get(o, {}).get("status") == "OPEN"]
        known = set(self._store_states())
        unseen = [
            o for o, e in self.expected.orders.items() if e["kind"] != "not_entitled" and o not in known
        ]
        log.info(
            "draining: %s orders not final, %s unseen, %s outbox rows pending, %s candidates still taking the test, "
            "%s results not yet in Kombo", open_orders, len(unseen), pending, len(waiting), len(unwritten),
        )  # fmt: skip
        states = self._store_states()
        not_revoked = [
            o for o in self.expected.cancelled_in_ats | self.left_to_expire if states.get(o) != "cancelled"
        ]
        if not_revoked:
            log.info("draining: %s orders cancelled in the ATS or expiring not yet closed", len(not_revoked))
        return not (open_orders or pending or waiting or unwritten or unseen or not_revoked)

    def _order_times(self, order_ids: tuple[str, ...]) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Order id -> (invited_at, updated_at), typed by the state store's schema."""
        from kombo_sync.state.schema import orders

        query = sa.select(orders.c.id, orders.c.invited_at, orders.c.updated_at).where(
            orders.c.id.in_(order_ids)
        )
        with self.store.engine.connect() as conn:
            return {row.id: (row.invited_at, row.updated_at) for row in conn.execute(query)}

    def _store_states(self) -> dict[str, str]:
        with self.store.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, state FROM orders")).all())  # type: ignore[arg-type]

    def drain(self) -> list[str]:
        """Wait until everything is done; what was still not done at the timeout is a broken invariant. The
        timeout is extended while a no-show left to expire is not yet due (an invitation the faults held back
        expires EXPIRY_SECONDS after it went out, whenever that was), up to EXPIRY_GRACE_SECONDS past its expiry."""
        started = time.monotonic()
        deadline = started + self.config.drain_timeout_seconds
        try:
            while True:
                try:
                    if self.drained():
                        return []
                except Exception as exc:  # a database restarting, a component not up yet
                    log.debug("waiting for the pipeline to drain: %s", exc)
                now = time.monotonic()
                # Past the timeout, the pending expiries (read only then) may still extend it.
                if now >= deadline and now >= self._expiries_due_by():
                    return [
                        f"timed out after {now - started:.0f} s waiting for the pipeline to drain (see the checks "
                        "below for what is missing)"
                    ]
                time.sleep(2)
        finally:
            self.timings["drain_seconds"] = round(time.monotonic() - started, 1)

    def _expiries_due_by(self) -> float:
        """The monotonic time by which every no-show left to expire should be expired and its result written back:
        the latest invitation among them + EXPIRY_SECONDS + EXPIRY_GRACE_SECONDS (0 when there is none or it is
        unknown)."""
        from kombo_sync.runs import as_utc

        try:
            # Every one, closed or not: an order the lifecycle has just cancelled still has its Expired result to
            # send, which the grace is for.
            pending = set(self.left_to_expire)
            if not pending:
                return 0.0
            created = [
                as_utc(i["created_at"])
                for i in self.platform.admin.invitations()["invitations"]
                if i["order_id"] in pending and i.get("created_at")
            ]
        except Exception as exc:  # the same outages as above: no extension this time round
            log.debug("drain: the expiries could not be read: %s", exc)
            return 0.0
        latest = max((c for c in created if c is not None), default=None)
        if latest is None:
            return 0.0
        due = latest + timedelta(seconds=EXPIRY_SECONDS + EXPIRY_GRACE_SECONDS)
        return time.monotonic() + (due - datetime.now(UTC)).total_seconds()

    def check(self) -> list[str]:
        """The invariants, against the sandbox's and the platform's own records; returns the broken ones."""
        from kombo_sync.invites.email import message_id_for

        broken: list[str] = []
        states = self._store_states()
        platform = self.platform.admin.invitations()
        if not self.left_to_expire:
            self.anomalies.append(
                "no candidate of the lifecycle's customers never started: expiry not exercised"
            )
        if platform.get("reminder_duplicates"):
            broken.append(f"reminders created twice on the platform: {platform['reminder_duplicates']}")
        creations = platform.get("creations_by_order") or {}
        mails = self.smtp.count_by_message_id()
        channel_of = {self.integrations[c]: CUSTOMERS[c][1] for c in self.integrations}
        # Every order: invited exactly once, or duplicate / rejected with nothing sent.
        for order_id, expected in self.expected.orders.items():
            sent = creations.get(order_id, 0)
            if channel_of[expected["integration_id"]] == "email":
                sent = mails.get(message_id_for(order_id, FROM_EMAIL.rsplit("@", 1)[1]), 0)
            state = states.get(order_id)
            if order_id in self.expected.cancelled_in_ats:
                broken += self._check_cancelled_in_ats(order_id, state, sent, platform)
            elif order_id in self.left_to_expire:
                broken += self._check_expired(order_id, state, sent, platform)
            elif expected["kind"] == "invite":
                if state not in ("invited", "duplicate") or (state == "invited") != (sent == 1):
                    broken.append(
                        f"order {order_id}: state {state}, {sent} invitation(s); expected exactly one"
                    )
            elif expected["kind"] == "not_entitled":
                if sent or state not in (None, "rejected"):
                    broken.append(
                        f"order {order_id} (package not entitled): state {state}, {sent} invitation(s)"
                    )
            if sent > 1:
                broken.append(f"order {order_id}: {sent} invitations")
        for first, twin in self.expected.duplicate_pairs:
            # One of the two is invited; the other is closed as a duplicate (poll) or answered 422 and recorded
            # rejected (webhook), with nothing sent.
            # An invited order whose candidate never started ends cancelled (in the ATS, or expired): still the
            # pair's invited one.
            gone = self.expected.cancelled_in_ats | self.left_to_expire
            pair = sorted(
                [
                    "invited" if o in gone and states.get(o) == "cancelled" else states.get(o)
                    for o in (first, twin)
                ],
                key=str,
            )
            if pair == ["invited", "invited"] and reordered_after_cancel(
                first, twin, states, self._order_times((first, twin)), gone
            ):
                continue
            if pair not in (["duplicate", "invited"], ["invited", "rejected"]):
                broken.append(
                    f"duplicate pair {first}/{twin}: states {pair}, expected one invited, one closed"
                )
        for order_id, answer in self.expected.webhook_answers.items():
            kind = self.expected.orders[order_id]["kind"]
            wanted = {422} if kind == "not_entitled" else {200, 422} if kind == "duplicate" else {200}
            if answer not in wanted:
                self.anomalies.append(f"webhook for {order_id} ({kind}) answered {answer}, expected {wanted}")
        # Every finished candidate's result is in Kombo exactly once, with the payload the outbox says it sent.
        broken += self._check_results()
        # The new integration got its packages.
        newco = self.integrations.get("newco")
        if newco:
            packages = sorted(p["id"] for p in self.sandbox.admin.list_packages(newco))
            if packages != sorted(CUSTOMERS["newco"][2]):
                broken.append(f"new integration {newco}: Kombo has packages {packages}")
        broken += self._check_runs()
        broken += self._check_latency(platform)
        broken += self._check_no_candidate_data()
        return broken

    def _check_cancelled_in_ats(
        self, order_id: str, state: str | None, sent: int, platform: dict[str, Any]
    ) -> list[str]:
        """An order the recruiter cancelled while its candidate had not started: invited once, its invitation
        revoked exactly once, closed as cancelled, and no result of ours in Kombo."""
        revoked = (platform.get("revocations_by_order") or {}).get(order_id, 0)
        status = {i["order_id"]: i["status"] for i in platform["invitations"]}.get(order_id)
        problems = []
        if state != "cancelled" or sent != 1 or revoked != 1 or status != "revoked":
            problems.append(
                f"order {order_id} (cancelled in the ATS): state {state}, {sent} invitation(s), revoked {revoked} "
                f"time(s), platform status {status}; expected cancelled, 1, 1, revoked"
            )
        [order] = self.sandbox.admin.list_orders(ids=[order_id]) or [{}]
        applied = [w for w in order.get("results") or [] if w.get("outcome") == "applied"]
        if order.get("status") != "CANCELLED" or applied:
            problems.append(
                f"order {order_id} (cancelled in the ATS): Kombo shows {order.get('status')} with "
                f"{len(applied)} result(s) applied"
            )
        return problems

    def _check_expired(
        self, order_id: str, state: str | None, sent: int, platform: dict[str, Any]
    ) -> list[str]:
        """A candidate who never started: reminded (at most once per reminder), then the order expired: the
        invitation revoked once, the order cancelled with `expired_at`, and Kombo's order CANCELLED by our one
        result carrying the `Expired` attribute."""
        problems = []
        revoked = (platform.get("revocations_by_order") or {}).get(order_id, 0)
        reminded = (platform.get("reminders_by_order") or {}).get(order_id, 0)
        with self.store.engine.connect() as conn:
            expired_at = conn.execute(
                sa.text("SELECT expired_at FROM orders WHERE id = :id"), {"id": order_id}
            ).scalar()
        if state != "cancelled" or expired_at is None or sent != 1 or revoked != 1:
            problems.append(
                f"order {order_id} (never started): state {state}, expired_at {expired_at}, {sent} invitation(s), "
                f"revoked {revoked} time(s); expected cancelled, expired, 1, 1"
            )
        if reminded > len(REMINDER_SECONDS):
            problems.append(f"order {order_id} (never started): {reminded} reminder(s), expected 1 to 2")
        elif not reminded:
            problems += self._check_unreminded(order_id)
        [order] = self.sandbox.admin.list_orders(ids=[order_id]) or [{}]
        applied = [_payload(w["body"]) for w in order.get("results") or [] if w.get("outcome") == "applied"]
        labels = [a.get("label") for body in applied for a in (body or {}).get("attributes") or []]
        if order.get("status") != "CANCELLED" or len(applied) != 1 or "Expired" not in labels:
            problems.append(
                f"order {order_id} (never started): Kombo shows {order.get('status')} with {len(applied)} result(s) "
                f"applied, attributes {labels}; expected CANCELLED by one result marked Expired"
            )
        self.lifecycle_counts["expired"] += 1
        self.lifecycle_counts["reminders_to_expired_orders"] += reminded
        return problems

    def _check_unreminded(self, order_id: str) -> list[str]:
        """A never-started order expired without a reminder. The lifecycle expires an order whose expiry is due
        without reminding it first (a reminder after its invitation expired would be wrong); when faults hold
        the lifecycle's runs back past the reminders' times, that is what happens. Broken only if a `remind`
        task that started after the first reminder was due finished before the expiry, and no reminder of the
        order was recorded (claimed, sent, failed or put back for a retry) in the state store."""
        from kombo_sync.runs import as_utc

        with self.store.engine.connect() as conn:
            invited_at, recorded = conn.execute(
                sa.text(
                    "SELECT o.invited_at, (SELECT count(*) FROM reminders r WHERE r.order_id = o.id) "
                    "FROM orders o WHERE o.id = :id"
                ),
                {"id": order_id},
            ).one()
        invited_at = as_utc(invited_at)
        if invited_at is None:
            return [f"order {order_id} (never started): no invitation time, 0 reminder(s)"]
        due = invited_at + timedelta(seconds=REMINDER_SECONDS[0])
        expires = invited_at + timedelta(seconds=EXPIRY_SECONDS)
        runs = [
            (start, end)
            for start, end in self.remind_tasks()
            if start is not None and end is not None and start >= due and end <= expires
        ]
        self.lifecycle_counts["expired_unreminded"] += 1
        if recorded:
            self.lifecycle_counts["expired_unreminded_after_trying"] += 1
            return []
        if runs:
            return [
                f"order {order_id} (never started): 0 reminder(s) although {len(runs)} remind task(s) ran between "
                f"its first reminder's time ({due:%H:%M:%S}) and its expiry ({expires:%H:%M:%S})"
            ]
        self.anomalies.append(
            f"order {order_id} expired without a reminder: no remind task ran between {due:%H:%M:%S} and "
            f"{expires:%H:%M:%S} UTC"
        )
        return []

    def remind_tasks(self) -> list[tuple[datetime | None, datetime | None]]:
        """(start, end) in UTC of every successful `remind` task of the lifecycle DAG (the metadata DB)."""
        from kombo_sync.runs import as_utc

        query = sa.text(
            "SELECT start_date, end_date FROM task_instance WHERE dag_id = 'kombo_lifecycle' "
            "AND task_id = 'remind' AND state = 'success'"
        )
        if not hasattr(self, "_remind_tasks"):
            with self._metadata().connect() as conn:
                self._remind_tasks = [(as_utc(a), as_utc(b)) for a, b in conn.execute(query)]
        return self._remind_tasks

    def _check_no_candidate_data(self) -> list[str]:
        """No candidate e-mail, name or phone in any log the run wrote (Airflow's components and every task) or
        in any alert the team received."""
        patterns = [re.compile(r"candidate\.\d+@candidates\.example"), re.compile(r"\bFirst\d+\b"),
                    re.compile(r"\bLast\d+\b"), re.compile(r"\+4915550\d{5}")]  # fmt: skip
        files = log_files(self.work / "airflow")
        found = candidate_data_in_files(files, patterns, relative_to=self.work)
        alerts = [item.body.decode(errors="replace") for item in self.alerts.received]
        found += candidate_data_in_texts((("an alert", text) for text in alerts), patterns)
        self.timings["logs_scanned"] = len(files)
        self.timings["alerts_received"] = len(alerts)
        return found

    def _check_results(self) -> list[str]:
        """Every finished candidate's final result (the warehouse's newest row, corrections included) is in Kombo,
        each version applied at most once, and the outbox's record agrees with Kombo's."""
        from kombo_sync.runs import as_utc
        from sandbox.warehouse import read_results

        broken: list[str] = []
        rows = {row["order_id"]: row for row in read_results(self.warehouse_url)}
        kombo = {o["id"]: o for o in self.sandbox.admin.list_orders(ids=list(rows))} if rows else {}
        with self.store.engine.connect() as conn:
            outbox = conn.execute(
                sa.text(
                    "SELECT order_id, state, payload_json, source_updated_at, created_at FROM result_outbox "
                    "ORDER BY created_at"
                )
            ).all()
        versions: dict[str, list[Any]] = {}
        for version in outbox:
            versions.setdefault(version.order_id, []).append(version)
        for order_id, row in rows.items():
            order = kombo.get(order_id)
            if order is None:
                broken.append(f"result of {order_id}: order unknown to Kombo")
                continue
            applied = [_payload(w["body"]) for w in order.get("results") or [] if w["outcome"] == "applied"]
            if len(applied) != len({json.dumps(body, sort_keys=True) for body in applied}):
                broken.append(f"result of {order_id}: the same payload was applied more than once")
            wanted = "COMPLETED" if row["status"] == "completed" else "CANCELLED"
            if order["status"] != wanted:
                broken.append(
                    f"result of {order_id}: Kombo shows {order['status']}, the warehouse says {row['status']}"
                )
            known = versions.get(order_id) or []
            if not known:
                broken.append(f"result of {order_id}: never queued")
                continue
            newest = max(known, key=lambda v: as_utc(v.source_updated_at) or as_utc(v.created_at))
            if as_utc(newest.source_updated_at) != as_utc(row["updated_at"]):
                broken.append(f"result of {order_id}: the warehouse's newest row was not queued")
            # Every result here is final (COMPLETED/CANCELLED), so one version at most can be sent; a correction
            # read after it was sent is not_writable (docs/writeback.md), and Kombo keeps the sent one.
            sent = [v for v in known if v.state == "sent"]
            if len(sent) != 1:
                broken.append(f"result of {order_id}: {len(sent)} versions recorded sent, expected exactly 1")
            elif _payload(sent[0].payload_json) != _payload(order.get("result")):
                broken.append(f"result of {order_id}: Kombo does not hold the version recorded sent")
            if newest.state not in ("sent", "not_writable"):
                broken.append(f"result of {order_id}: the newest version is {newest.state}")
            elif newest.state == "not_writable" and sent and sent[0].created_at > newest.created_at:
                broken.append(f"result of {order_id}: the newest version is not_writable before any was sent")
            for version in known:
                if version.state == "not_writable" and _payload(version.payload_json) == _payload(
                    order.get("result")
                ):
                    broken.append(
                        f"result of {order_id}: a version recorded not_writable is what Kombo holds"
                    )
            self.result_outcomes[newest.state] = self.result_outcomes.get(newest.state, 0) + 1
        try:
            from tests.support.outbox_check import outbox_matches_kombo
        except ImportError:
            return broken
        return broken + outbox_matches_kombo(self.store, self.sandbox.admin, list(rows))

    def _check_runs(self) -> list[str]:
        """No scheduled run failed other than by an injected fault that a later scheduled run repaired."""
        broken: list[str] = []
        runs = [r for r in self.dag_runs() if r["run_type"] == "scheduled"]
        for dag_id, at_least in (
            ("kombo_order_intake", 3),
            ("kombo_result_writeback", 3),
            ("kombo_package_sync", 1),
            ("kombo_reconcile", 1),
            ("kombo_lifecycle", 1),
        ):
            mine = [r for r in runs if r["dag_id"] == dag_id]
            succeeded = [r for r in mine if r["state"] == "success"]
            failed = [r for r in mine if r["state"] == "failed"]
            self.timings[f"{dag_id}_scheduled_runs"] = len(mine)
            self.timings[f"{dag_id}_scheduled_failed"] = len(failed)
            if len(succeeded) < at_least:
                broken.append(f"{dag_id}: only {len(succeeded)} scheduled runs succeeded")
            if mine and mine[-1]["state"] == "failed":
                broken.append(f"{dag_id}: the last scheduled run failed ({mine[-1]['run_id']})")
            for run in failed:
                self.anomalies.append(f"{dag_id} scheduled run {run['run_id']} failed (faults were on)")
            if not self.config.faults and failed:
                broken.append(f"{dag_id}: {len(failed)} scheduled run(s) failed with no fault injected")
        return broken

    def _check_latency(self, platform: dict[str, Any]) -> list[str]:
        """Webhook-announced orders: from the webhook's answer to the platform's invitation, p95 <= 60 s."""
        created_at = {i["order_id"]: i["created_at"] for i in platform["invitations"]}
        seconds = []
        slowest: list[tuple[float, str]] = []
        for order_id, expected in self.expected.orders.items():
            if expected["webhook"] and expected["kind"] == "invite" and order_id in created_at:
                invited = datetime.fromisoformat(created_at[order_id].replace("Z", "+00:00")).timestamp()
                seconds.append(invited - expected["created"])
                slowest.append((invited - expected["created"], order_id))
        for took, order_id in sorted(slowest, reverse=True)[:3]:
            created = datetime.fromtimestamp(self.expected.orders[order_id]["created"], UTC)
            self.anomalies.append(
                f"slow invitation: {order_id} created {created.isoformat(timespec='seconds')}, invited after "
                f"{took:.1f} s"
            )
        if not seconds:
            return ["no webhook-announced order was invited through the platform"]
        seconds.sort()
        p95 = seconds[min(len(seconds) - 1, max(0, round(0.95 * len(seconds)) - 1))]
        self.timings.update(
            webhook_to_invitation_p50_seconds=round(statistics.median(seconds), 1),
            webhook_to_invitation_p95_seconds=round(p95, 1),
            webhook_to_invitation_max_seconds=round(seconds[-1], 1),
        )
        return [f"webhook -> invitation p95 {p95:.1f} s is over 60 s"] if p95 > 60 else []

    def summary(self, broken: list[str]) -> dict[str, Any]:
        states: dict[str, int] = {}
        for state in self._store_states().values():
            states[state] = states.get(state, 0) + 1
        finished = self.finished_orders()
        runs = self.dag_runs()
        by_dag: dict[str, dict[str, int]] = {}
        for run in runs:
            key = f"{run['dag_id']} ({run['run_type']})"
            by_dag.setdefault(key, {})
            by_dag[key][run["state"]] = by_dag[key].get(run["state"], 0) + 1
        # Results that landed while the write-back was paused: with overlap 0 only the catch-up (the first run
        # after the pause reaches back to the last successful run) reads them; the result checks above prove it.
        times = {e["kind"]: datetime.fromisoformat(e["at"]) for e in self.expected.events}
        paused_rows = 0
        if "writeback_paused" in times and "writeback_unpaused" in times:
            from kombo_sync.runs import as_utc
            from sandbox.warehouse import read_results

            paused_rows = sum(
                1
                for row in read_results(self.warehouse_url)
                if times["writeback_paused"]
                <= (as_utc(row["updated_at"]) or times["writeback_paused"])
                < times["writeback_unpaused"]
            )
        kinds: dict[str, int] = {}
        for expected in self.expected.orders.values():
            kinds[expected["kind"]] = kinds.get(expected["kind"], 0) + 1
        return {
            "minutes": self.config.minutes,
            "seed": self.config.seed,
            "database": "postgresql" if self.state_url.startswith("postgresql") else "sqlite",
            "orders_created": len(self.expected.orders),
            "orders_by_kind": kinds,
            "orders_announced_by_webhook": sum(1 for e in self.expected.orders.values() if e["webhook"]),
            "order_states": states,
            "duplicate_pairs": len(self.expected.duplicate_pairs),
            "orders_cancelled_in_ats": len(self.expected.cancelled_in_ats),
            "lifecycle": {"left_to_expire": len(self.left_to_expire), **self.lifecycle_counts},
            "results_finished": len(finished),
            "results_completed": sum(1 for s in finished.values() if s == "completed"),
            "results_corrected_in_warehouse": len(self.expected.corrected),
            "results_landed_while_writeback_paused": paused_rows,
            "newest_result_version_states": self.result_outcomes,
            "sandbox_faults": self.sandbox.admin.stats().get("faults"),
            "dag_runs": by_dag,
            "timings": self.timings,
            "events": self.expected.events,
            "alerts": [_first_line(item.body) for item in self.alerts.received],
            "anomalies": self.anomalies,
            "broken_invariants": broken,
        }

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
        for server in ("alerts", "smtp", "platform", "sandbox"):
            with contextlib.suppress(Exception):
                getattr(self, server).stop()
        with contextlib.suppress(Exception):
            self.store.dispose()
        if hasattr(self, "_metadata_engine"):
            self._metadata_engine.dispose()
        if self.created_databases:
            admin = sa.create_engine(
                self.config.pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
            )
            with admin.connect() as conn:
                for name in self.created_databases:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def _first_line(body: bytes) -> str:
    try:
        text = str(json.loads(body).get("text", ""))
    except ValueError:
        text = body.decode(errors="replace")
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _payload(value: Any) -> Any:
    """A result payload as compared: JSON-normalised."""
    return json.loads(json.dumps(value, sort_keys=True, default=str)) if value is not None else None


def run_soak(
    config: SoakConfig,
    runner: Callable[[SoakConfig], Soak] = Soak,
    figures: Callable[[Soak, list[str]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Set up, drive, drain, check; always stops what it started. Returns the summary (also written to files).
    `runner` builds the run (the chaos run's subclass, tests/support/chaos.py); `figures` adds its own figures
    to the summary under `chaos`, before anything is stopped."""
    soak = runner(config)
    summary: dict[str, Any] = {}
    try:
        soak.setup()
        soak.drive()
        if config.faults:
            soak.faults(False)
        broken = soak.drain()
        broken += soak.check()
        summary = soak.summary(broken)
        if figures is not None:
            summary["chaos"] = figures(soak, broken)
    except Exception as exc:
        summary = {"error": f"{type(exc).__name__}: {exc}", "events": soak.expected.events,
                   "anomalies": soak.anomalies, "broken_invariants": [f"the soak did not finish: {exc}"]}  # fmt: skip
        with contextlib.suppress(Exception):
            summary["partial"] = soak.summary(summary["broken_invariants"])
        raise_later: Exception | None = exc
    else:
        raise_later = None
    finally:
        if soak.work.exists():
            (soak.work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            (soak.work / "summary.txt").write_text(format_summary(summary))
        soak.stop()
    if raise_later is not None and not summary.get("partial"):
        raise raise_later
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = ["Scheduled soak summary", ""]
    for key in ("minutes", "seed", "database", "orders_created", "orders_by_kind", "orders_announced_by_webhook",
                "order_states", "duplicate_pairs", "orders_cancelled_in_ats", "lifecycle", "results_finished", "results_completed",
                "results_corrected_in_warehouse", "results_landed_while_writeback_paused",
                "newest_result_version_states", "sandbox_faults", "timings",
                "error"):  # fmt: skip
        if key in summary:
            lines.append(f"{key}: {summary[key]}")
    lines.append("dag runs:")
    for dag, states in (summary.get("dag_runs") or {}).items():
        lines.append(f"  {dag}: {states}")
    lines.append("events:")
    lines += [f"  {e}" for e in summary.get("events") or []]
    lines.append(f"alerts received ({len(summary.get('alerts') or [])}):")
    lines += [f"  {a}" for a in summary.get("alerts") or []]
    lines.append(f"anomalies ({len(summary.get('anomalies') or [])}):")
    lines += [f"  - {a}" for a in summary.get("anomalies") or []]
    broken = summary.get("broken_invariants") or []
    lines.append(f"broken invariants ({len(broken)}):")
    lines += [f"  - {b}" for b in broken]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="minutes of traffic (then it drains)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default=str(ROOT / ".local" / "soak"))
    parser.add_argument("--database", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--no-faults", action="store_true", help="traffic only, no injected faults")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the drain")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The stand-ins' own chatter (SMTP dialogues name recipients; one line per HTTP request) stays out.
    for noisy in ("mail.log", "httpx", "httpcore", "alembic", "kombo_sync.state"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = SoakConfig(minutes=args.minutes, seed=args.seed, workdir=Path(args.workdir), database=args.database,
                        faults=not args.no_faults, drain_timeout_seconds=args.drain_timeout)  # fmt: skip
    summary = run_soak(config)
    print(format_summary(summary))
    print(f"summary written to {Path(args.workdir) / 'summary.txt'}")
    return 1 if summary.get("broken_invariants") else 0


if __name__ == "__main__":
    raise SystemExit(main())
