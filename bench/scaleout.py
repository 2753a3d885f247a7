"""Capacity of ONE Celery worker running the three DAGs, from the compose deployment run as local processes.

Starts docker-compose.yaml's services as local processes (`LocalCeleryDeployment`: api-server, scheduler,
dag-processor, triggerer, one `airflow celery worker`) on loopback PostgreSQL and Redis, against the sandbox and
the platform stand-in with a realistic latency, then times, on that one worker:

- catalog: `kombo_package_sync` publishing packages to N integrations  -> integrations per hour
- intake:  `kombo_order_intake` polling and inviting M orders          -> orders per hour
- results: `kombo_result_writeback` writing M results                  -> results per hour

Baseline, measured in the same run against the same servers: a loop that makes the same requests one at a
time (one `PUT packages` per integration; one `GET orders?ids=` and one invitation per order; one `PUT result` per
order). The ratio is the worker's throughput over that loop's.

The catalog is also timed on a small run: one integration added after the full run (the run its creation
triggers), from the run being queued to its end. Targets (issue 14): the catalog >= 3x the loop, the small run
under 15 s. Each figure is printed with the load average, since the machine is shared.

    python bench/scaleout.py                 # 200 integrations, 2,000 orders, Kombo 100 ms, platform 50 ms
    python bench/scaleout.py --quick         # 10 integrations, 100 orders (about 2 minutes)

One rate budget per API key across workers (issue 14, item 6): `--rate-limit N` gives the sandbox a limit of N
requests per second for the key and the `kombo_default` connection the key's budget (`rate_limit_per_second`
90 % of it), starts two Celery workers, and runs the catalog and the intake at the same time, then the write-back,
once per `--rate-budgets` backend (default `redis,process`: one budget in Redis shared by every task process, and
each process on its own as before). Printed per backend from the sandbox's request log: requests, 429s, the most
requests in any one-second window, the accepted rate over the limit, and the load average.

    python bench/scaleout.py --quick --rate-limit 20          # two workers, shared vs per-process budget

Needs PostgreSQL (127.0.0.1:5432 or KOMBO_TEST_PG_URL) and Redis (127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from tests.support.local_deployment import (  # noqa: E402
    AirflowRest,
    LocalCeleryDeployment,
    RunFailed,
    Server,
    connection_json,
    database_connection_json,
    parse_api_time,
    port_open,
    wait_until,
)

JOBS = {"catalog": "kombo_package_sync", "intake": "kombo_order_intake", "results": "kombo_result_writeback"}
PACKAGES = [
    ("py-basics", "SKILLS_TEST", "Python basics", "45-minute Python coding test"),
    ("sql-core", "SKILLS_TEST", "SQL fundamentals", "Joins, aggregates and window functions"),
    ("big-five", "BEHAVIORAL", "Personality profile", "Big-five personality questionnaire"),
]
# Only the benchmark's own runs happen while it measures.
# 29 February: the next due run is years away, so unpausing a DAG creates no scheduled run.
NEVER = "0 0 29 2 *"
CATALOG_RATIO_TARGET = 3.0
SMALL_RUN_TARGET_SECONDS = 15.0


def say(message: str) -> None:
    print(f"[scaleout] {message}", flush=True)


def seed_catalog(warehouse_url: str, customers: list[str]) -> None:
    engine = sa.create_engine(warehouse_url)
    script = (ROOT / "include" / "sql" / "warehouse_catalog_schema.sql").read_text()
    script = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    with engine.begin() as conn:
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
            [{"c": c, "p": p} for c in customers for p in ("py-basics", "big-five")],
        )
    engine.dispose()


def add_customer(warehouse_url: str, customer: str) -> None:
    engine = sa.create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO catalog_entitlements (customer_key, package_id) VALUES (:c, :p)"),
            [{"c": customer, "p": p} for p in ("py-basics", "sql-core")],
        )
    engine.dispose()


def load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def timed_run(api: AirflowRest, dag_id: str, timeout: float) -> dict[str, Any]:
    """Trigger `dag_id`, wait; returns the run's wall time (start to end, and queued to end), the sum of its
    task durations (seconds), each task's start and end relative to the run's start, and the load average."""
    run_id = api.trigger(dag_id)
    run = api.wait_run(dag_id, run_id, timeout=timeout)
    tis = api.task_instances(dag_id, run_id)
    busy = sum(ti["duration"] or 0.0 for ti in tis)
    started = parse_api_time(run["start_date"])
    ended = parse_api_time(run["end_date"])
    queued = parse_api_time(run["queued_at"]) if run.get("queued_at") else started
    timeline = []
    for ti in sorted(tis, key=lambda ti: (ti.get("start_date") or "", ti.get("map_index", -1))):
        name = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
        if ti.get("start_date") and ti.get("end_date"):
            begin = (parse_api_time(ti["start_date"]) - started).total_seconds()
            end = (parse_api_time(ti["end_date"]) - started).total_seconds()
            timeline.append(f"{name} {begin:.1f}-{end:.1f}")
        else:
            timeline.append(f"{name} {ti.get('state')}")
    return {
        "wall": (ended - started).total_seconds(),
        "end_to_end": (ended - queued).total_seconds(),
        "tasks": busy,
        "state": run.get("state"),
        "timeline": "; ".join(timeline),
        "load": load(),
    }


def sequential_seconds(calls: list[Any]) -> float:
    started = time.perf_counter()
    for call in calls:
        call()
    return time.perf_counter() - started


def bench_stack(
    args: argparse.Namespace,
    work: Path,
    *,
    kombo_knobs: dict[str, Any],
    kombo_extra: dict[str, Any] | None = None,
    pipeline_config: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[Any, Any, LocalCeleryDeployment]:
    """The Kombo sandbox, the platform stand-in (at `args`' latencies) and the compose deployment wired to them,
    none of the DAGs on a schedule (only the benchmark's own runs happen while it measures)."""
    from sandbox.knobs import KomboKnobs, PlatformKnobs
    from sandbox.kombo_app import KomboSandboxSettings
    from sandbox.platform_app import PlatformSettings
    from sandbox.testing import run_kombo_sandbox, run_platform_standin

    pg = Server.from_url(os.environ.get("KOMBO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    knobs = {"latency_ms": args.kombo_latency_ms, **kombo_knobs}
    kombo = run_kombo_sandbox(
        KomboSandboxSettings(api_key="bench-key", knobs=KomboKnobs.model_validate(knobs))
    )
    platform = run_platform_standin(
        settings=PlatformSettings(
            warehouse_url=f"sqlite:///{work / 'warehouse.db'}",
            api_key="bench-platform",
            knobs=PlatformKnobs.model_validate({"latency_ms": args.platform_latency_ms}),
        )
    )
    kombo_conn: dict[str, Any] = {"host": kombo.api_url, "password": kombo.api_key}
    if kombo_extra:
        kombo_conn["extra"] = kombo_extra
    deployment = LocalCeleryDeployment(
        work_dir=work / "deployment",
        postgres=pg,
        redis_db=14,
        pipeline_config=pipeline_config,
        worker_concurrency=args.worker_concurrency,
        variables={
            "AIRFLOW_CONN_KOMBO_DEFAULT": connection_json("http", **kombo_conn),
            "AIRFLOW_CONN_KOMBO_WAREHOUSE": database_connection_json(platform.warehouse_url),
            "AIRFLOW_CONN_KOMBO_PLATFORM": connection_json(
                "http", host=platform.url, password=platform.api_key
            ),
        },
        extra_env={
            "KOMBO_CATALOG_SCHEDULE": NEVER,
            "KOMBO_INTAKE_SCHEDULE": NEVER,
            "KOMBO_WRITEBACK_SCHEDULE": NEVER,
            **(extra_env or {}),
        },
    )
    return kombo, platform, deployment


def start_deployment(deployment: LocalCeleryDeployment, workers: int, dag_ids: list[str]) -> AirflowRest:
    """The compose services with `workers` Celery workers, up, with `dag_ids` parsed, unpaused and idle."""
    deployment.create_databases()
    deployment.run_init()
    deployment.start_services(workers=workers)
    deployment.wait_ready()
    api = AirflowRest(deployment)
    wait_until(
        lambda: {d["dag_id"] for d in api.get("/dags", limit=100)["dags"]} >= set(dag_ids),
        120,
        message="DAGs",
    )
    for dag_id in dag_ids:
        api.set_paused(dag_id, False)
    for dag_id in dag_ids:
        api.wait_idle(dag_id)
    return api


def most_in_window(times: list[float], window: float) -> int:
    """The most of the sorted `times` that fall in any `window` seconds."""
    most, end = 0, 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] - start < window:
            end += 1
        most = max(most, end - start_index)
    return most


def shared_budget_run(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """Two workers, the sandbox limiting the key to `args.rate_limit` per second, the catalog and the intake at
    once and then the write-back, with `KOMBO_RATE_BUDGET=backend`; the sandbox's view of the traffic."""
    from kombo_sync.registry import add_integration
    from kombo_sync.state.store import StateStore

    limit = args.rate_limit
    work = Path(tempfile.mkdtemp(prefix=f"kombo-scaleout-budget-{backend}-"))
    # Four catalog shards even at the quick size, so that up to six task processes share the key.
    config = (
        args.pipeline_config.resolve()
        if args.pipeline_config
        else ROOT / "include" / "config" / "pipeline.yaml"
    )
    shard = max(1, -(-args.integrations // 4))
    text = config.read_text()
    for key, value in (("shard_size", shard), ("min_shard_size", shard)):
        text = re.sub(rf"(?m)^(  {key}:)\s*\d+", rf"\g<1> {value}", text)
    (work / "pipeline.yaml").write_text(text)
    kombo, platform, deployment = bench_stack(
        args,
        work,
        kombo_knobs={"rate_limit": limit, "rate_limit_window_seconds": 1},
        # The key's whole limit, a little below it, as the README advises for a shared budget.
        kombo_extra={
            "rate_limit_per_second": round(limit * 0.9, 2),
            "rate_limit_burst": max(1, round(limit * 0.05)),
        },
        pipeline_config=work / "pipeline.yaml",
        extra_env={
            "KOMBO_RATE_BUDGET": backend,
            "KOMBO_RATE_BUDGET_PREFIX": f"scaleout-{os.getpid()}-{backend}",
        },
    )
    try:
        say(f"[{backend}] starting the compose services with 2 workers (logs: {deployment.log_dir})")
        api = start_deployment(deployment, 2, list(JOBS.values()))
        customers = [f"cust{n:04d}" for n in range(args.integrations)]
        store = StateStore(deployment.state_url)
        integrations = [
            kombo.admin.create_integration("greenhouse", origin_id=customer, emit_webhook=False)["id"]
            for customer in customers
        ]
        seed_catalog(platform.warehouse_url, customers)
        for customer, integration_id in zip(customers, integrations, strict=True):
            add_integration(store, integration_id, customer_key=customer, category="ASSESSMENT", wake=False)
        kombo.admin.bulk_create_orders(integrations, args.orders, package_id="py-basics")
        kombo.admin.clear_requests()
        started = time.monotonic()
        failed = 0
        # The catalog's shards and the intake at once, on two workers: several task processes, one API key.
        runs = [(dag_id, api.trigger(dag_id)) for dag_id in (JOBS["catalog"], JOBS["intake"])]
        for dag_id, run_id in runs:
            try:
                api.wait_run(dag_id, run_id, timeout=1200)
            except RunFailed as exc:
                say(f"[{backend}] {exc}")
                failed += 1
        platform.admin.simulate(cancel_rate=0)
        try:
            api.wait_run(JOBS["results"], api.trigger(JOBS["results"]), timeout=1200)
        except RunFailed as exc:
            say(f"[{backend}] {exc}")
            failed += 1
        seconds = time.monotonic() - started
        entries = kombo.admin.requests()
        times = sorted(parse_api_time(e["time"]).timestamp() for e in entries if e["status"] != 429)
        throttled = sum(1 for e in entries if e["status"] == 429)
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        return {
            "backend": backend,
            "requests": len(entries),
            "429": throttled,
            "max_window": most_in_window(times, 1.0),
            "accepted_rate_over_limit": (len(times) / span / limit) if span else 0.0,
            "seconds": seconds,
            "failed_runs": failed,
            "invited": len(platform.admin.invitations()["creations_by_order"]),
            "load": load(),
        }
    finally:
        deployment.stop()
        deployment.drop_databases()
        kombo.stop()
        platform.stop()


def print_budget_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"two workers x {args.worker_concurrency} slots; catalog ({args.integrations} integrations) and intake "
        f"({args.orders} orders) at once, then the write-back; sandbox limit {args.rate_limit}/s for the key, "
        f"Kombo latency {args.kombo_latency_ms:.0f} ms"
    )
    print(
        f"{'KOMBO_RATE_BUDGET':<18} {'requests':>8} {'429s':>5} {'most in 1 s':>11} {'accepted/limit':>14} "
        f"{'seconds':>8} {'invited':>7} {'failed runs':>11}  load average"
    )
    for row in rows:
        print(
            f"{row['backend']:<18} {row['requests']:>8} {row['429']:>5} {row['max_window']:>11} "
            f"{row['accepted_rate_over_limit']:>14.2f} {row['seconds']:>8.1f} {row['invited']:>7} "
            f"{row['failed_runs']:>11}  {row['load']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--integrations", type=int, default=200)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--kombo-latency-ms", type=float, default=100.0)
    parser.add_argument("--platform-latency-ms", type=float, default=50.0)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument(
        "--baseline-sample", type=int, default=20, help="requests timed one at a time per job"
    )
    parser.add_argument("--quick", action="store_true", help="10 integrations, 100 orders")
    parser.add_argument(
        "--pipeline-config",
        type=Path,
        help="a pipeline.yaml for the deployment (e.g. catalog shard settings to compare); default the project's",
    )
    parser.add_argument(
        "--jobs", default="catalog,intake,results", help="which of catalog,intake,results to time"
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=0,
        help="the shared-budget run: the sandbox's limit per second for the key (two workers, jobs at once)",
    )
    parser.add_argument(
        "--rate-budgets",
        default="redis,process",
        help="with --rate-limit: KOMBO_RATE_BUDGET backends to compare (redis, database, process)",
    )
    args = parser.parse_args(argv)
    if args.rate_limit:
        if args.quick:
            args.integrations, args.orders = 40, 200
        failures = 0
        rows = []
        for backend in [name.strip() for name in args.rate_budgets.split(",") if name.strip()]:
            rows.append(shared_budget_run(args, backend))
            failures += rows[-1]["failed_runs"]
        print_budget_rows(args, rows)
        return 1 if failures else 0
    jobs = [job.strip() for job in args.jobs.split(",") if job.strip()]
    dag_ids = [JOBS[job] for job in jobs]
    if args.quick:
        args.integrations, args.orders, args.baseline_sample = 10, 100, 10

    pg = Server.from_url(os.environ.get("KOMBO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    if not (port_open(pg.host, pg.port) and port_open("127.0.0.1", 6379)):
        say("needs PostgreSQL and Redis on loopback")
        return 2

    from kombo_sync.registry import add_integration
    from kombo_sync.state.store import StateStore

    work = Path(tempfile.mkdtemp(prefix="kombo-scaleout-"))
    pipeline_config = args.pipeline_config.resolve() if args.pipeline_config else None
    kombo, platform, deployment = bench_stack(args, work, kombo_knobs={}, pipeline_config=pipeline_config)
    try:
        say(f"starting the compose services as local processes (logs: {deployment.log_dir})")
        api = start_deployment(deployment, 1, dag_ids)

        customers = [f"cust{n:04d}" for n in range(args.integrations)]
        store = StateStore(deployment.state_url)
        integrations = []
        for customer in customers:
            created = kombo.admin.create_integration("greenhouse", origin_id=customer, emit_webhook=False)
            integrations.append(created["id"])
        seed_catalog(platform.warehouse_url, customers)
        if "catalog" in jobs:
            # The first tasks on a fresh worker start far slower (cold imports and caches) than on one that has
            # been running, as in production: one catalog run with no integration registered yet, not measured.
            warm = timed_run(api, JOBS["catalog"], 300)
            say(
                f"warm-up catalog run (nothing to publish): {warm['wall']:.1f} s, load average {warm['load']}"
            )
        for customer, integration_id in zip(customers, integrations, strict=True):
            add_integration(store, integration_id, customer_key=customer, category="ASSESSMENT", wake=False)
        say(f"{args.integrations} integrations, Kombo latency {args.kombo_latency_ms:.0f} ms, "
            f"platform latency {args.platform_latency_ms:.0f} ms, 1 worker x {args.worker_concurrency} slots")  # fmt: skip

        results: dict[str, tuple[int, dict[str, Any]]] = {}
        small_run: dict[str, Any] | None = None
        if "catalog" in jobs:
            results["catalog"] = (args.integrations, timed_run(api, JOBS["catalog"], 600))
            # A new customer: the run its creation triggers checks all, publishes one.
            newcomer = "cust-new"
            created = kombo.admin.create_integration("greenhouse", origin_id=newcomer, emit_webhook=False)
            add_integration(store, created["id"], customer_key=newcomer, category="ASSESSMENT", wake=False)
            add_customer(platform.warehouse_url, newcomer)
            small_run = timed_run(api, JOBS["catalog"], 300)
        order_ids = kombo.admin.bulk_create_orders(integrations, args.orders, package_id="py-basics")
        if "intake" in jobs:
            results["intake"] = (args.orders, timed_run(api, JOBS["intake"], 900))
            invited = len(platform.admin.invitations()["creations_by_order"])
            if invited < args.orders:
                say(f"warning: only {invited} of {args.orders} orders were invited")
        if "results" in jobs:
            platform.admin.simulate(cancel_rate=0)
            results["results"] = (args.orders, timed_run(api, JOBS["results"], 900))

        # The one-at-a-time loop, same servers, same latency.
        sample = args.baseline_sample
        packages = [{"id": "py-basics", "type": "SKILLS_TEST", "name": "Python basics", "description": "x"}]
        extra_ids = kombo.admin.bulk_create_orders(integrations[0], sample, package_id="py-basics")
        with httpx.Client(timeout=30) as http:
            headers = {**kombo.headers(integrations[0]), "Content-Type": "application/json"}
            per = {
                "catalog": sequential_seconds(
                    [lambda: http.put(f"{kombo.api_url}/assessment/packages", headers=headers, json={"packages": packages})]
                    * sample
                )
                / sample,
                "intake": sequential_seconds(
                    [
                        (lambda oid=oid: (
                            http.get(f"{kombo.api_url}/assessment/orders", headers=headers, params={"ids": oid}),
                            http.post(f"{platform.url}/api/invitations", headers=platform.headers(), json={
                                "order_id": f"baseline-{oid}", "integration_id": integrations[0],
                                "package_id": "py-basics", "candidate": {"email": "baseline@candidates.example"}}),
                        ))
                        for oid in extra_ids
                    ]
                )
                / sample,
                "results": sequential_seconds(
                    [
                        (lambda oid=oid: http.put(
                            f"{kombo.api_url}/assessment/orders/{oid}/result", headers=headers,
                            json={"status": "COMPLETED", "result_url": "https://example.com/r", "score": 1, "max_score": 2}))
                        for oid in extra_ids
                    ]
                )
                / sample,
            }  # fmt: skip

        print()
        print(
            f"{'job':<9} {'items':>6} {'run s':>7} {'task s':>7} {'per hour (1 worker)':>20} {'loop per hour':>14} {'ratio':>7}  load average"
        )
        for job, (items, timing) in results.items():
            per_hour = items / timing["wall"] * 3600
            loop_per_hour = 3600 / per[job]
            print(
                f"{job:<9} {items:>6} {timing['wall']:>7.1f} {timing['tasks']:>7.1f} {per_hour:>20,.0f} "
                f"{loop_per_hour:>14,.0f} {per_hour / loop_per_hour:>6.1f}x  {timing['load']}"
            )
        if "catalog" in results:
            items, timing = results["catalog"]
            ratio = items / timing["wall"] * per["catalog"]
            verdict = "met" if ratio >= CATALOG_RATIO_TARGET else "NOT met"
            print(f"\ncatalog, {items} integrations: {ratio:.1f}x the one-at-a-time loop (target >= "
                  f"{CATALOG_RATIO_TARGET:.0f}x: {verdict}); tasks: {timing['timeline']}")  # fmt: skip
        if small_run is not None:
            verdict = "met" if small_run["end_to_end"] < SMALL_RUN_TARGET_SECONDS else "NOT met"
            print(f"catalog, one new integration: {small_run['end_to_end']:.1f} s queued to end "
                  f"({small_run['wall']:.1f} s start to end, {small_run['state']}; target < "
                  f"{SMALL_RUN_TARGET_SECONDS:.0f} s: {verdict}), load average {small_run['load']}; "
                  f"tasks: {small_run['timeline']}")  # fmt: skip
        print(f"\n(orders recorded: {len(order_ids)}; run s = scheduler start to end of the DAG run, "
              "task s = sum of its task durations)")  # fmt: skip
        return 0
    finally:
        deployment.stop()
        deployment.drop_databases()
        kombo.stop()
        platform.stop()


if __name__ == "__main__":
    raise SystemExit(main())
