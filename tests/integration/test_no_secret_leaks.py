"""Secrets and candidate data never leak: canary secrets (the Kombo API key, the webhook signing secret, the
platform token, the SMTP password, the state database's password, the erasure salt, the alert webhook's token)
are planted where a deployment puts them (``AIRFLOW_CONN_*`` connections, as docker-compose.yaml passes them;
the stand-ins get theirs as `make up` starts them), with canary candidates (e-mail, names, phone), in a run of
the real components: the sandbox, the platform stand-in and the SMTP server as processes with their own logs,
and Airflow's api-server (serving the webhook plugin), scheduler, dag-processor and triggerer.

Phase A, the happy path with one failure: the catalog is published, Kombo's signed webhooks reach the api-server,
the triggerer wakes the intake, candidates are invited (platform and e-mail, the SMTP login succeeding), results
are written back, and a housekeeping run with a bad address fails and is alerted (chat webhook and e-mail).
Phase B, the failure paths whose error messages are the usual leak: Kombo rotates its key (every call answers
401), the SMTP server's password changes (the alert e-mail's login is refused, 535), and a webhook signed with
another secret reaches the api-server (401).

Then every file under the log folders, every alert (the webhook bodies, the alert e-mails the SMTP server
captured), every XCom value in Airflow's metadata DB (decoded) and every rendered task field are searched for
the canaries; the invitation e-mails (which must name the candidate) are searched for the secrets.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.support.leaks import (
    Canary,
    files_under,
    leaks_in_files,
    leaks_in_texts,
    rendered_field_texts,
    xcom_texts,
)
from tests.support.webhooks import LiveAirflow, free_port, order_event, signed

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.postgres, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
DAGS = ("kombo_package_sync", "kombo_order_intake", "kombo_result_writeback", "kombo_housekeeping")
ALERT_TO = "ops-alerts@provider.example"


def _token() -> str:
    return secrets.token_hex(6)


def secret_canaries() -> dict[str, str]:
    return {
        "Kombo API key": f"kombo-api-canary-{_token()}",
        "webhook signing secret": f"webhook-secret-canary-{_token()}",
        "platform token": f"platform-token-canary-{_token()}",
        "SMTP password": f"smtp-password-canary-{_token()}",
        "state DB password": f"statedb-password-canary-{_token()}",
        "erasure salt": f"erasure-salt-canary-{_token()}",
        "alert webhook token": f"alert-token-canary-{_token()}",
    }


def candidate_canaries() -> list[dict[str, str]]:
    token = uuid.uuid4().hex[:10]
    return [
        {"remote_id": f"cand-{token}-{n}", "email": f"leak.{token}.{n}@candidates.example",
         "first_name": f"Leakfirst{token}{n}", "last_name": f"Leaklast{token}{n}",
         "phone": f"+49 155 {int(token[:6], 16) % 10000:04d} {n}{n}{n}"}
        for n in range(2)
    ]  # fmt: skip


def candidate_canary_list(candidates: list[dict[str, str]]) -> list[Canary]:
    found = []
    for n, c in enumerate(candidates):
        found += [
            Canary(f"candidate {n} {key}", c[key]) for key in ("email", "first_name", "last_name", "phone")
        ]
        found += [Canary(f"candidate {n} e-mail local part", c["email"].split("@")[0]),
                  Canary(f"candidate {n} phone digits", c["phone"].replace(" ", ""))]  # fmt: skip
    return found


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # a component not up yet
            value = None
        if value:
            return value
        time.sleep(2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Deployment:
    """The run's moving parts: Airflow's components, the stand-ins' processes, the metadata DB; what was planted."""

    home: Path
    live: LiveAirflow
    procs: Any  # sandbox.demo.Processes
    ports: dict[str, int]
    metadata: sa.Engine
    planted: dict[str, str]
    store: Any  # kombo_sync.state.store.StateStore
    integrations: dict[str, str]

    def runs(self, dag_id: str) -> dict[str, str]:
        with self.metadata.connect() as conn:
            query = sa.text("SELECT run_id, state FROM dag_run WHERE dag_id = :d")
            return dict(conn.execute(query, {"d": dag_id}).all())  # type: ignore[arg-type]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 300) -> str:
        """Trigger a run and wait until it is finished; returns its state."""
        before = set(self.runs(dag_id))
        args = ["dags", "trigger", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
        self.live.airflow(*args)

        def finished() -> str | None:
            new = {r: s for r, s in self.runs(dag_id).items() if r not in before}
            return next((s for s in new.values() if s in ("success", "failed")), None)

        return str(wait_for(finished, timeout, f"a {dag_id} run to finish"))


@pytest.fixture
def deployment(tmp_path, monkeypatch, pg_admin_url, webhook_recorder):  # type: ignore[no-untyped-def]
    from kombo_sync.state.store import StateStore
    from sandbox.demo import Keys, connections, seed, services

    for name in list(os.environ):  # nothing of the test session's Airflow or pipeline settings
        if name.startswith(("AIRFLOW", "KOMBO_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    planted = secret_canaries()
    keys = Keys(api_key=planted["Kombo API key"], platform_key=planted["platform token"],
                webhook_secret=planted["webhook signing secret"], smtp_password=planted["SMTP password"])  # fmt: skip

    state_db = f"kombo_leak_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{state_db}"')
    pg = sa.engine.make_url(pg_admin_url)
    port = free_port()
    live = LiveAirflow(
        home / "airflow", components=("api-server", "scheduler", "dag-processor", "triggerer"), port=port
    )
    metadata_url = f"sqlite:///{home / 'airflow' / 'airflow.db'}"
    try:
        with services(home, keys, live.webhook_url, finish_after=5) as (procs, ports):
            conns = connections(home, ports, keys)
            # The state store on PostgreSQL with a password in its connection (the server trusts loopback and
            # ignores it): the connection URI the usual error messages would print.
            conns["kombo_state"] = {"conn_type": "postgres", "host": pg.host or "127.0.0.1",
                                    "port": pg.port or 5432, "login": pg.username or "postgres",
                                    "password": planted["state DB password"], "schema": state_db}  # fmt: skip
            conns["kombo_erasure_salt"]["password"] = planted["erasure salt"]
            conns["kombo_alerts"] = {"conn_type": "http", "host": f"{webhook_recorder.url}/alerts",
                                     "password": planted["alert webhook token"]}  # fmt: skip
            config = yaml.safe_load((ROOT / "include" / "config" / "pipeline.yaml").read_text())
            config["intake"].update({"retry_backoff_seconds": 0})
            config["writeback"].update({"insecure_url_hosts": ["127.0.0.1"]})
            config["alerts"].update({"repeat_minutes": 0})
            config["alerts"]["channels"] = {
                "email": {"conn_id": "kombo_smtp", "to": [ALERT_TO]},
                "webhook": {"conn_id": "kombo_alerts", "include_details": True},
            }
            (home / "pipeline.yaml").write_text(yaml.safe_dump(config))
            env = {
                **{f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value) for conn_id, value in conns.items()},
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "KOMBO_SYNC_CONFIG": str(home / "pipeline.yaml"),
                "KOMBO_SYNC_HOME": str(home),
            }
            live.env.update(env)
            store = StateStore(
                str(sa.engine.make_url(pg_admin_url).set(database=state_db).render_as_string(False))
            )
            store.migrate()
            integrations = seed(home, ports, {**live.env, "PATH": os.environ.get("PATH", "")})
            live.start(timeout=300)
            deployment = Deployment(home, live, procs, ports, sa.create_engine(metadata_url, poolclass=sa.pool.NullPool),
                                    planted, store, integrations)  # fmt: skip
            try:
                live.airflow("pools", "set", "kombo_api", "4", "Kombo API calls")
                with deployment.metadata.connect() as conn:
                    wait_for(
                        lambda: (
                            set(conn.execute(sa.text("SELECT dag_id FROM serialized_dag")).scalars())
                            >= set(DAGS)
                        ),
                        240,
                        "the dag-processor to parse the DAGs",
                    )
                for dag_id in DAGS:
                    live.airflow("dags", "unpause", dag_id)
                yield deployment
            finally:
                live.stop()
                store.dispose()
                deployment.metadata.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{state_db}" WITH (FORCE)')
        admin.dispose()


def restart(deployment: Deployment, name: str, args: list[str], env: dict[str, str]) -> None:
    deployment.procs.stop(name)
    deployment.procs.start(name, args, env)


def test_no_log_alert_or_xcom_holds_a_secret_or_candidate_data(deployment, webhook_recorder):  # type: ignore[no-untyped-def]
    from kombo_sync.state.orders import OrderRepository
    from sandbox.demo import SMTP_LOGIN, wait_http, wait_port
    from sandbox.testing import PlatformAdmin, SandboxAdmin
    from sandbox.warehouse import simulated_result, write_results

    home, ports, planted = deployment.home, deployment.ports, deployment.planted
    kombo = SandboxAdmin(f"http://127.0.0.1:{ports['kombo']}")
    platform = PlatformAdmin(f"http://127.0.0.1:{ports['platform']}")
    repo = OrderRepository(deployment.store)
    candidates = candidate_canaries()

    # Phase A. The catalog first (orders for unpublished packages are rejected).
    assert deployment.trigger("kombo_package_sync") == "success"
    order_ids = []
    for candidate, customer in zip(candidates, ("acme", "initech"), strict=True):  # platform, e-mail
        created = kombo.create_order(
            deployment.integrations[customer], "py-basics", candidate=candidate,
            application={"remote_id": f"app-{candidate['remote_id']}"},
            job={"remote_id": "job-1", "name": "Data Engineer"}, deliver_webhook=True,
        )  # fmt: skip
        assert created["webhook"]["status_code"] == 200, created[
            "webhook"
        ]  # served by the api-server's plugin
        order_ids.append(created["id"])
    # The webhook wakes the intake through the triggerer; the scheduler runs it.
    wait_for(lambda: {repo.get(o).state for o in order_ids} == {"invited"}, 300, "both orders invited")  # type: ignore[union-attr]
    assert any(entry["rcpt_tos"] == [candidates[1]["email"]] for entry in _mailbox(home))  # SMTP login worked
    write_results(
        f"sqlite:///{home / 'warehouse.db'}",
        [simulated_result(order_ids[1], f"email-{order_ids[1]}", seed=3, cancel_rate=0.0, with_report=False)],
    )
    wait_for(
        lambda: platform.invitations()["invitations"][0]["status"] != "invited", 60, "the platform result"
    )
    assert deployment.trigger("kombo_result_writeback") == "success"
    assert all(kombo.get_order(o)["result"] for o in order_ids)
    erase = {"erase_emails": [candidates[1]["email"], "not-an-address"]}
    assert deployment.trigger("kombo_housekeeping", erase) == "failed"
    wait_for(lambda: any(ALERT_TO in e["rcpt_tos"] for e in _mailbox(home)), 120, "the alert e-mail")

    # Phase B. Kombo's key is rotated (401 on every call) and the SMTP password changes (535 on login).
    py, env = (
        sys.executable,
        {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)])},
    )
    restart(deployment, "kombo-sandbox", [py, "-m", "sandbox", "--port", str(ports["kombo"]), "--api-key",
            f"rotated-{_token()}", "--webhook-secret", planted["webhook signing secret"]], env)  # fmt: skip
    restart(deployment, "smtp", [py, "-m", "sandbox.smtp", "--port", str(ports["smtp"]), "--mailbox",
            str(home / "mailbox"), "--login", SMTP_LOGIN], {**env, "SMTP_SANDBOX_PASSWORD": f"other-{_token()}"})  # fmt: skip
    wait_http(f"http://127.0.0.1:{ports['kombo']}/_sandbox/config")
    wait_port(ports["smtp"])
    # A delivery signed with another secret: the api-server's webhook answers 401 and logs why.
    body, headers = signed(order_event(email=candidates[0]["email"]), f"not-the-secret-{_token()}")
    assert (
        httpx.post(deployment.live.webhook_url, content=body, headers=headers, timeout=30).status_code == 401
    )
    assert deployment.trigger("kombo_package_sync", {"force": True}) == "failed"
    alerts_before = len(webhook_recorder.received)
    assert deployment.trigger("kombo_order_intake") == "failed"
    wait_for(lambda: len(webhook_recorder.received) > alerts_before, 120, "the intake's failed-run alert")
    deployment.live.stop()
    deployment.procs.stop_all()

    # What the failure paths wrote must be in the logs, or the scan proves nothing about them.
    log_roots = [home / "logs", home / "airflow" / "logs"]
    files = files_under(*log_roots)
    everything = "".join(path.read_text(errors="replace") for path in files)
    for expected in ("PLATFORM.AUTHENTICATION_INVALID", "SMTPAuthenticationError (535)", "invited via platform",
                     "order(s) recorded via webhook"):  # fmt: skip
        assert expected in everything, f"{expected!r} is in no log: that path was not exercised"
    assert {p.name for p in files} >= {"api-server.log", "scheduler.log", "triggerer.log", "dag-processor.log",
                                       "kombo-sandbox.log", "platform.log", "smtp.log"}  # fmt: skip

    secret_list = [Canary(label, value) for label, value in planted.items()]
    personal = secret_list + candidate_canary_list(candidates)
    alerts = [(f"alert webhook {n}", r.body.decode(errors="replace"))
              for n, r in enumerate(webhook_recorder.received) if r.path.startswith("/alerts")]  # fmt: skip
    mails = _mailbox(home)
    alert_mails = [(f"alert e-mail {m['file']}", _eml(home, m)) for m in mails if ALERT_TO in m["rcpt_tos"]]
    invitations = [
        (f"invitation e-mail {m['file']}", _eml(home, m)) for m in mails if ALERT_TO not in m["rcpt_tos"]
    ]
    metadata_url = str(deployment.metadata.url)
    xcoms, rendered = xcom_texts(metadata_url), rendered_field_texts(metadata_url)
    assert alerts and alert_mails and invitations and xcoms and rendered, (
        "nothing to scan: the run went wrong"
    )

    found = leaks_in_files(files, personal, relative_to=home)
    found += leaks_in_texts(alerts + alert_mails + xcoms + rendered, personal)
    found += leaks_in_texts(invitations, secret_list)
    assert found == [], "\n".join(found)


def _mailbox(home: Path) -> list[dict[str, Any]]:
    index = home / "mailbox" / "index.json"
    return list(json.loads(index.read_text())) if index.exists() else []


def _eml(home: Path, entry: dict[str, Any]) -> str:
    return (home / "mailbox" / entry["file"]).read_bytes().decode(errors="replace")
