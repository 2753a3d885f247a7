"""`make demo` / `make up`: the whole pipeline on one machine, with no Kombo account.

Starts the local Kombo sandbox, the platform stand-in and a local SMTP server, seeds three customers on three
ATSs, then runs the three DAGs through Airflow (`airflow dags test`, SQLite, LocalExecutor defaults) and checks,
order by order, that every order it created was invited (or marked duplicate for the stated reason) and that
every finished candidate's result is in Kombo. Everything it starts is stopped at the end.

`--up` instead starts a local trial with Airflow's UI against the same seeded sandbox: the api-server, scheduler,
dag-processor and triggerer as separate supervised processes (one that dies is restarted), the DAGs on one-minute
schedules, candidates who finish on their own, and keeps running until Ctrl-C (or SIGTERM).

Both take `--home` (default: `$KOMBO_SYNC_HOME`, else `.local/`) and use a fresh API key, webhook secret and
random ports on 127.0.0.1 each run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import yaml

from kombo_sync.backoff import exponential_delay

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAG_IDS = (
    "kombo_package_sync",
    "kombo_order_intake",
    "kombo_result_writeback",
    "kombo_reconcile",
    "kombo_housekeeping",
    "kombo_lifecycle",
)
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TRIAL_USER = "admin"
TRIAL_CATALOG_SCHEDULE = "*/2 * * * *"
TRIAL_SCHEDULE = "* * * * *"  # the trial's intake and write-back run every minute unless the environment says
TRIAL_RECONCILE_SCHEDULE = "*/5 * * * *"  # daily in production; in the trial often enough to see it work
TRIAL_LIFECYCLE_SCHEDULE = "*/5 * * * *"  # hourly in production (reminders and expiry)
DEFAULT_FINISH_AFTER = 60.0

CUSTOMERS = [
    # (ATS tool, customer key = Kombo end_user.origin_id, organisation, invitation channel)
    ("greenhouse", "acme", "Acme Corp", "platform"),
    ("workday", "globex", "Globex Inc", "platform"),
    ("smartrecruiters", "initech", "Initech GmbH", "email"),
]
PACKAGES = [
    ("py-basics", "SKILLS_TEST", "Python basics", "45-minute Python coding test"),
    ("sql-core", "SKILLS_TEST", "SQL fundamentals", "Joins, aggregates and window functions"),
    ("big-five", "BEHAVIORAL", "Personality profile", "Big-five personality questionnaire"),
    ("video-1", "VIDEO_INTERVIEW", "One-way video interview", "Three recorded questions"),
    ("bg-basic", "BACKGROUND_CHECK", "Basic background check", "Identity and employment history"),
]
ENTITLEMENTS = {
    "acme": ["py-basics", "sql-core", "big-five"],
    "globex": ["sql-core", "video-1"],
    "initech": ["py-basics", "big-five", "bg-basic", "video-1"],
}
CANDIDATES = [("Ada", "Lovelace"), ("Alan", "Turing"), ("Grace", "Hopper"), ("Edsger", "Dijkstra")]


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


class Stop(BaseException):  # like KeyboardInterrupt: no `except Exception` swallows it
    """SIGTERM (or SIGINT) asked the trial to stop."""


SMTP_LOGIN = "kombo-sync"


@dataclass(frozen=True)
class Keys:
    """Credentials made fresh for each run, so no other local sandbox or trial can sign for this one."""

    api_key: str
    platform_key: str
    webhook_secret: str
    # When set, the SMTP server requires this login (SMTP_LOGIN) and `kombo_smtp` carries it.
    smtp_password: str | None = None

    @classmethod
    def fresh(cls) -> Keys:
        return cls(
            api_key=f"sandbox-{secrets.token_urlsafe(16)}",
            platform_key=f"platform-{secrets.token_urlsafe(16)}",
            webhook_secret=secrets.token_urlsafe(32),
        )


def hold_port() -> socket.socket:
    """A socket bound to a random free port on 127.0.0.1 and not listening: nobody else can take the port,
    and anything sent there is refused at once. Close it to hand the port to the process that will serve it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with hold_port() as sock:
        return int(sock.getsockname()[1])


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def listeners(port: int) -> list[tuple[str, int | None]] | None:
    """(address, pid) of every socket listening on `port`; None where the system does not tell (macOS
    without root)."""
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return None
    return [
        (conn.laddr.ip, conn.pid)
        for conn in connections
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    ]


def ensure_ours(port: int, pid: int, what: str) -> None:
    """Only `pid` (or what it started) listens on `port`, and only on 127.0.0.1; unchecked where the OS hides it."""
    owners = listeners(port)
    if owners is None:
        return
    ours = process_tree(pid)
    if (
        not owners
        or any(owner not in ours for _ip, owner in owners)
        or any(ip != "127.0.0.1" for ip, _ in owners)
    ):
        raise RuntimeError(f"port {port} is not (only) our {what} on 127.0.0.1 ({owners}); run again")


def progress(home: Path) -> str:
    """One line on how far the trial's orders and results got, from the state store."""
    with contextlib.closing(sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True, timeout=5)) as db:
        orders = dict(db.execute("SELECT state, count(*) FROM orders GROUP BY state").fetchall())
        sent = db.execute(
            "SELECT count(DISTINCT order_id) FROM result_outbox WHERE state = 'sent'"
        ).fetchone()[0]
    recorded = ", ".join(f"{count} {state}" for state, count in sorted(orders.items())) or "none yet"
    return f"orders: {recorded}; results written to Kombo: {sent}"


def process_tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


class Processes:
    """Child processes, each in its own session; stopping one also stops whatever it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.logs: dict[str, IO[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        if name in self.logs:
            self.logs[name].close()
        log = self.logs[name] = open(self.log_path(name), "ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children[name] = proc
        self.started_at[name] = time.monotonic()
        return proc

    def all_pids(self) -> set[int]:
        return set().union(*(process_tree(proc.pid) for proc in self.children.values()))

    def kill_group(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the child's process group: what it started stays there even when the child itself died."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.children[name].pid, sig)

    def stop(self, name: str, timeout: float = 20.0) -> None:
        proc = self.children[name]
        tree = process_tree(proc.pid)
        if proc.poll() is None:
            self.kill_group(name, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(name)
            proc.wait()
        self.kill_group(name)  # anything of its group still running
        # Task processes may have left the group: whatever the child had started goes too.
        survivors = []
        for pid in tree - {proc.pid}:
            try:
                survivor = psutil.Process(pid)
                survivor.terminate()
                survivors.append(survivor)
            except psutil.NoSuchProcess:
                continue
        _gone, alive = psutil.wait_procs(survivors, timeout=5)
        for survivor in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                survivor.kill()

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)
        for log in self.logs.values():
            log.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """One demo or trial per home at a time (each resets the home's state store and warehouse)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another `make demo` or `make up` is using {home}; stop it, or pass --home"
            ) from None
        yield


def connections(home: Path, ports: dict[str, int], keys: Keys) -> dict[str, dict[str, Any]]:
    """The connections of airflow_settings.yaml with this run's ports, files and credentials filled in."""
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    result: dict[str, dict[str, Any]] = {}
    for conn in settings["connections"]:
        value: dict[str, Any] = {"conn_type": conn["conn_type"]}
        for key in ("host", "port", "login", "password", "schema"):
            if conn.get(f"conn_{key}") not in (None, ""):
                value[key] = conn[f"conn_{key}"]
        if conn.get("conn_extra"):
            value["extra"] = conn["conn_extra"]
        conn_id = conn["conn_id"]
        if conn_id == "kombo_default":
            value.update(host=f"http://127.0.0.1:{ports['kombo']}/v1", password=keys.api_key)
        elif conn_id == "kombo_platform":
            value.update(host=f"http://127.0.0.1:{ports['platform']}", password=keys.platform_key)
        elif conn_id == "kombo_smtp":
            value["port"] = ports["smtp"]
            if keys.smtp_password:
                value.update(login=SMTP_LOGIN, password=keys.smtp_password)
        elif conn_id == "kombo_state":
            value["host"] = str(home / "state.db")
        elif conn_id == "kombo_warehouse":
            value["host"] = str(home / "warehouse.db")
        elif conn_id == "kombo_webhook":
            value["password"] = keys.webhook_secret
        result[conn_id] = value
    return result


def airflow_env(home: Path) -> dict[str, str]:
    """The environment Airflow runs with: private AIRFLOW_HOME, the project's DAGs and plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "KOMBO_SYNC_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        }
    )
    return env


def airflow(env: dict[str, str], *args: str, log: Path | None = None, check: bool = True) -> int:
    cmd = [str(BIN / "airflow"), *args]
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}); see {log}")
    return proc.returncode


def fresh_metadata_db(env: dict[str, str], home: Path) -> None:
    """An empty, migrated Airflow metadata DB: migrated once per Airflow version, then copied (a second)."""
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    template = airflow_home / f"airflow-{version('apache-airflow')}.db.template"
    db = airflow_home / "airflow.db"
    for leftover in ("airflow.db-journal", "airflow.db-wal", "airflow.db-shm"):
        (airflow_home / leftover).unlink(missing_ok=True)
    if not template.exists():
        db.unlink(missing_ok=True)
        airflow(env, "db", "migrate", log=home / "logs" / "airflow-db.log")
        shutil.copyfile(db, template)
    else:
        shutil.copyfile(template, db)


@contextmanager
def services(
    home: Path, keys: Keys, webhook_url: str, finish_after: float | None = None
) -> Iterator[tuple[Processes, dict[str, int]]]:
    """The sandbox, the platform stand-in and the SMTP server on fresh ports, stopped whatever happens."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ports = {"kombo": free_port(), "platform": free_port(), "smtp": free_port()}
    procs = Processes(logs)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "include"), str(ROOT)]))
    py = sys.executable
    platform_args = [py, "-m", "sandbox.platform", "--port", str(ports["platform"]), "--api-key",
                     keys.platform_key, "--warehouse-url", f"sqlite:///{home / 'warehouse.db'}"]  # fmt: skip
    if finish_after is not None:
        platform_args += ["--finish-after", str(finish_after)]
    try:
        procs.start(
            "kombo-sandbox",
            [py, "-m", "sandbox", "--port", str(ports["kombo"]), "--api-key", keys.api_key,
             "--webhook-url", webhook_url, "--webhook-secret", keys.webhook_secret],
            env,
        )  # fmt: skip
        procs.start("platform", platform_args, env)
        smtp_args = [
            py,
            "-m",
            "sandbox.smtp",
            "--port",
            str(ports["smtp"]),
            "--mailbox",
            str(home / "mailbox"),
        ]
        if keys.smtp_password:  # in the environment, never on a command line (ps shows those)
            smtp_args += ["--login", SMTP_LOGIN]
        procs.start("smtp", smtp_args, {**env, "SMTP_SANDBOX_PASSWORD": keys.smtp_password or ""})
        wait_http(
            f"http://127.0.0.1:{ports['kombo']}/v1/check-api-key",
            headers={"Authorization": f"Bearer {keys.api_key}"},
        )
        wait_http(f"http://127.0.0.1:{ports['platform']}/_platform/invitations")
        wait_port(ports["smtp"])
        # A port could have been taken between choosing and binding it: make sure our own servers answer.
        config = httpx.get(f"http://127.0.0.1:{ports['kombo']}/_sandbox/config", timeout=5).json()
        if config.get("webhook_url") != webhook_url:
            raise RuntimeError(f"another process answers on port {ports['kombo']}; run again")
        for name, port in (("platform", ports["platform"]), ("smtp", ports["smtp"])):
            ensure_ours(port, procs.children[name].pid, name)
        say(
            f"sandbox on :{ports['kombo']}, platform stand-in on :{ports['platform']}, SMTP on :{ports['smtp']}"
            f" (logs in {logs})"
        )
        yield procs, ports
    finally:
        procs.stop_all()


def seed(home: Path, ports: dict[str, int], env: dict[str, str]) -> dict[str, str]:
    """Three customers on three ATSs: integrations in Kombo and the registry, packages and entitlements in
    the warehouse. Returns customer key -> integration id."""
    from sandbox.testing import SandboxAdmin

    admin = SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}")
    integrations: dict[str, str] = {}
    bootstrap = []
    for tool, customer, org, channel in CUSTOMERS:
        created = admin.create_integration(tool=tool, organization_name=org, origin_id=customer)
        integrations[customer] = created["id"]
        bootstrap.append({"id": created["id"], "tool": tool, "customer_key": customer,
                          "organization_name": org, "invitation_channel": channel})  # fmt: skip
    bootstrap_file = home / "integrations.yaml"
    bootstrap_file.write_text(yaml.safe_dump({"integrations": bootstrap}, sort_keys=False))
    subprocess.run(
        [sys.executable, "-m", "kombo_sync.registry", "load-bootstrap", str(bootstrap_file)],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip

    with sqlite3.connect(home / "warehouse.db") as db:
        db.executescript((ROOT / "include" / "sql" / "warehouse_catalog_schema.sql").read_text())
        db.executemany(
            "INSERT INTO catalog_packages (package_id, type, name, description, active) VALUES (?, ?, ?, ?, 1)",
            PACKAGES,
        )
        db.executemany(
            "INSERT INTO catalog_entitlements (customer_key, package_id) VALUES (?, ?)",
            [(customer, pkg) for customer, pkgs in ENTITLEMENTS.items() for pkg in pkgs],
        )
    say(f"seeded {len(integrations)} customers: " + ", ".join(f"{c} -> {i}" for c, i in integrations.items()))
    return integrations


@dataclass(frozen=True)
class CreatedOrder:
    """An order the demo created, and what the pipeline must make of it."""

    id: str
    integration_id: str
    expect: str = "invited"  # invited | duplicate | rejected
    reason: str = ""  # why, when not invited
    twin: str | None = None  # duplicate: the order it repeats; the pipeline may keep either of the two


def create_orders(ports: dict[str, int], integrations: dict[str, str]) -> list[CreatedOrder]:
    """Orders as recruiters would create them in their ATS: one per candidate and package, plus one repeat."""
    from sandbox.testing import SandboxAdmin

    admin = SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}")
    created: list[CreatedOrder] = []
    for customer, integration_id in integrations.items():
        for n, (first, last) in enumerate(CANDIDATES[:3]):
            package = ENTITLEMENTS[customer][n % len(ENTITLEMENTS[customer])]
            order = admin.create_order(
                integration_id=integration_id,
                package_id=package,
                candidate={"email": f"{first.lower()}.{last.lower()}@candidates.example", "first_name": first,
                           "last_name": last, "remote_id": f"cand-{customer}-{n}"},
                application={"remote_id": f"app-{customer}-{n}"},
                job={"remote_id": f"job-{customer}", "name": "Data Engineer"},
            )  # fmt: skip
            created.append(CreatedOrder(order["id"], integration_id))
    # The same candidate ordered twice for the same package: the intake marks it duplicate, no second mail.
    first_customer, first_integration = next(iter(integrations.items()))
    repeat = admin.create_order(
        integration_id=first_integration,
        package_id=ENTITLEMENTS[first_customer][0],
        candidate={"email": "ada.lovelace@candidates.example", "first_name": "Ada", "last_name": "Lovelace",
                   "remote_id": f"cand-{first_customer}-0"},
        application={"remote_id": f"app-{first_customer}-0"},
        job={"remote_id": f"job-{first_customer}", "name": "Data Engineer"},
    )  # fmt: skip
    created.append(
        CreatedOrder(
            repeat["id"],
            first_integration,
            "duplicate",
            "same candidate and package ordered twice",
            created[0].id,
        )
    )
    return created


def run_dag(env: dict[str, str], home: Path, dag_id: str, conf: dict[str, Any] | None = None) -> None:
    say(f"running {dag_id} through Airflow ...")
    started = time.monotonic()
    args = ["dags", "test", dag_id]
    if conf:
        args += ["--conf", json.dumps(conf)]
    code = airflow(env, *args, log=home / "logs" / f"{dag_id}.log", check=False)
    outcome = "succeeded" if code == 0 else f"FAILED (exit {code})"
    say(f"{dag_id} {outcome} in {time.monotonic() - started:.1f} s (log: {home / 'logs' / f'{dag_id}.log'})")
    if code != 0:
        raise RuntimeError(f"{dag_id} failed; see {home / 'logs' / f'{dag_id}.log'}")


def finish_email_candidates(home: Path, min_age_seconds: float | None = None) -> int:
    """Candidates invited by e-mail finish too: their results land in the same warehouse table. Only those
    invited at least `min_age_seconds` ago (default: all) and not finished yet."""
    from sqlalchemy import create_engine, select

    from kombo_sync.state.schema import orders
    from sandbox.warehouse import read_results, write_results

    warehouse_url = f"sqlite:///{home / 'warehouse.db'}"
    engine = create_engine(f"sqlite:///{home / 'state.db'}")
    try:
        with engine.connect() as conn:
            invited = conn.execute(
                select(orders.c.id, orders.c.invited_at)
                .where(orders.c.state == "invited", orders.c.channel == "email")
                .order_by(orders.c.id)
            ).all()
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    due = [
        order_id
        for order_id, invited_at in invited
        if min_age_seconds is None or (invited_at and invited_at <= now - timedelta(seconds=min_age_seconds))
    ]
    done = {row["order_id"] for row in read_results(warehouse_url, due)} if due else set()
    due = [order_id for order_id in due if order_id not in done]
    rows = [
        {
            "order_id": order_id,
            "status": "completed",
            "score": 60 + 7 * n,
            "max_score": 100,
            "completed_at": now,
            "result_url": f"https://assessments.provider.example/results/{order_id}",
            "sub_results": [
                {"id": "logic", "label": "Logic", "score": 30 + n, "max": 50, "status": "COMPLETED"},
                {"id": "verbal", "label": "Verbal", "score": 30 + 6 * n, "max": 50, "status": "COMPLETED"},
            ],
            "attributes": [{"label": "Role fit", "value": "High" if n % 2 == 0 else "Medium"}],
            "updated_at": now,
        }
        for n, order_id in enumerate(due)
    ]
    return write_results(warehouse_url, rows) if rows else 0


# ------------------------------------------------------------------------------------------------------------
# The demo's self-check: order by order, against the sandbox's own record.
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Observed:
    """What the pipeline and the sandbox recorded, per order id."""

    state: dict[
        str, dict[str, Any]
    ]  # the state store's orders: state, channel, duplicate_of, last_error, ...
    platform_invited: set[str]  # order ids the platform stand-in holds an invitation for
    mailbox_message_ids: set[str]  # Message-IDs in the SMTP mailbox
    finished: dict[str, str]  # warehouse: order id -> completed | cancelled
    kombo: dict[str, dict[str, Any]]  # the sandbox's admin view of each order (status, result, results)
    dead_letters: dict[str, str] = field(default_factory=dict)  # order id -> error code


def check_orders(created: list[CreatedOrder], seen: Observed, *, all_finish: bool = True) -> list[str]:
    """Problems found, empty when every created order was handled as expected and every finished candidate's
    result is in Kombo. Counts alone prove nothing: zero orders invited and zero results agree too."""
    problems: list[str] = []
    if not created:
        return ["the demo created no orders"]
    expect = {order.id: order.expect for order in created}
    original = {order.id: order.twin for order in created if order.twin}
    for order in created:
        # Two orders for the same candidate and package: one is invited, the other is its duplicate, and
        # which of the two comes first is the pipeline's call.
        twin_row = seen.state.get(order.twin or "", {})
        if (
            order.twin
            and twin_row.get("state") == "duplicate"
            and twin_row.get("duplicate_of") == order.id
            and seen.state.get(order.id, {}).get("state") == "invited"
        ):
            expect[order.id], expect[order.twin] = "invited", "duplicate"
            original.pop(order.id, None)
            original[order.twin] = order.id
    invited: list[str] = []
    for order in created:
        row = seen.state.get(order.id)
        if row is None:
            problems.append(f"{order.id}: created in the ATS but never recorded by the pipeline")
            continue
        state = row.get("state")
        expected = expect[order.id]
        if state == "invited":
            if expected != "invited":
                problems.append(f"{order.id}: invited, but expected {expected} ({order.reason})")
                continue
            invited.append(order.id)
            channel = row.get("channel")
            if channel == "platform" and order.id not in seen.platform_invited:
                problems.append(f"{order.id}: invited on the platform, but the platform has no invitation")
            elif channel == "email" and row.get("external_id") not in seen.mailbox_message_ids:
                problems.append(f"{order.id}: invited by e-mail, but no such e-mail is in the mailbox")
            elif channel not in ("platform", "email"):
                problems.append(f"{order.id}: invited through unknown channel {channel!r}")
        elif state == expected == "duplicate":
            if not row.get("duplicate_of"):
                problems.append(f"{order.id}: duplicate, but the pipeline recorded no original order")
            elif order.id in original and row["duplicate_of"] != original[order.id]:
                problems.append(
                    f"{order.id}: duplicate of {row['duplicate_of']}, expected of {original[order.id]}"
                )
        elif state == expected == "rejected":
            if not row.get("last_error"):
                problems.append(f"{order.id}: rejected without a recorded reason")
        else:
            detail = f": {row['last_error']}" if row.get("last_error") else ""
            problems.append(f"{order.id}: {state}{detail}, expected {expected}")

    finished = [order_id for order_id in invited if order_id in seen.finished]
    if not finished:
        problems.append("no invited candidate finished, so no result could be written back")
    elif all_finish:
        for order_id in invited:
            if order_id not in seen.finished:
                problems.append(
                    f"{order_id}: invited, but the candidate's result never reached the warehouse"
                )
    for order_id in finished:
        kombo = seen.kombo.get(order_id)
        expected_status = seen.finished[order_id].upper()
        if kombo is None:
            problems.append(f"{order_id}: not found in Kombo")
        elif not kombo.get("result"):
            why = f" (dead letter: {seen.dead_letters[order_id]})" if order_id in seen.dead_letters else ""
            problems.append(f"{order_id}: the candidate finished, but Kombo has no result{why}")
        elif kombo.get("status") != expected_status:
            problems.append(f"{order_id}: Kombo shows {kombo.get('status')}, the warehouse {expected_status}")
    return problems


def observe(home: Path, ports: dict[str, int], created: list[CreatedOrder]) -> Observed:
    from sqlalchemy import create_engine, text

    from sandbox.testing import SandboxAdmin
    from sandbox.warehouse import read_results

    engine = create_engine(f"sqlite:///{home / 'state.db'}")
    try:
        with engine.connect() as conn:
            state = {
                row["id"]: dict(row)
                for row in conn.execute(
                    text(
                        "SELECT o.id, o.state, o.channel, o.duplicate_of, o.last_error, i.external_id"
                        " FROM orders o LEFT JOIN invitations i ON i.order_id = o.id"
                    )
                ).mappings()
            }
            dead: dict[str, str] = {
                str(order_id): str(code)
                for order_id, code in conn.execute(
                    text("SELECT order_id, last_error_code FROM result_outbox WHERE state = 'dead'")
                ).all()
            }
    finally:
        engine.dispose()
    platform = httpx.get(f"http://127.0.0.1:{ports['platform']}/_platform/invitations", timeout=10).json()
    index = home / "mailbox" / "index.json"
    mails = json.loads(index.read_text()) if index.exists() else []
    finished = {row["order_id"]: row["status"] for row in read_results(f"sqlite:///{home / 'warehouse.db'}")}
    with SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}") as admin:
        kombo = {order["id"]: order for order in admin.list_orders(ids=[order.id for order in created])}
    return Observed(
        state=state,
        platform_invited={invitation["order_id"] for invitation in platform["invitations"]},
        mailbox_message_ids={str(mail["message_id"]) for mail in mails if mail.get("message_id")},
        finished=finished,
        kombo=kombo,
        dead_letters=dead,
    )


def summarize(
    home: Path, ports: dict[str, int], integrations: dict[str, str], created: list[CreatedOrder]
) -> bool:
    """Print what happened and check it order by order against the sandbox; True when everything holds."""
    from sandbox.testing import SandboxAdmin

    seen = observe(home, ports, created)
    problems: list[str] = []
    rows = []
    with SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}") as admin:
        for customer, integration_id in integrations.items():
            kombo_packages = admin.list_packages(integration_id)
            expected = sorted(ENTITLEMENTS[customer])
            if sorted(p["id"] for p in kombo_packages) != expected:
                problems.append(
                    f"{integration_id}: Kombo has {len(kombo_packages)} packages, expected {expected}"
                )
            ids = [order.id for order in created if order.integration_id == integration_id]
            states = [seen.state.get(order_id, {}).get("state") for order_id in ids]
            written = sum(1 for order_id in ids if seen.kombo.get(order_id, {}).get("result"))
            rows.append(
                (integration_id, len(kombo_packages), len(ids), states.count("invited"),
                 states.count("duplicate"), states.count("rejected") + states.count("failed"), written)
            )  # fmt: skip
    problems += check_orders(created, seen)

    header = (
        "integration",
        "packages",
        "orders",
        "invited",
        "duplicate",
        "rejected/failed",
        "results in Kombo",
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print()
    print(
        f"invitations in the platform stand-in: {len(seen.platform_invited)}   "
        f"e-mails in the SMTP mailbox: {len(seen.mailbox_message_ids)}   "
        f"results in the warehouse: {len(seen.finished)}   dead-lettered results: {len(seen.dead_letters)}"
    )
    if problems:
        print("\nCHECK FAILED, order by order against the sandbox's own record:")
        for problem in problems:
            print(f"  - {problem}")
        return False
    print(
        f"\nChecked order by order: all {len(created)} orders handled as expected "
        f"({sum(1 for o in created if o.expect == 'duplicate')} duplicate by design), "
        f"every finished candidate's result is in Kombo."
    )
    return True


def demo(home: Path) -> int:
    keys = Keys.fresh()
    # Nothing serves webhooks in the demo (the DAGs run with `airflow dags test`): the sandbox sends them to a
    # port this process holds, where they are refused at once, and the intake finds the orders by polling.
    with hold_port() as webhook_port:
        webhook_url = f"http://127.0.0.1:{webhook_port.getsockname()[1]}/kombo/webhooks"
        with services(home, keys, webhook_url) as (_procs, ports):
            env = airflow_env(home)
            for conn_id, value in connections(home, ports, keys).items():
                env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value)
            say("preparing Airflow (fresh SQLite metadata DB, LocalExecutor defaults) ...")
            fresh_metadata_db(env, home)
            subprocess.run(
                [sys.executable, "-m", "kombo_sync.state", "migrate"], cwd=ROOT, env=env, check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            integrations = seed(home, ports, env)
            run_dag(env, home, "kombo_package_sync")
            created = create_orders(ports, integrations)
            say(f"recruiters created {len(created)} orders in their ATSs")
            run_dag(env, home, "kombo_order_intake")
            finished = httpx.post(
                f"http://127.0.0.1:{ports['platform']}/_platform/simulate", json={"all": True}, timeout=30
            )
            finished.raise_for_status()
            done = finished.json()
            emailed = finish_email_candidates(home)
            say(
                f"candidates finished their assessments: {done['completed']} completed and {done['cancelled']} "
                f"cancelled on the platform, {emailed} invited by e-mail completed"
            )
            run_dag(env, home, "kombo_result_writeback")
            # Retention: nothing is old enough yet, so this erases nothing; it shows the DAG works.
            run_dag(env, home, "kombo_housekeeping")
            ok = summarize(home, ports, integrations, created)
    say("stopped the sandbox, the platform stand-in and the SMTP server")
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------------------
# `make up`: the local trial.
# ------------------------------------------------------------------------------------------------------------


def trial_password(airflow_home: Path) -> tuple[Path, str]:
    """The simple auth manager's password file with the trial user's password (kept across runs)."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    path = airflow_home / "simple_auth_manager_passwords.json"
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError):
        passwords = {}
    if not isinstance(passwords, dict) or not passwords.get(TRIAL_USER):
        passwords = {TRIAL_USER: secrets.token_urlsafe(12)}
        path.write_text(json.dumps(passwords))
        path.chmod(0o600)
    return path, str(passwords[TRIAL_USER])


def trial_env(home: Path, api_port: int, password_file: Path) -> dict[str, str]:
    cpus = os.cpu_count() or 2
    env = airflow_env(home)
    env.update(
        {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # The scheduler's and the triggerer's log servers: fresh ports, not 8793/8794 shared with others.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # LocalExecutor starts `parallelism` worker processes: two per core, not Airflow's default 32.
            "AIRFLOW__CORE__PARALLELISM": str(max(2, 2 * cpus)),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": str(max(1, min(2, cpus // 2))),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{TRIAL_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "KOMBO_INTAKE_SCHEDULE": os.environ.get("KOMBO_INTAKE_SCHEDULE") or TRIAL_SCHEDULE,
            "KOMBO_WRITEBACK_SCHEDULE": os.environ.get("KOMBO_WRITEBACK_SCHEDULE") or TRIAL_SCHEDULE,
            # Nightly in production; in the trial every 2 minutes, so its scheduled runs show too (an unchanged
            # catalog costs no call to Kombo).
            "KOMBO_CATALOG_SCHEDULE": os.environ.get("KOMBO_CATALOG_SCHEDULE") or TRIAL_CATALOG_SCHEDULE,
            "KOMBO_RECONCILE_SCHEDULE": os.environ.get("KOMBO_RECONCILE_SCHEDULE")
            or TRIAL_RECONCILE_SCHEDULE,
            "KOMBO_LIFECYCLE_SCHEDULE": os.environ.get("KOMBO_LIFECYCLE_SCHEDULE")
            or TRIAL_LIFECYCLE_SCHEDULE,
        }
    )
    return env


def cli_line(env: dict[str, str]) -> str:
    """One line to paste into a shell so that `airflow ...` talks to the trial's metadata DB and DAGs."""
    keys = ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER",
            "AIRFLOW__CORE__LOAD_EXAMPLES", "KOMBO_SYNC_HOME", "KOMBO_INTAKE_SCHEDULE",
            "KOMBO_WRITEBACK_SCHEDULE", "KOMBO_CATALOG_SCHEDULE", "KOMBO_RECONCILE_SCHEDULE",
            "KOMBO_LIFECYCLE_SCHEDULE", "PYTHONPATH")  # fmt: skip
    assignments = " ".join(f"{key}={shlex.quote(env[key])}" for key in keys)
    return f'export {assignments} PATH={shlex.quote(str(BIN))}:"$PATH"'


class Supervisor:
    """Airflow's components as separate processes; one that exits is restarted (with a growing pause when it
    keeps dying), which `airflow standalone` does not do."""

    def __init__(self, procs: Processes, env: dict[str, str]) -> None:
        self.procs = procs
        self.env = env
        self.restarts: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        self.restart_at: dict[str, float] = {}

    def start(self, component: str) -> None:
        self.procs.start(component, [str(BIN / "airflow"), component], self.env)

    def start_all(self) -> None:
        for component in COMPONENTS:
            self.start(component)

    def check(self) -> None:
        now = time.monotonic()
        for component in COMPONENTS:
            proc = self.procs.children[component]
            if proc.poll() is None:
                continue
            if component not in self.restart_at:
                # Its LocalExecutor workers, log server and task processes outlive it: stop them first.
                self.procs.kill_group(component, signal.SIGTERM)
                lived = now - self.procs.started_at[component]
                self.restarts[component] += 1
                pause = 1.0 if lived > 120 else exponential_delay(1.0, self.restarts[component], cap=60.0)
                self.restart_at[component] = now + pause
                say(
                    f"the {component} exited (code {proc.returncode}) after {lived:.0f} s; restarting it in "
                    f"{pause:.0f} s (restart {self.restarts[component]}; log: {self.procs.log_path(component)})"
                )
            elif now >= self.restart_at[component]:
                del self.restart_at[component]
                self.procs.kill_group(component)
                self.start(component)
                say(f"restarted the {component} (pid {self.procs.children[component].pid})")


class TrialApi:
    """The trial's own calls to Airflow's REST API, as the trial user."""

    def __init__(self, base_url: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.password = password

    def login(self) -> None:
        token = self.http.post("/auth/token", json={"username": TRIAL_USER, "password": self.password})
        token.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Retries what SQLite's single writer (5xx) or an api-server restart (no connection) makes fail."""
        failure = ""
        for attempt in range(10):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json()
                failure = f"{response.status_code} {response.text[:300]}"
            time.sleep(1 + attempt)
        raise RuntimeError(f"{method} {path}: {failure}")

    def close(self) -> None:
        self.http.close()


def wait_for(what: str, condition: Any, timeout: float, supervisor: Supervisor) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.check()
        value = condition()
        if value:
            return value
        time.sleep(2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def install_stop_handlers() -> None:
    def stop(signum: int, _frame: Any) -> None:
        # Once: a second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def up(home: Path, finish_after: float) -> int:
    keys = Keys.fresh()
    api_hold = hold_port()  # the api-server's port, held until the api-server starts
    api_port = int(api_hold.getsockname()[1])
    base_url = f"http://127.0.0.1:{api_port}"
    try:
        with services(home, keys, f"{base_url}/kombo/webhooks", finish_after) as (procs, ports):
            password_file, password = trial_password(home / "airflow")
            env = trial_env(home, api_port, password_file)
            say("preparing Airflow (fresh SQLite metadata DB, connections and pool in it) ...")
            fresh_metadata_db(env, home)
            subprocess.run(
                [sys.executable, "-m", "kombo_sync.state", "migrate"], cwd=ROOT, env=env, check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            # Connections in Airflow's metadata DB (not AIRFLOW_CONN_* variables): they show in Admin >
            # Connections, and edits there reach the next task. The file holds secrets: gone once imported.
            conn_file = home / "airflow" / "connections.json"
            conn_file.touch(mode=0o600)
            conn_file.write_text(json.dumps(connections(home, ports, keys)))
            try:
                airflow(
                    env,
                    "connections",
                    "import",
                    "--overwrite",
                    str(conn_file),
                    log=procs.log_path("airflow-cli"),
                )
            finally:
                conn_file.unlink()
            settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
            pool_file = home / "airflow" / "pools.json"
            pool_file.write_text(
                json.dumps(
                    {p["pool_name"]: {"slots": p["pool_slot"], "description": p["pool_description"]}
                     for p in settings.get("pools", [])}
                )
            )  # fmt: skip
            airflow(env, "pools", "import", str(pool_file), log=procs.log_path("airflow-cli"))
            integrations = seed(home, ports, env)

            supervisor = Supervisor(procs, env)
            api_hold.close()
            supervisor.start_all()
            say(
                f"started Airflow's {', '.join(COMPONENTS)} as separate processes (parallelism "
                f"{env['AIRFLOW__CORE__PARALLELISM']} for {os.cpu_count()} CPUs); waiting for the api-server ..."
            )

            def healthy() -> bool:
                try:
                    return httpx.get(f"{base_url}/api/v2/monitor/health", timeout=3).status_code == 200
                except httpx.HTTPError:
                    return False

            started = time.monotonic()
            wait_for("the api-server's health endpoint", healthy, 300, supervisor)
            ensure_ours(api_port, procs.children["api-server"].pid, "api-server")
            say(f"the api-server answers after {time.monotonic() - started:.0f} s")

            api = TrialApi(base_url, password)
            api.login()

            def parsed() -> bool:
                dags = api.call("GET", "/api/v2/dags", params={"dag_id_pattern": "kombo_", "limit": 100})
                return {dag["dag_id"] for dag in dags["dags"]} >= set(DAG_IDS)

            wait_for("the dag-processor to parse the DAGs", parsed, 300, supervisor)
            # The DAGs start paused; only now that the api-server answers may their tasks run.
            for dag_id in DAG_IDS:
                api.call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
            say(f"unpaused {', '.join(DAG_IDS)}")
            run = api.call("POST", "/api/v2/dags/kombo_package_sync/dagRuns", json={"logical_date": None})

            def catalog_done() -> str | None:
                state = api.call("GET", f"/api/v2/dags/kombo_package_sync/dagRuns/{run['dag_run_id']}")[
                    "state"
                ]
                if state == "failed":
                    raise RuntimeError(f"kombo_package_sync failed; see the run in {base_url}")
                return "done" if state == "success" else None

            say("publishing the packages (kombo_package_sync) before recruiters order them ...")
            wait_for("kombo_package_sync", catalog_done, 300, supervisor)
            created = create_orders(ports, integrations)
            say(
                f"recruiters created {len(created)} orders in their ATSs (their webhooks go to the api-server)"
            )
            api.close()

            print(
                f"""
================================================================================================
The local trial is up ({time.monotonic() - started:.0f} s after the api-server started).

  Airflow UI    {base_url}    user: {TRIAL_USER}    password: {password}
  Airflow CLI   paste this line, then `airflow dags list`, `airflow connections list`, ...:
    {cli_line(env)}

  Kombo sandbox http://127.0.0.1:{ports["kombo"]}/v1 (admin API /_sandbox, key {keys.api_key})
  Platform      http://127.0.0.1:{ports["platform"]} (admin API /_platform); SMTP mailbox {home / "mailbox"}
  Webhooks      {base_url}/kombo/webhooks, signed with this run's fresh secret (connection kombo_webhook)
  Schedules     intake '{env["KOMBO_INTAKE_SCHEDULE"]}', write-back '{env["KOMBO_WRITEBACK_SCHEDULE"]}', catalog '{env["KOMBO_CATALOG_SCHEDULE"]}', reconcile '{env["KOMBO_RECONCILE_SCHEDULE"]}', lifecycle '{env["KOMBO_LIFECYCLE_SCHEDULE"]}' (UTC cron)
  Candidates    finish {finish_after:.0f} s after their invitation (platform and e-mail), results flow back
  Processes     api-server, scheduler, dag-processor, triggerer: one that dies is restarted, and said here
  Logs          {home / "logs"}

What to look at next:
  1. The DAGs: {base_url}/dags (six kombo_* DAGs, unpaused; trigger kombo_housekeeping with erase_emails to erase a candidate)
  2. The Kombo connections: {base_url}/connections (edit one there: the next task uses the new value)
  3. The runs: {base_url}/dags/kombo_order_intake/runs and {base_url}/dags/kombo_result_writeback/runs;
     results written back: curl -s 'http://127.0.0.1:{ports["kombo"]}/_sandbox/orders' | python -m json.tool
  4. The Kombo console: {base_url}/plugin/kombo ("Kombo" in the navigation): health per customer, dead letters
     (replay, discard), order lookup, webhook log

Ctrl-C stops everything.
================================================================================================
""",
                flush=True,
            )
            last_progress, next_progress = "", time.monotonic() + 30
            while True:
                supervisor.check()
                for name in ("kombo-sandbox", "platform", "smtp"):
                    if procs.children[name].poll() is not None:
                        raise RuntimeError(f"the {name} stopped; see {procs.log_path(name)}")
                try:
                    emailed = finish_email_candidates(home, finish_after)
                except Exception as exc:  # the state store is busy now and then: try again next round
                    say(f"finishing e-mail candidates failed this round ({type(exc).__name__}); retrying")
                    emailed = 0
                if emailed:
                    say(f"{emailed} candidate(s) invited by e-mail finished their assessment")
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + 30
                    with contextlib.suppress(sqlite3.Error):
                        line = progress(home)
                        if line != last_progress:
                            say(line)
                            last_progress = line
                time.sleep(5)
    except Stop as stop:
        say(f"{stop}: stopping Airflow, the sandbox, the platform stand-in and the SMTP server ...")
    finally:
        api_hold.close()
    say("stopped")
    return 0


def default_home() -> Path:
    return Path(os.environ.get("KOMBO_SYNC_HOME") or ROOT / ".local")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--up", action="store_true", help="start the local trial with Airflow's UI instead")
    parser.add_argument(
        "--home",
        default=str(default_home()),
        help="working folder; its state store, warehouse, mailbox and logs are reset each run "
        "(default: $KOMBO_SYNC_HOME, else .local/)",
    )
    parser.add_argument(
        "--finish-after",
        type=float,
        default=DEFAULT_FINISH_AFTER,
        metavar="SECONDS",
        help=f"--up: candidates finish this long after their invitation (default {DEFAULT_FINISH_AFTER:.0f})",
    )
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if args.up:
        install_stop_handlers()
    try:
        with home_lock(home):
            # A fresh pipeline state and warehouse each run; Airflow's own home is kept (its migration is slow).
            for stale in ("state.db", "warehouse.db", "mailbox", "logs", "integrations.yaml"):
                path = home / stale
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            return up(home, args.finish_after) if args.up else demo(home)
    except Stop:
        return 0
    except (RuntimeError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
