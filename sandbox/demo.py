"""`make demo` / `make up`: the whole pipeline on one machine, with no Kombo account.

Starts the local Kombo sandbox, the platform stand-in and a local SMTP server, seeds three customers on three
ATSs, then runs the three DAGs through Airflow (`airflow dags test`, SQLite, LocalExecutor defaults) and prints a
summary that is checked against the sandbox's own record. Everything it starts is stopped at the end.

`--up` instead starts Airflow standalone (UI on http://localhost:8080) against the same seeded sandbox and keeps
running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
API_KEY = "sandbox-key"
PLATFORM_KEY = "platform-key"
WEBHOOK_SECRET = "sandbox-webhook-secret"

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


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


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


class Processes:
    """Child processes started by the demo, each in its own process group, all stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.children):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()


def airflow_env(home: Path, ports: dict[str, int]) -> dict[str, str]:
    """The environment Airflow runs with: private AIRFLOW_HOME, the project's DAGs, connections from
    airflow_settings.yaml with the demo's ports and files filled in."""
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
            "KOMBO_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
            # `airflow standalone` starts its components as `airflow ...` found on PATH.
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        }
    )
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    for conn in settings["connections"]:
        value: dict[str, Any] = {"conn_type": conn["conn_type"]}
        for key in ("host", "port", "login", "password", "schema"):
            if conn.get(f"conn_{key}") not in (None, ""):
                value[key] = conn[f"conn_{key}"]
        if conn.get("conn_extra"):
            value["extra"] = conn["conn_extra"]
        conn_id = conn["conn_id"]
        if conn_id == "kombo_default":
            value["host"] = f"http://127.0.0.1:{ports['kombo']}/v1"
        elif conn_id == "kombo_platform":
            value["host"] = f"http://127.0.0.1:{ports['platform']}"
        elif conn_id == "kombo_smtp":
            value["port"] = ports["smtp"]
        elif conn_id == "kombo_state":
            value["host"] = str(home / "state.db")
        elif conn_id == "kombo_warehouse":
            value["host"] = str(home / "warehouse.db")
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value)
    return env


def airflow(env: dict[str, str], *args: str, log: Path | None = None, check: bool = True) -> int:
    cmd = [str(BIN / "airflow"), *args]
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}); see {log}")
    return proc.returncode


@contextmanager
def services(home: Path) -> Iterator[tuple[Processes, dict[str, int]]]:
    """The sandbox, the platform stand-in and the SMTP server, stopped whatever happens."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ports = {"kombo": free_port(8765), "platform": free_port(8766), "smtp": free_port(8025)}
    ports["webhook"] = free_port(8080)
    procs = Processes(logs)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "include"), str(ROOT)]))
    py = sys.executable
    try:
        procs.start(
            "kombo-sandbox",
            [py, "-m", "sandbox", "--port", str(ports["kombo"]), "--api-key", API_KEY,
             "--webhook-url", f"http://127.0.0.1:{ports['webhook']}/kombo/webhooks",
             "--webhook-secret", WEBHOOK_SECRET, "--seed", "7"],
            env,
        )  # fmt: skip
        procs.start(
            "platform",
            [py, "-m", "sandbox.platform", "--port", str(ports["platform"]), "--api-key", PLATFORM_KEY,
             "--warehouse-url", f"sqlite:///{home / 'warehouse.db'}"],
            env,
        )  # fmt: skip
        procs.start(
            "smtp",
            [py, "-m", "sandbox.smtp", "--port", str(ports["smtp"]), "--mailbox", str(home / "mailbox")],
            env,
        )
        wait_http(
            f"http://127.0.0.1:{ports['kombo']}/v1/check-api-key",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        wait_http(f"http://127.0.0.1:{ports['platform']}/_platform/invitations")
        wait_port(ports["smtp"])
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


def create_orders(ports: dict[str, int], integrations: dict[str, str]) -> int:
    """Orders as recruiters would create them in their ATS: one per candidate and package, plus one repeat."""
    from sandbox.testing import SandboxAdmin

    admin = SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}")
    count = 0
    for customer, integration_id in integrations.items():
        for n, (first, last) in enumerate(CANDIDATES[:3]):
            package = ENTITLEMENTS[customer][n % len(ENTITLEMENTS[customer])]
            admin.create_order(
                integration_id=integration_id,
                package_id=package,
                candidate={"email": f"{first.lower()}.{last.lower()}@candidates.example", "first_name": first,
                           "last_name": last, "remote_id": f"cand-{customer}-{n}"},
                application={"remote_id": f"app-{customer}-{n}"},
                job={"remote_id": f"job-{customer}", "name": "Data Engineer"},
            )  # fmt: skip
            count += 1
    # The same candidate ordered twice for the same package: the intake marks it duplicate, no second mail.
    first_customer, first_integration = next(iter(integrations.items()))
    admin.create_order(
        integration_id=first_integration,
        package_id=ENTITLEMENTS[first_customer][0],
        candidate={"email": "ada.lovelace@candidates.example", "first_name": "Ada", "last_name": "Lovelace",
                   "remote_id": f"cand-{first_customer}-0"},
        application={"remote_id": f"app-{first_customer}-0"},
        job={"remote_id": f"job-{first_customer}", "name": "Data Engineer"},
    )  # fmt: skip
    return count + 1


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


def finish_email_candidates(home: Path) -> int:
    """Candidates invited by e-mail finish too: their results land in the same warehouse table."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, text

    from sandbox.warehouse import write_results

    with create_engine(f"sqlite:///{home / 'state.db'}").connect() as conn:
        order_ids = (
            conn.execute(
                text("SELECT id FROM orders WHERE state = 'invited' AND channel = 'email' ORDER BY id")
            )
            .scalars()
            .all()
        )
    now = datetime.now(UTC)
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
        for n, order_id in enumerate(order_ids)
    ]
    return write_results(f"sqlite:///{home / 'warehouse.db'}", rows)


def summarize(home: Path, ports: dict[str, int], integrations: dict[str, str]) -> bool:
    """Print what happened, from the pipeline's state store and from the sandbox; True when they agree."""
    from sqlalchemy import create_engine, text

    from sandbox.testing import SandboxAdmin

    admin = SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}")
    engine = create_engine(f"sqlite:///{home / 'state.db'}")
    problems: list[str] = []
    rows = []
    with engine.connect() as conn:
        for customer, integration_id in integrations.items():
            kombo_packages = admin.list_packages(integration_id)
            expected = sorted(ENTITLEMENTS[customer])
            if sorted(p["id"] for p in kombo_packages) != expected:
                problems.append(
                    f"{integration_id}: Kombo has {len(kombo_packages)} packages, expected {expected}"
                )
            states: dict[str, int] = {
                state: count
                for state, count in conn.execute(
                    text("SELECT state, count(*) FROM orders WHERE integration_id = :i GROUP BY state"),
                    {"i": integration_id},
                ).all()
            }
            orders = admin.list_orders(integration_id)
            written = [o for o in orders if o.get("results")]
            completed_at_kombo = sum(1 for o in orders if o["status"] in ("COMPLETED", "CANCELLED"))
            sent = conn.execute(
                text(
                    "SELECT count(DISTINCT order_id) FROM result_outbox WHERE integration_id = :i AND state = 'sent'"
                ),
                {"i": integration_id},
            ).scalar_one()
            if sent != completed_at_kombo:
                problems.append(
                    f"{integration_id}: {sent} results sent but Kombo shows {completed_at_kombo} done"
                )
            rows.append(
                (integration_id, len(kombo_packages), len(orders), states.get("invited", 0),
                 states.get("duplicate", 0), states.get("failed", 0), len(written))
            )  # fmt: skip
        dead = conn.execute(text("SELECT count(*) FROM result_outbox WHERE state = 'dead'")).scalar_one()
        quarantined = conn.execute(text("SELECT count(*) FROM quarantine")).scalar_one()

    platform = httpx.get(f"http://127.0.0.1:{ports['platform']}/_platform/invitations", timeout=10).json()
    platform_invitations = platform.get("invitations", platform) if isinstance(platform, dict) else platform
    mailbox = sorted((home / "mailbox").glob("*.eml")) if (home / "mailbox").exists() else []

    header = ("integration", "packages", "orders", "invited", "duplicate", "failed", "results written")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print()
    print(
        f"invitations in the platform stand-in: {len(platform_invitations)}   e-mails in the SMTP mailbox: {len(mailbox)}"
    )
    print(f"dead-lettered results: {dead}   quarantined rows: {quarantined}")
    invited_total = sum(r[3] for r in rows)
    if invited_total != len(platform_invitations) + len(mailbox):
        problems.append(
            f"{invited_total} orders invited, but {len(platform_invitations)} platform invitations "
            f"+ {len(mailbox)} e-mails"
        )
    if problems:
        print("\nMISMATCHES between the pipeline and the sandbox:")
        for problem in problems:
            print(f"  - {problem}")
        return False
    print("\nThe pipeline's state matches the sandbox's own record.")
    return True


def demo(home: Path) -> int:
    with services(home) as (_procs, ports):
        env = airflow_env(home, ports)
        say("preparing Airflow (SQLite metadata DB, LocalExecutor defaults) ...")
        airflow(env, "db", "migrate", log=home / "logs" / "airflow-db.log")
        subprocess.run(
            [sys.executable, "-m", "kombo_sync.state", "migrate"], cwd=ROOT, env=env, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        integrations = seed(home, ports, env)
        run_dag(env, home, "kombo_package_sync")
        orders = create_orders(ports, integrations)
        say(f"recruiters created {orders} orders in their ATSs")
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
        ok = summarize(home, ports, integrations)
    say("stopped the sandbox, the platform stand-in and the SMTP server")
    return 0 if ok else 1


def up(home: Path) -> int:
    with services(home) as (procs, ports):
        env = airflow_env(home, ports)
        env["AIRFLOW__API__PORT"] = str(ports["webhook"])
        # The local trial runs the DAGs on their schedules (and on webhooks) without unpausing each one.
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
        airflow(env, "db", "migrate", log=home / "logs" / "airflow-db.log")
        settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
        for pool in settings.get("pools", []):
            airflow(env, "pools", "set", pool["pool_name"], str(pool["pool_slot"]), pool["pool_description"])
        integrations = seed(home, ports, env)
        create_orders(ports, integrations)
        say(
            f"starting Airflow standalone: UI on http://localhost:{ports['webhook']} (Ctrl-C stops everything)"
        )
        say(f"admin password: see {home / 'airflow' / 'simple_auth_manager_passwords.json.generated'}")
        proc = procs.start("airflow-standalone", [str(BIN / "airflow"), "standalone"], env)
        try:
            proc.wait()
        except KeyboardInterrupt:
            say("stopping ...")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--up", action="store_true", help="start Airflow standalone with its UI instead")
    parser.add_argument(
        "--home", default=str(ROOT / ".local" / "demo"), help="working folder (reset each run)"
    )
    args = parser.parse_args(argv)
    home = Path(args.home)
    # A fresh pipeline state and warehouse each run; Airflow's own home is kept (its migration is slow).
    for stale in ("state.db", "warehouse.db", "mailbox", "logs", "integrations.yaml"):
        path = home / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    home.mkdir(parents=True, exist_ok=True)
    try:
        return up(home) if args.up else demo(home)
    except RuntimeError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
