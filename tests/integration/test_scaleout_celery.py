"""The compose deployment on the CeleryExecutor, verified without Docker.

Reads docker-compose.yaml and starts its Airflow services as local processes with the same settings
(`tests.support.local_deployment.LocalCeleryDeployment`): the compose file's `airflow-init` script, then api-server
(which serves the webhook plugin), scheduler, dag-processor, triggerer and two `airflow celery worker`s, on a
fresh PostgreSQL metadata database, a fresh state database and a dedicated Redis DB number. The three DAGs then
run against the sandbox and the platform stand-in (in this process, over real HTTP):

1. Kombo announces three integrations by webhook to the api-server; the AssetWatcher in the triggerer wakes
   `kombo_package_sync`, which publishes each customer's entitled packages.
2. Recruiters create orders; the webhook records them and wakes `kombo_order_intake`, which invites each one.
3. With the intake paused, 120 more orders arrive, and the intake's dispatch runs on both Celery workers at the
   same time (a test-only DAG pins one dispatch task to each worker's queue). The platform stand-in is set to
   create a new invitation for every request, so a double send would show: each order must have exactly one.
4. Candidates finish; `kombo_result_writeback` writes every result to Kombo.

The DAGs' cron schedules are moved out of the way (`KOMBO_*_SCHEDULE`), so every run the test waits for is one
it caused, by a webhook or through the REST API (with a JWT from /auth/token). Everything started here is
stopped in a `finally` (process groups), and the databases are dropped.
Needs PostgreSQL (127.0.0.1:5432 or KOMBO_TEST_PG_URL) and Redis (127.0.0.1:6379 or KOMBO_TEST_REDIS_URL);
without them it skips, unless CI=true.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.support.local_deployment import (
    AirflowRest,
    LocalCeleryDeployment,
    RunFailed,
    Server,
    connection_json,
    database_connection_json,
    logs_tail,
    parse_api_time,
    port_open,
    wait_until,
)

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = ("kombo_package_sync", "kombo_order_intake", "kombo_result_writeback", "kombo_housekeeping")
CONCURRENT_DAG_ID = "scaleout_concurrent_dispatch"
CONCURRENT_ORDERS = 120
REDIS_DB = 13
# 29 February: the next due run is years away, so unpausing a DAG creates no scheduled run.
NEVER = "0 0 29 2 *"

# A test-only DAG: the intake's own dispatch task twice, one pinned to each worker's queue, started together.
CONCURRENT_DAG = '''
"""Test only: the intake's dispatch on two Celery workers at once."""
from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(dag_id="scaleout_concurrent_dispatch", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     default_args={"owner": "data-team", "retries": 0, "retry_delay": timedelta(seconds=5)}, tags=["kombo", "test"])
def scaleout_concurrent_dispatch():
    @task(queue="worker1", pool="kombo_api")
    def dispatch_on_worker1(**context):
        from kombo_sync.intake.tasks import dispatch_task

        return dispatch_task(context)

    @task(queue="worker2", pool="kombo_api")
    def dispatch_on_worker2(**context):
        from kombo_sync.intake.tasks import dispatch_task

        return dispatch_task(context)

    dispatch_on_worker1()
    dispatch_on_worker2()


scaleout_concurrent_dispatch()
'''

PACKAGES = [
    ("py-basics", "SKILLS_TEST", "Python basics", "45-minute Python coding test"),
    ("sql-core", "SKILLS_TEST", "SQL fundamentals", "Joins, aggregates and window functions"),
    ("big-five", "BEHAVIORAL", "Personality profile", "Big-five personality questionnaire"),
]
CUSTOMERS = {"acme": ["py-basics", "sql-core"], "globex": ["sql-core", "big-five"], "initech": ["big-five"]}


def _services() -> tuple[Server, str, int]:
    """The PostgreSQL server and Redis address to use; skips (or fails under CI=true) when one is missing."""
    pg = Server.from_url(os.environ.get("KOMBO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    redis_url = urlparse(os.environ.get("KOMBO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    redis_host, redis_port = redis_url.hostname or "127.0.0.1", redis_url.port or 6379
    missing = [
        what
        for what, up in (
            (f"PostgreSQL at {pg.host}:{pg.port}", port_open(pg.host, pg.port)),
            (f"Redis at {redis_host}:{redis_port}", port_open(redis_host, redis_port)),
        )
        if not up
    ]
    if missing:
        reason = "the CeleryExecutor deployment needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true)")
        pytest.skip(reason)
    try:
        import airflow.providers.celery.executors.celery_executor  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"the Celery provider does not import ({exc}); celery 5.7 dropped what provider 3.26 imports: pin celery<5.7"
        )
    return pg, redis_host, redis_port


def _seed_catalog(warehouse_url: str) -> None:
    engine = sa.create_engine(warehouse_url)
    try:
        with engine.begin() as conn:
            script = (ROOT / "include" / "sql" / "warehouse_catalog_schema.sql").read_text()
            script = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
            for statement in script.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
            conn.execute(
                sa.text(
                    "INSERT INTO catalog_packages (package_id, type, name, description, active) VALUES (:p, :t, :n, :d, TRUE)"
                ),
                [{"p": p, "t": t, "n": n, "d": d} for p, t, n, d in PACKAGES],
            )
            conn.execute(
                sa.text("INSERT INTO catalog_entitlements (customer_key, package_id) VALUES (:c, :p)"),
                [{"c": c, "p": p} for c, packages in CUSTOMERS.items() for p in packages],
            )
    finally:
        engine.dispose()


def _pipeline_config(path: Path) -> Path:
    """The project's pipeline.yaml with small claim batches, so both workers get a share of one backlog."""
    config = yaml.safe_load((ROOT / "include" / "config" / "pipeline.yaml").read_text()) or {}
    config.setdefault("intake", {}).update(
        {"claim_batch_size": 5, "send_concurrency": 2, "lookback_minutes": 120}
    )
    path.write_text(yaml.safe_dump(config))
    return path


def _order_states(state_url: str, order_ids: list[str]) -> dict[str, str]:
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, state FROM orders")).all()
        wanted = set(order_ids)
        return {row.id: row.state for row in rows if row.id in wanted}
    finally:
        engine.dispose()


def _scalar(state_url: str, sql: str) -> Any:
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def _create_orders(kombo_sandbox, integrations: dict[str, str], per_integration: int, tag: str) -> list[str]:
    """Orders as recruiters create them; each is announced to the api-server by a signed webhook."""
    ids = []
    for customer, integration_id in integrations.items():
        for n in range(per_integration):
            order = kombo_sandbox.admin.create_order(
                integration_id,
                CUSTOMERS[customer][n % len(CUSTOMERS[customer])],
                candidate={"email": f"cand-{tag}-{customer}-{n}@candidates.example", "first_name": "Cand",
                           "last_name": f"{tag}{n}", "remote_id": f"{tag}-{customer}-{n}"},
                application={"remote_id": f"app-{tag}-{customer}-{n}"},
                job={"remote_id": f"job-{customer}", "name": "Data Engineer"},
            )  # fmt: skip
            assert order["webhook"] and order["webhook"]["status_code"] == 200, order["webhook"]
            ids.append(order["id"])
    return ids


def test_compose_deployment_runs_the_pipeline_on_two_celery_workers(
    kombo_sandbox, platform_standin, tmp_path
):
    pg, redis_host, redis_port = _services()
    started = time.monotonic()
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    for dag_id in DAG_IDS:
        source = ROOT / "dags" / f"{dag_id}.py"
        if not source.exists():
            pytest.fail(f"dags/{dag_id}.py is missing")
        shutil.copy(source, dags_folder)
    (dags_folder / f"{CONCURRENT_DAG_ID}.py").write_text(CONCURRENT_DAG)

    deployment = LocalCeleryDeployment(
        work_dir=tmp_path / "deployment",
        postgres=pg,
        redis_host=redis_host,
        redis_port=redis_port,
        redis_db=REDIS_DB,
        dags_folder=dags_folder,
        worker_concurrency=4,
        pipeline_config=_pipeline_config(tmp_path / "pipeline.yaml"),
        # Cron schedules out of the way: every run the test waits for is one it caused (webhook or trigger).
        extra_env={
            "KOMBO_CATALOG_SCHEDULE": NEVER,
            "KOMBO_INTAKE_SCHEDULE": NEVER,
            "KOMBO_WRITEBACK_SCHEDULE": NEVER,
        },
        variables={
            "AIRFLOW_CONN_KOMBO_DEFAULT": connection_json(
                "http",
                host=kombo_sandbox.api_url,
                password=kombo_sandbox.api_key,
                extra={"timeout": 30, "max_retries": 6},
            ),
            "AIRFLOW_CONN_KOMBO_WAREHOUSE": database_connection_json(platform_standin.warehouse_url),
            "AIRFLOW_CONN_KOMBO_PLATFORM": connection_json(
                "http", host=platform_standin.url, password=platform_standin.api_key
            ),
        },
    )
    try:
        deployment.create_databases()
        deployment.run_init()
        deployment.start_services(workers=2)
        deployment.wait_ready()
        api = AirflowRest(deployment)
        kombo_sandbox.set_webhook(deployment.webhook_url, deployment.variables["KOMBO_WEBHOOK_SECRET"])

        wait_until(
            lambda: (
                {d["dag_id"] for d in api.get("/dags", limit=100)["dags"]} >= {*DAG_IDS, CONCURRENT_DAG_ID}
            ),
            90,
            message="the dag-processor to parse the DAGs",
        )
        assert api.get("/importErrors")["total_entries"] == 0
        _seed_catalog(platform_standin.warehouse_url)
        for dag_id in DAG_IDS:
            api.set_paused(dag_id, False)

        # 1. integration-created webhooks -> registry -> wake-up -> kombo_package_sync (asset-triggered).
        integrations = {}
        for customer in CUSTOMERS:
            created = kombo_sandbox.admin.create_integration(
                "greenhouse", organization_name=customer.title(), origin_id=customer, emit_webhook=True
            )
            assert created["webhook"] and created["webhook"]["status_code"] == 200, created["webhook"]
            integrations[customer] = created["id"]
        api.wait_run_of_type("kombo_package_sync", "asset_triggered", timeout=120)
        wait_until(
            lambda: all(
                sorted(p["id"] for p in kombo_sandbox.admin.list_packages(i)) == sorted(CUSTOMERS[c])
                for c, i in integrations.items()
            ),
            90,
            message="every customer's packages in Kombo",
        )
        published = _scalar(
            deployment.state_url, "SELECT count(*) FROM integrations WHERE packages_published_at IS NOT NULL"
        )
        assert published == len(CUSTOMERS)

        # 2. order-received webhooks -> orders recorded by the api-server -> kombo_order_intake invites them.
        first_orders = _create_orders(kombo_sandbox, integrations, 2, "w")
        api.wait_run_of_type("kombo_order_intake", "asset_triggered", timeout=120)
        wait_until(
            lambda: (
                set(_order_states(deployment.state_url, first_orders).values()) == {"invited"}
                and len(_order_states(deployment.state_url, first_orders)) == len(first_orders)
            ),
            90,
            message="the webhook's orders to be invited",
        )

        # 3. A backlog dispatched by both workers at once, against a platform that would not deduplicate.
        api.set_paused("kombo_order_intake", True)
        api.wait_idle("kombo_order_intake")
        platform_standin.admin.set_knobs(idempotent=False, latency_ms="50-100")
        backlog = _create_orders(kombo_sandbox, integrations, CONCURRENT_ORDERS // len(CUSTOMERS), "c")
        assert set(_order_states(deployment.state_url, backlog).values()) == {"received"}
        api.set_paused(CONCURRENT_DAG_ID, False)
        run_id = api.trigger(CONCURRENT_DAG_ID)
        api.wait_run(CONCURRENT_DAG_ID, run_id, timeout=150)
        tis = {ti["task_id"]: ti for ti in api.task_instances(CONCURRENT_DAG_ID, run_id)}
        assert {tis["dispatch_on_worker1"]["queue"], tis["dispatch_on_worker2"]["queue"]} == {
            "worker1",
            "worker2",
        }
        spans = [(parse_api_time(ti["start_date"]), parse_api_time(ti["end_date"])) for ti in tis.values()]
        assert max(s for s, _ in spans) < min(e for _, e in spans), (
            f"the two dispatches did not overlap: {spans}"
        )
        invited = {task_id: api.xcom(CONCURRENT_DAG_ID, run_id, task_id)["invited"] for task_id in tis}
        assert sum(invited.values()) == len(backlog), invited
        assert all(count > 0 for count in invited.values()), f"one worker did all the work: {invited}"
        overlap = (min(e for _, e in spans) - max(s for s, _ in spans)).total_seconds()
        print(f"concurrent dispatch: {invited} invited, the two tasks overlapped {overlap:.1f} s")

        states = _order_states(deployment.state_url, backlog)
        assert set(states.values()) == {"invited"} and len(states) == len(backlog)
        creations = platform_standin.admin.invitations()["creations_by_order"]
        per_order = {order_id: creations.get(order_id, 0) for order_id in first_orders + backlog}
        assert set(per_order.values()) == {1}, {o: n for o, n in per_order.items() if n != 1}
        platform_standin.admin.set_knobs(idempotent=True, latency_ms=0)

        # 4. Candidates finish; kombo_result_writeback writes each result to Kombo once.
        finished = platform_standin.admin.simulate(cancel_rate=0)
        assert finished["completed"] == len(first_orders) + len(backlog)
        run_id = api.trigger("kombo_result_writeback")
        api.wait_run("kombo_result_writeback", run_id, timeout=150)
        orders = {o["id"]: o for o in kombo_sandbox.admin.list_orders()}
        not_written = [o for o in finished["order_ids"] if orders[o]["status"] != "COMPLETED"]
        assert not not_written, f"{len(not_written)} results not in Kombo, e.g. {not_written[:3]}"
        writes = {len(orders[o]["results"]) for o in finished["order_ids"]}
        assert writes == {1}, f"results written more than once: {writes}"
        sent = _scalar(deployment.state_url, "SELECT count(*) FROM result_outbox WHERE state = 'sent'")
        assert sent == len(finished["order_ids"])
        print(f"scale-out test: {time.monotonic() - started:.0f} s")
    except (TimeoutError, RuntimeError, RunFailed, httpx.HTTPError) as exc:
        pytest.fail(f"{type(exc).__name__}: {exc}\n(logs: {deployment.log_dir})\n{logs_tail(deployment)}")
    finally:
        kombo_sandbox.set_webhook(None)
        deployment.stop()
        deployment.drop_databases()
