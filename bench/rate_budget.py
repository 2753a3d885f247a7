"""One Kombo rate budget per API key across processes (issue 14, item 6): two worker processes against a sandbox
rate limit, each publishing packages to its own half of the integrations with 16 threads (as two catalog shards,
or a shard and the intake, do), once per budget backend:

- `process, adapt`: today's default, each process its own budget learning the limit from 429s and headers;
- `process`: each process its own budget at the key's rate (so the two together send twice the limit);
- `redis`: one budget in Redis (127.0.0.1:6379, a key prefix of its own);
- `database`: one budget in the state database (a SQLite file; `--postgres ADMIN_URL` adds PostgreSQL).

The sandbox limits the key to `--limit` requests per `--window` seconds (fixed windows, like Kombo's
`ratelimit-*` headers); the shared budgets are set a little below it (`--headroom`). Printed per backend: the
requests the sandbox answered, how many were 429s, the most requests in any window, the achieved rate over the
limit, and the load average.

    .venv/bin/python bench/rate_budget.py                    # 2 x 200 integrations, limit 50 per 1 s
    .venv/bin/python bench/rate_budget.py --integrations 100 --limit 40
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

API_KEY = "bench-rate-key"
PACKAGES = [{"id": "py-basics", "type": "SKILLS_TEST", "name": "Python basics", "description": "Coding test"}]


def publish_half(
    api_url: str, integrations: list[str], environ: dict[str, str], options: dict[str, Any], go: Any, out: Any
) -> None:
    """One worker process: a Kombo client on the chosen budget, one PUT packages per integration, 16 threads."""
    from kombo_sync.kombo.budgets import shared_rate_budget
    from kombo_sync.kombo.client import KomboClient
    from kombo_sync.kombo.errors import KomboError
    from kombo_sync.state.store import StateStore

    state_url = options.get("state_url")
    budget = shared_rate_budget(
        API_KEY,
        rate_per_second=options["rate"],
        burst=options["burst"],
        store=(lambda: StateStore(state_url)) if state_url else None,
        environ=environ,
    )
    failed = 0
    with KomboClient(api_url, API_KEY, rate_budget=budget, max_retries=10) as client:
        go.wait(60)

        def put(integration_id: str) -> bool:
            try:
                client.set_packages(integration_id, PACKAGES)
                return True
            except KomboError:
                return False

        with ThreadPoolExecutor(16) as pool:
            failed = sum(1 for ok in pool.map(put, integrations) if not ok)
    out.put(failed)


def most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    end = 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] - start < window:
            end += 1
        best = max(best, end - start_index)
    return best


def run_backend(
    name: str, environ: dict[str, str], options: dict[str, Any], sandbox: Any, halves: list[list[str]]
) -> dict[str, Any]:
    sandbox.admin.clear_requests()
    sandbox.admin.set_knobs(rate_limit=options["limit"], rate_limit_window_seconds=options["window"])
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=publish_half, args=(sandbox.api_url, half, environ, options, go, out))
        for half in halves
    ]
    for worker in workers:
        worker.start()
    time.sleep(options["settle"])  # let both import and build their clients before the race starts
    started = time.perf_counter()
    go.set()
    failed = sum(out.get(timeout=600) for _ in workers)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join(timeout=30)
    entries = [
        e for e in sandbox.admin.requests(path_prefix="/v1/assessment/packages") if e["method"] == "PUT"
    ]
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() for e in entries]
    accepted = [t for t, e in zip(times, entries, strict=True) if e["status"] != 429]
    throttled = sum(1 for e in entries if e["status"] == 429)
    return {
        "backend": name,
        "requests": len(entries),
        "429": throttled,
        "failed": failed,
        "seconds": elapsed,
        "max_window": most_in_window(times, options["window"]),
        "rate_over_limit": len(accepted) / elapsed / (options["limit"] / options["window"]),
        "load": ", ".join(f"{value:.1f}" for value in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--integrations", type=int, default=200, help="per worker process")
    parser.add_argument("--limit", type=int, default=50, help="sandbox: requests per window per API key")
    parser.add_argument("--window", type=float, default=1.0, help="sandbox: window seconds")
    parser.add_argument("--headroom", type=float, default=0.9, help="shared budget rate = limit x this")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server: also time the budget there")
    parser.add_argument("--backends", default="process-adapt,process,redis,database")
    args = parser.parse_args(argv)

    import redis

    from kombo_sync.state.store import StateStore
    from sandbox.knobs import KomboKnobs
    from sandbox.kombo_app import KomboSandboxSettings
    from sandbox.testing import run_kombo_sandbox

    sandbox = run_kombo_sandbox(
        KomboSandboxSettings(
            api_key=API_KEY, knobs=KomboKnobs.model_validate({"latency_ms": args.latency_ms})
        )
    )
    work = Path(tempfile.mkdtemp(prefix="kombo-rate-budget-"))
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    rate = args.limit / args.window * args.headroom
    burst = max(1, int(args.limit * (1 - args.headroom) / 2))
    shared = {"rate": rate, "burst": burst, "limit": args.limit, "window": args.window, "settle": 4.0}
    redis_env = {
        "KOMBO_RATE_BUDGET": "redis",
        "KOMBO_RATE_BUDGET_REDIS_URL": "redis://127.0.0.1:6379/0",
        "KOMBO_RATE_BUDGET_PREFIX": prefix,
    }
    sqlite_url = f"sqlite:///{work / 'state.db'}"
    runs: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    wanted = {name.strip() for name in args.backends.split(",")}
    if "process-adapt" in wanted:
        runs.append(
            ("process, adapt", {"KOMBO_RATE_BUDGET": "process"}, {**shared, "rate": None, "burst": None})
        )
    if "process" in wanted:
        runs.append(("process", {"KOMBO_RATE_BUDGET": "process"}, shared))
    if "redis" in wanted:
        runs.append(("redis", redis_env, shared))
    if "database" in wanted:
        StateStore(sqlite_url).migrate()
        runs.append(
            ("database (sqlite)", {"KOMBO_RATE_BUDGET": "database"}, {**shared, "state_url": sqlite_url})
        )
    pg_database = None
    if args.postgres and "database" in wanted:
        import sqlalchemy as sa

        pg_database = f"kombo_rate_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{pg_database}"')
        pg_url = args.postgres.rsplit("/", 1)[0] + f"/{pg_database}"
        StateStore(pg_url).migrate()
        runs.append(
            ("database (postgresql)", {"KOMBO_RATE_BUDGET": "database"}, {**shared, "state_url": pg_url})
        )
    try:
        halves = [
            [sandbox.admin.create_integration("greenhouse", origin_id=f"w{w}c{n}", emit_webhook=False)["id"]
             for n in range(args.integrations)]
            for w in range(2)
        ]  # fmt: skip
        print(f"2 worker processes x {args.integrations} integrations x 16 threads; sandbox limit {args.limit} "
              f"per {args.window:g} s, latency {args.latency_ms:.0f} ms; shared budgets at {rate:.1f}/s, "
              f"burst {burst}")  # fmt: skip
        print(f"{'budget':<22} {'requests':>8} {'429s':>5} {'failed':>6} {'seconds':>7} "
              f"{'most in a window':>16} {'accepted/limit':>14}  load average")  # fmt: skip
        for name, environ, options in runs:
            result = run_backend(name, environ, options, sandbox, halves)
            print(f"{result['backend']:<22} {result['requests']:>8} {result['429']:>5} {result['failed']:>6} "
                  f"{result['seconds']:>7.1f} {result['max_window']:>16} {result['rate_over_limit']:>14.2f}  "
                  f"{result['load']}")  # fmt: skip
    finally:
        sandbox.stop()
        client = redis.Redis(host="127.0.0.1", port=6379, db=0)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        if pg_database and args.postgres:
            import sqlalchemy as sa

            admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
