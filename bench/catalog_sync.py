"""Catalog sync throughput: N integrations x M packages published to the sandbox, against a one-request-at-a-
time baseline measured in the same run.

    .venv/bin/python bench/catalog_sync.py                         # 1,000 x 50 at 100 ms latency (about 2 min)
    .venv/bin/python bench/catalog_sync.py --integrations 100      # quick
    .venv/bin/python bench/catalog_sync.py --baseline-integrations 100   # time the baseline on a sample
    .venv/bin/python bench/catalog_sync.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/catalog_sync.py --sandbox-url http://127.0.0.1:8765   # sandbox in its own process

Both runs execute the pipeline's own steps (plan: SQL read + contract check + hashes + shards; then the
shards). The measured run publishes like the DAG: `--parallel-shards` shard tasks at once, each with
`--concurrency` threads and its own Kombo client; the baseline runs the same code with one shard at a time
and one thread. Both are first publishes (one PUT per integration): the baseline publishes a second set of
integrations for the same customers, registered after the measured run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "include")]

from kombo_sync.catalog import (  # noqa: E402
    SyncOptions,
    finish_catalog_sync,
    plan_catalog_sync,
    publish_catalog_shard,
)
from kombo_sync.catalog.source import read_catalog_sql  # noqa: E402
from kombo_sync.catalog.warehouse import create_catalog_tables, write_catalog_tables  # noqa: E402
from kombo_sync.kombo.client import KomboClient  # noqa: E402
from kombo_sync.settings import CatalogSettings  # noqa: E402
from kombo_sync.state.integrations import IntegrationRepository  # noqa: E402
from kombo_sync.state.store import StateStore  # noqa: E402
from sandbox.knobs import KomboKnobs  # noqa: E402
from sandbox.kombo_app import KomboSandboxSettings  # noqa: E402
from sandbox.testing import SandboxAdmin, run_kombo_sandbox  # noqa: E402
from tests.support.scratch_db import scratch_store  # noqa: E402

PACKAGE_TYPES = ("SKILLS_TEST", "BEHAVIORAL", "VIDEO_INTERVIEW", "BACKGROUND_CHECK", "REFERENCE_CHECK")
CATALOG_SQL = ROOT / "include" / "sql" / "catalog.sql"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--integrations", type=int, default=1000)
    parser.add_argument("--packages", type=int, default=50, help="packages per customer")
    parser.add_argument("--catalog-size", type=int, default=200, help="distinct packages in the catalog")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="sandbox latency per request")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="threads per shard (catalog.publish_concurrency)"
    )
    parser.add_argument(
        "--parallel-shards", type=int, default=4, help="shard tasks at once (the DAG's limit)"
    )
    parser.add_argument(
        "--sandbox-url",
        help="use a sandbox already running in another process (python -m sandbox --latency-ms 100 ...) "
        "instead of one in this process; its knobs are set from --latency-ms",
    )
    parser.add_argument("--api-key", default="sandbox-key", help="the external sandbox's API key")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="keep the state in a temporary PostgreSQL database created here (default: a SQLite file)",
    )
    parser.add_argument(
        "--baseline-integrations",
        type=int,
        default=None,
        help="time the one-at-a-time baseline on this many integrations and scale it up (default: all)",
    )
    return parser.parse_args()


def build_catalog(engine: sa.Engine, customers: list[str], per_customer: int, catalog_size: int) -> None:
    packages = [
        {
            "package_id": f"pkg-{index:04d}",
            "type": PACKAGE_TYPES[index % len(PACKAGE_TYPES)],
            "name": f"Assessment {index}",
            "description": f"Assessment number {index}, about {20 + index % 40} minutes.",
        }
        for index in range(catalog_size)
    ]
    entitlements = {
        customer: [packages[(offset + k) % catalog_size]["package_id"] for k in range(per_customer)]
        for offset, customer in enumerate(customers)
    }
    create_catalog_tables(engine)
    write_catalog_tables(engine, packages, entitlements)


def register(store: StateStore, integrations: list[tuple[str, str]]) -> None:
    repository = IntegrationRepository(store)
    for integration_id, customer in integrations:
        repository.upsert(integration_id, source="bootstrap", customer_key=customer)


def run_sync(
    store: StateStore,
    engine: sa.Engine,
    sandbox: Any,
    *,
    shard_size: int,
    concurrency: int,
    parallel_shards: int,
) -> tuple[float, float, dict[str, Any]]:
    """One DAG run's work; returns (plan seconds, publish + finish seconds, summary)."""
    started = time.perf_counter()
    planned = plan_catalog_sync(
        store,
        lambda: read_catalog_sql(engine, CATALOG_SQL),
        CatalogSettings(shard_size=shard_size),
        SyncOptions(),
    )
    planned_at = time.perf_counter()

    def shard_task(shard: dict[str, Any]) -> dict[str, Any]:
        # One Kombo client per shard task, as each Airflow task builds its own.
        with KomboClient(sandbox.api_url, sandbox.api_key, max_connections=concurrency) as client:
            return publish_catalog_shard(store, client, shard, concurrency=concurrency)

    with ThreadPoolExecutor(max_workers=parallel_shards) as pool:
        results = list(pool.map(shard_task, planned["shards"]))
    summary = finish_catalog_sync(store, planned["summary"], results)
    sizes = [len(json.dumps(shard)) for shard in planned["shards"]]
    summary["xcom_bytes"] = {"shards": sum(sizes), "largest_shard": max(sizes, default=0)}
    summary["xcom_bytes"]["summary"] = len(json.dumps(planned["summary"]))
    return planned_at - started, time.perf_counter() - planned_at, summary


class ExternalSandbox:
    """A sandbox started elsewhere, with the attributes the benchmark uses."""

    def __init__(self, url: str, api_key: str, knobs: KomboKnobs) -> None:
        self.url = url.rstrip("/")
        self.api_url = f"{self.url}/v1"
        self.api_key = api_key
        self.admin = SandboxAdmin(self.url)
        self.admin.reset()
        self.admin.set_knobs(**knobs.model_dump(exclude={"seed"}))

    def __enter__(self) -> ExternalSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.admin.close()


def start_sandbox(args: argparse.Namespace, knobs: KomboKnobs) -> Any:
    if args.sandbox_url:
        return ExternalSandbox(args.sandbox_url, args.api_key, knobs)
    return run_kombo_sandbox(KomboSandboxSettings(knobs=knobs))


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    n = args.integrations
    sample_size = min(args.baseline_integrations or n, n)
    knobs = KomboKnobs.model_validate({"latency_ms": args.latency_ms, "concurrency_limit": 30})
    with start_sandbox(args, knobs) as sandbox:
        customers = [f"customer-{index:05d}" for index in range(n)]
        # Two sets of integrations for the same customers: the measured run publishes the first, the baseline
        # the second, so both are first publishes (one PUT each) on the same store and catalog.
        measured = [(sandbox.admin.create_integration("workday", origin_id=c)["id"], c) for c in customers]
        baseline_set = [
            (sandbox.admin.create_integration("lever", origin_id=c)["id"], c) for c in customers[:sample_size]
        ]
        warehouse = sa.create_engine(f"sqlite:///{workdir / 'warehouse.db'}")
        build_catalog(warehouse, customers, args.packages, args.catalog_size)
        store, remove_store = scratch_store(workdir, args.postgres, "bench_catalog")
        try:
            print(
                f"{n} integrations x {args.packages} packages ({args.catalog_size} distinct in the catalog), "
                f"sandbox latency {args.latency_ms:g} ms, state store {store.dialect}"
            )
            register(store, measured)
            sandbox.admin.clear_requests()
            plan_s, publish_s, summary = run_sync(
                store,
                warehouse,
                sandbox,
                shard_size=args.shard_size,
                concurrency=args.concurrency,
                parallel_shards=args.parallel_shards,
            )
            assert summary["counts"] == {"published": n}, summary["counts"]
            assert len(sandbox.admin.list_packages(measured[n // 2][0])) == args.packages
            stats = sandbox.admin.stats()
            xcom = summary["xcom_bytes"]
            total_s = plan_s + publish_s
            print(
                f"pipeline:  {total_s:7.2f} s  = {plan_s:.2f} s plan (read, check, hash {n * args.packages} rows) "
                f"+ {publish_s:.2f} s publish; {n / total_s:.0f} integrations/s, "
                f"{args.parallel_shards} shards x {args.concurrency} threads, "
                f"{stats.get('requests_total')} requests, max in flight {stats.get('max_concurrency')}"
            )
            print(
                f"XCom:      {xcom['shards'] / 1024:.0f} KB of shard plans ({xcom['largest_shard'] / 1024:.1f} KB the "
                f"largest), {xcom['summary'] / 1024:.1f} KB plan summary"
            )

            register(store, baseline_set)
            base_plan_s, base_publish_s, baseline = run_sync(
                store, warehouse, sandbox, shard_size=args.shard_size, concurrency=1, parallel_shards=1
            )
            assert baseline["counts"] == {"published": sample_size, "unchanged": n}, baseline["counts"]
            scale = n / sample_size
            baseline_s = base_plan_s + base_publish_s * scale
            note = f", publish measured on {sample_size} and scaled x{scale:g}" if sample_size < n else ""
            print(
                f"baseline:  {baseline_s:7.2f} s  = {base_plan_s:.2f} s plan + {base_publish_s * scale:.2f} s "
                f"publishing one request at a time{note}"
            )
            print(
                f"speed-up:  {baseline_s / total_s:7.1f}x overall, {base_publish_s * scale / publish_s:.1f}x publishing"
            )
        finally:
            remove_store()
    return 0


if __name__ == "__main__":
    sys.exit(main())
