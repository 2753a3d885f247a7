"""Benchmarks of the result write-back (issue 5; targets below).

1. Throughput: N results (default 10,000) against the Kombo sandbox (its own process) with a fixed latency
   (default 50 ms) and a set rate limit. Prints the achieved rate over the allowed rate (target >= 0.95), the
   pipeline over two plain paced loops (prebuilt bodies, no state or outbox: the floors, target >= 1.0): httpx in
   the same number of threads, and aiohttp on one event loop (the pipeline's own transport with
   `send_with: asyncio`), our CPU per result (target <= 1.2 ms), and the speed-up over a one-PUT-at-a-time loop
   (target >= 20x), all measured in the same run, with the load average. The sequential loop is measured on a sample (default 200
   results) and extrapolated to N; the output says so.
2. Memory: the read + map + enqueue path for 1,000,000 pending warehouse rows against 10,000, each in a fresh
   subprocess, peak RSS (ru_maxrss) compared (target: nearly the same).

    .venv/bin/python bench/writeback.py                      # both, full size (about 10 minutes)
    .venv/bin/python bench/writeback.py --quick              # 2,000 results, 50,000 vs 10,000 rows (~1 min)
    .venv/bin/python bench/writeback.py --skip-memory --results 5000 --rate 300
    .venv/bin/python bench/writeback.py --quick --skip-memory --send-with threads   # the sender's thread path
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

API_KEY = "bench-key"
# The bench's warehouse query: the platform table plus the integration of each order, so the bench needs no
# million-row orders table in the state store (the column contract allows the query to return integration_id).
BENCH_SQL = """
SELECT r.order_id, r.invitation_id, r.status, r.score, r.max_score, r.completed_at, r.result_url, r.report_url,
       r.report_bytes, r.report_name, r.report_content_type, r.sub_results, r.attributes, r.updated_at,
       o.integration_id
FROM assessment_results AS r
JOIN bench_order_integrations AS o ON o.order_id = r.order_id
WHERE r.updated_at >= :window_start AND r.updated_at < :window_end
ORDER BY r.updated_at, r.order_id
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_warehouse(
    url: str, rows: int, order_ids: list[str] | None, integrations: list[str], now: datetime
) -> None:
    """`rows` synthetic results (https URLs, report as a link) and the order -> integration table."""
    from sandbox import warehouse

    def results() -> Any:
        for index, row in enumerate(
            warehouse.generate_results(
                rows, base_url="https://platform.example", now=now - timedelta(minutes=5)
            )
        ):
            if order_ids is not None:
                row["order_id"] = order_ids[index]
            yield row

    warehouse.write_results(url, results(), batch_size=20_000)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS bench_order_integrations (order_id TEXT PRIMARY KEY, integration_id TEXT)"
        )
        batch: list[tuple[str, str]] = []
        for index in range(rows):
            order_id = order_ids[index] if order_ids is not None else f"order-{index:07d}"
            batch.append((order_id, integrations[index % len(integrations)]))
            if len(batch) >= 50_000:
                conn.exec_driver_sql("INSERT INTO bench_order_integrations VALUES (?, ?)", batch)
                batch = []
        if batch:
            conn.exec_driver_sql("INSERT INTO bench_order_integrations VALUES (?, ?)", batch)
    engine.dispose()


def bench_settings(workdir: Path, **writeback: Any) -> Any:
    from kombo_sync.settings import PipelineSettings

    sql_file = workdir / "bench_results.sql"
    sql_file.write_text(BENCH_SQL)
    return PipelineSettings.model_validate({"writeback": {"sql_file": str(sql_file), **writeback}})


def enqueue_window(store: Any, engine: Any, settings: Any, now: datetime) -> dict[str, Any]:
    from kombo_sync.writeback.job import enqueue_results

    return enqueue_results(
        store, engine, settings, window_start=now - timedelta(hours=1), window_end=now + timedelta(hours=1)
    )


# Throughput


def start_sandbox(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(workdir / "sandbox.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "sandbox", "--port", str(port), "--api-key", API_KEY,
            "--latency-ms", str(args.latency_ms),
            "--rate-limit", str(int(args.rate * args.rate_window)), "--rate-limit-window", str(args.rate_window),
            "--concurrency-limit", "30", "--seed", "1", "--log-level", "WARNING",
        ],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)])},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the sandbox did not start; see sandbox.log")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_client(base_url: str, args: argparse.Namespace, concurrency: int) -> Any:
    from kombo_sync.kombo.client import KomboClient

    burst, pace = client_pace(args)
    return KomboClient(
        f"{base_url}/v1",
        API_KEY,
        timeout=30,
        rate_limit_per_second=None if args.no_client_rate else pace,
        rate_limit_burst=None if args.no_client_rate else burst,
        max_in_flight_per_integration=30,
        max_connections=max(concurrency, 10),
    )


def prepare(admin: Any, store: Any, workdir: Path, name: str, count: int, integrations: list[str], now: datetime,
            settings: Any) -> dict[str, Any]:  # fmt: skip
    """Orders at the sandbox, their results in a warehouse, enqueued into the store's outbox."""
    order_ids = admin.bulk_create_orders(integrations, count)
    url = f"sqlite:///{workdir / f'{name}-warehouse.db'}"
    write_warehouse(url, count, order_ids, integrations, now)
    engine = sa.create_engine(url)
    summary = enqueue_window(store, engine, settings, now)
    engine.dispose()
    if summary["enqueued"] != count:
        raise RuntimeError(f"expected {count} results enqueued, got {summary}")
    return summary


def floor_bodies(order_ids: list[str], integrations: list[str]) -> list[tuple[str, str, bytes]]:
    completed_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return [
        (
            order_id,
            integrations[index % len(integrations)],
            json.dumps({
                "status": "COMPLETED", "score": 80 + index % 20, "max_score": 100,
                "completed_at": completed_at, "result_url": f"https://platform.example/results/{order_id}",
            }).encode(),
        )
        for index, order_id in enumerate(order_ids)
    ]  # fmt: skip


def client_pace(args: argparse.Namespace) -> tuple[int, float]:
    """(burst, rate): the client-side pacing of the pipeline and of both floors, as a team sets it in the
    kombo_default connection extras when it knows its limit (README, "Rate limits"): a burst that absorbs
    scheduling hiccups, and a rate lowered by the burst and by an allowance for the requests' arrival jitter,
    so that no fixed window of Kombo's sees more than the limit: rate x window + burst + allowance <= limit.
    Without the allowance a window can receive one request too many (the first window of a run: the burst
    leaves at once while the first connections open), and the 429 pauses every send until the window resets."""
    window_limit = args.rate * args.rate_window
    burst = max(1, int(window_limit * args.burst_share))
    allowance = window_limit * args.jitter_share
    return burst, args.rate - (burst + allowance) / args.rate_window


def floor_summary(started: float, cpu_before: float, count: int, errors: list[int]) -> dict[str, Any]:
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_before
    return {
        "sent": count - len(errors),
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
        "seconds": round(elapsed, 2),
        "rate_per_s": round(count / elapsed, 1),
        "cpu_ms_per_request": round(cpu / count * 1000, 2),
    }


def floor_loop(
    base_url: str, args: argparse.Namespace, order_ids: list[str], integrations: list[str]
) -> dict[str, Any]:
    """The threads' floor: a plain paced ``httpx`` loop (no state store, no outbox, no mapping, no retries), the
    same threads and the same client-side rate as the pipeline, PUTting prebuilt result bodies. What any
    integration could do at best with httpx in threads against this sandbox."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    bodies = floor_bodies(order_ids, integrations)
    burst, pace = client_pace(args)
    lock, next_slot = threading.Lock(), [0.0]
    errors: list[int] = []
    local = threading.local()

    def wait_turn() -> None:
        with lock:
            now = time.monotonic()
            slot = max(next_slot[0], now - burst / pace)
            next_slot[0] = slot + 1 / pace
        if slot > now:
            time.sleep(slot - now)

    def put(item: tuple[str, str, bytes]) -> None:
        order_id, integration_id, body = item
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(
                base_url=f"{base_url}/v1", timeout=30,
                headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            )  # fmt: skip
        wait_turn()
        answer = client.put(
            f"/assessment/orders/{order_id}/result",
            content=body,
            headers={"X-Integration-Id": integration_id},
        )
        if answer.status_code != 200:
            errors.append(answer.status_code)

    cpu_before, started = time.process_time(), time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(put, bodies))
    return floor_summary(started, cpu_before, len(bodies), errors)


def floor_loop_async(
    base_url: str, args: argparse.Namespace, order_ids: list[str], integrations: list[str]
) -> dict[str, Any]:
    """The event loop's floor: the same PUTs, pacing and concurrency as ``floor_loop``, as coroutines on one
    asyncio loop over one aiohttp session (the transport of ``send_with: asyncio``), with nothing else."""
    import asyncio

    import aiohttp

    bodies = floor_bodies(order_ids, integrations)
    burst, pace = client_pace(args)
    errors: list[int] = []

    async def main() -> dict[str, Any]:
        next_slot = 0.0
        slots = asyncio.Semaphore(args.concurrency)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=max(args.concurrency, 10))
        ) as session:

            async def put(item: tuple[str, str, bytes]) -> None:
                nonlocal next_slot
                order_id, integration_id, body = item
                async with slots:
                    now = time.monotonic()
                    slot = max(next_slot, now - burst / pace)
                    next_slot = slot + 1 / pace
                    if slot > now:
                        await asyncio.sleep(slot - now)
                    async with session.put(
                        f"{base_url}/v1/assessment/orders/{order_id}/result",
                        data=body,
                        headers={"X-Integration-Id": integration_id},
                    ) as answer:
                        await answer.read()
                        if answer.status != 200:
                            errors.append(answer.status)

            cpu_before, started = time.process_time(), time.monotonic()
            await asyncio.gather(*(put(item) for item in bodies))
            return floor_summary(started, cpu_before, len(bodies), errors)

    return asyncio.run(main())


def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from kombo_sync.state.store import StateStore
    from kombo_sync.writeback.sender import ResultSender
    from sandbox.testing import SandboxAdmin

    proc, base_url = start_sandbox(args, workdir)
    try:
        admin = SandboxAdmin(base_url)
        integrations = [admin.create_integration(tool="workday")["id"] for _ in range(args.integrations)]
        now = datetime.now(UTC)
        settings = bench_settings(
            workdir,
            max_concurrency=args.concurrency,
            claim_batch_rows=args.claim_batch_rows,
            send_with=args.send_with,
        )

        # The one-PUT-at-a-time loop: the same sender at concurrency 1, on a sample, in its own store.
        seq_store = StateStore(f"sqlite:///{workdir / 'sequential-state.db'}")
        seq_store.migrate()
        seq_settings = bench_settings(
            workdir, max_concurrency=1, claim_batch_rows=args.sequential_sample, send_with=args.send_with
        )
        prepare(
            admin, seq_store, workdir, "sequential", args.sequential_sample, integrations, now, seq_settings
        )
        with make_client(base_url, args, 1) as client:
            seq = ResultSender(seq_store, client, seq_settings.writeback).run()
        sequential_rate = seq["sent"] / seq["elapsed_seconds"]

        store = StateStore(args.state_url or f"sqlite:///{workdir / 'state.db'}")
        store.migrate()
        started = time.monotonic()
        read = prepare(admin, store, workdir, "concurrent", args.results, integrations, now, settings)
        enqueue_seconds = time.monotonic() - started
        time.sleep(args.rate_window)  # a fresh rate-limit window for the timed part
        admin.clear_requests()
        load_at_send = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        cpu_before, sandbox_cpu_before = time.process_time(), process_cpu_seconds(proc.pid)
        with make_client(base_url, args, args.concurrency) as client:
            sent = ResultSender(store, client, settings.writeback).run()
        cpu = {
            "pipeline_cpu_seconds": round(time.process_time() - cpu_before, 2),
            "sandbox_cpu_seconds": round(process_cpu_seconds(proc.pid) - sandbox_cpu_before, 2),
        }
        stats = admin.stats()

        # The floor loops on fresh orders, each after a fresh rate-limit window, with nothing shared with the
        # above or with each other (each builds its own bodies and connections).
        floor_ids = admin.bulk_create_orders(integrations, args.floor_results or args.results)
        time.sleep(args.rate_window)
        floor = floor_loop(base_url, args, floor_ids, integrations)
        floor_ids = admin.bulk_create_orders(integrations, args.floor_results or args.results)
        time.sleep(args.rate_window)
        floor_async = floor_loop_async(base_url, args, floor_ids, integrations)
    finally:
        proc.terminate()
        proc.wait(10)
    achieved = sent["sent"] / sent["elapsed_seconds"]
    return {
        "results": args.results,
        "latency_ms": args.latency_ms,
        "allowed_rate_per_s": args.rate,
        "integrations": args.integrations,
        "concurrency": args.concurrency,
        "enqueue_seconds": round(enqueue_seconds, 1),
        "read_rows": read["rows"],
        "send_seconds": sent["elapsed_seconds"],
        "sent": sent["sent"],
        "dead": sent["dead"],
        "retry": sent["retry"],
        "achieved_rate_per_s": round(achieved, 1),
        "achieved_over_allowed": round(achieved / args.rate, 3),
        **cpu,
        "pipeline_cpu_ms_per_result": round(cpu["pipeline_cpu_seconds"] / max(1, sent["sent"]) * 1000, 2),
        "send_with": args.send_with,
        "load_at_send": load_at_send,
        "floor_loop": floor,
        "pipeline_over_floor_loop": round(achieved / floor["rate_per_s"], 3) if floor["rate_per_s"] else None,
        "floor_loop_async": floor_async,
        "pipeline_over_floor_loop_async": (
            round(achieved / floor_async["rate_per_s"], 3) if floor_async["rate_per_s"] else None
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "sandbox_responses": stats.get("by_route", {}),
        "sandbox_faults": stats.get("faults", {}),
        "sandbox_max_concurrency": stats.get("max_concurrency"),
        "sequential_sample": args.sequential_sample,
        "sequential_rate_per_s": round(sequential_rate, 2),
        "sequential_seconds_for_all_extrapolated": round(args.results / sequential_rate, 1),
        "speedup": round(achieved / sequential_rate, 1),
    }


# Memory


def memory_child(rows: int, workdir: Path) -> None:
    """Runs in a fresh process: read + map + enqueue `rows` pending results; prints peak RSS as JSON."""
    from kombo_sync.state.store import StateStore

    logging.disable(logging.INFO)
    now = datetime.now(UTC)
    warehouse_url = f"sqlite:///{workdir / f'memory-{rows}-warehouse.db'}"
    store = StateStore(f"sqlite:///{workdir / f'memory-{rows}-state.db'}")
    store.migrate()
    settings = bench_settings(workdir)
    engine = sa.create_engine(warehouse_url)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    summary = enqueue_window(store, engine, settings, now)
    elapsed = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": rows,
                "enqueued": summary["enqueued"],
                "chunks": summary["chunks"],
                "seconds": round(elapsed, 1),
                "rows_per_second": round(rows / elapsed),
                "rss_before_mb": round(baseline / 1024, 1),
                "peak_rss_mb": round(peak / 1024, 1),
            }
        )
    )


def memory(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results = {}
    for rows in (args.memory_baseline_rows, args.memory_rows):
        write_warehouse(
            f"sqlite:///{workdir / f'memory-{rows}-warehouse.db'}",
            rows,
            None,
            ["bench:one"],
            datetime.now(UTC),
        )
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(rows), "--workdir", str(workdir)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        results[rows] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  memory, {rows} rows: {results[rows]}", flush=True)
    small, large = results[args.memory_baseline_rows], results[args.memory_rows]
    return {
        "baseline_rows": args.memory_baseline_rows,
        "rows": args.memory_rows,
        "peak_rss_mb_baseline": small["peak_rss_mb"],
        "peak_rss_mb": large["peak_rss_mb"],
        "peak_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "rows_per_second": large["rows_per_second"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--rate", type=float, default=400.0, help="allowed requests per second (sandbox limit)"
    )
    parser.add_argument("--rate-window", type=float, default=5.0, help="sandbox rate-limit window, seconds")
    parser.add_argument("--integrations", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32, help="sender threads (max_concurrency)")
    parser.add_argument(
        "--claim-batch-rows",
        type=int,
        default=500,
        help="outbox rows per claim (writeback.claim_batch_rows, default 500)",
    )
    parser.add_argument("--sequential-sample", type=int, default=200)
    parser.add_argument(
        "--floor-results",
        type=int,
        default=None,
        help="results for the plain httpx floor loop (default: --results)",
    )
    parser.add_argument(
        "--send-with",
        choices=("asyncio", "threads"),
        default="asyncio",
        help="the sender's send_with setting",
    )
    parser.add_argument("--burst-share", type=float, default=0.01, help="client burst, share of one window")
    parser.add_argument(
        "--jitter-share",
        type=float,
        default=0.01,
        help="allowance for arrival jitter kept free in each window, share of one window (0: pace at the limit)",
    )
    parser.add_argument("--no-client-rate", action="store_true", help="no client-side pacing: headers only")
    parser.add_argument("--state-url", default=None, help="state store for the timed run (default: SQLite)")
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--memory-baseline-rows", type=int, default=10_000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2,000 results; 50,000 vs 10,000 rows")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child, Path(args.workdir))
        return 0
    if args.quick:
        args.results, args.sequential_sample = 2_000, 100
        args.memory_rows, args.memory_baseline_rows = 50_000, 10_000
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-writeback-") as tmp:
        workdir = Path(tmp)
        if not args.skip_throughput:
            print(
                f"throughput: {args.results} results, {args.latency_ms:g} ms latency, allowed {args.rate:g}/s, "
                f"{args.integrations} integrations, {args.concurrency} threads ...",
                flush=True,
            )
            result = throughput(args, workdir)
            print(json.dumps(result, indent=2))
            print(
                f"achieved {result['achieved_rate_per_s']}/s of {args.rate:g}/s allowed: "
                f"ratio {result['achieved_over_allowed']} (target >= 0.95)"
            )
            floor, floor_async = result["floor_loop"], result["floor_loop_async"]
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(
                f"{'':34}{'rate/s':>8}{'/ allowed':>11}{'CPU ms/PUT':>12}{'errors':>8}\n"
                f"{'pipeline (send_with ' + result['send_with'] + ')':34}{result['achieved_rate_per_s']:>8}"
                f"{result['achieved_over_allowed']:>11}{result['pipeline_cpu_ms_per_result']:>12}"
                f"{result['dead'] + result['retry']:>8}\n"
                f"{'floor: httpx, ' + str(args.concurrency) + ' threads':34}{floor['rate_per_s']:>8}"
                f"{round(floor['rate_per_s'] / args.rate, 3):>11}{floor['cpu_ms_per_request']:>12}"
                f"{floor['errors']:>8}\n"
                f"{'floor: aiohttp, one event loop':34}{floor_async['rate_per_s']:>8}"
                f"{round(floor_async['rate_per_s'] / args.rate, 3):>11}{floor_async['cpu_ms_per_request']:>12}"
                f"{floor_async['errors']:>8}"
            )
            print(
                f"pipeline / allowed {result['achieved_over_allowed']} (target >= 0.95); pipeline / httpx-threads "
                f"floor {result['pipeline_over_floor_loop']}, pipeline / aiohttp floor "
                f"{result['pipeline_over_floor_loop_async']} (target >= 1.0); pipeline CPU "
                f"{result['pipeline_cpu_ms_per_result']} ms per result (target <= 1.2); load average {load} on "
                f"{os.cpu_count()} CPUs (at the start of the timed send: {result['load_at_send']})"
            )
            print(
                f"one-PUT-at-a-time loop: {result['sequential_rate_per_s']}/s, measured on "
                f"{args.sequential_sample} results and extrapolated to {args.results} "
                f"({result['sequential_seconds_for_all_extrapolated']} s vs {result['send_seconds']} s): "
                f"speed-up {result['speedup']}x (target >= 20x)"
            )
        if not args.skip_memory:
            print(
                f"memory: read + map + enqueue, {args.memory_rows} vs {args.memory_baseline_rows} rows ...",
                flush=True,
            )
            result = memory(args, workdir)
            print(json.dumps(result, indent=2))
            print(
                f"peak RSS {result['peak_rss_mb']} MB for {args.memory_rows} rows vs "
                f"{result['peak_rss_mb_baseline']} MB for {args.memory_baseline_rows}: "
                f"ratio {result['peak_ratio']} (target: nearly 1)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
