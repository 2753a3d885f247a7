"""Webhook benchmark: answer times under load, and webhook-to-invitation through the real scheduler.

Part 1 (default): starts `airflow api-server` with the plugin on loopback (or uses `--url`), registers an
integration, then sends signed `assessment:order-received` webhooks at a fixed rate (open loop: request i is sent
at start + i/rate whatever happened to the others) and prints p50/p99 answer times and the error count. Each
answer time runs from the moment its request was due, not from when a client slot freed up, so a server that
falls behind shows it in the tail (no coordinated omission); the server's own answer time is printed beside it.
Targets: p99 <= 50 ms at 200 requests/s, 0 errors; at 400 requests/s 0 errors. The baseline, measured in the same run at the same rate, is
the same endpoint answering 401 (bad signature: HTTP, the plugin and the signature check, no database), so the
ratio shows what recording an order costs on top of serving a request at all.

Part 2 (`--e2e`): api-server, scheduler, dag-processor and triggerer, the Kombo sandbox and the platform
stand-in; orders are created in the sandbox (which sends the webhooks) a few seconds apart, and the time from
the webhook's answer to the order's invitation being recorded is measured. Target p95 <= 60 s; the baseline is
the intake's 5-minute poll, which is what an order would wait for without the webhook.

Part 1 with `--with-pipeline`: the same load while a scheduler, dag-processor and triggerer run the intake on
the same machine (the load's orders wake it, and it invites them: they exist in the sandbox, created two days
back so that only the webhook brings them in); `--workers N` api-server workers. The scheduler, dag-processor
and triggerer run at the api-server's priority (`--pipeline-nice N` starts them lower). The sandbox and the
platform stand-in run in a process of their own, at nice 10 (`--stand-ins-nice`): in production they are other
companies' servers. After the load the bench splits the load's answer times by whether an intake dispatch was
running when each request was due (from the `runs` table) and prints the worst answer of each second, then waits
for the intake to invite every order of it and prints how long that took (`--catch-up-timeout`).
`--in-process`: CPU per accepted order without HTTP (bench/webhook_cpu.py).

    python bench/webhook.py                       # 200 req/s for 30 s
    python bench/webhook.py --rate 50 --duration 5 --quick-baseline
    python bench/webhook.py --with-pipeline --workers 2 --rate 400 --duration 20 --state postgres
    python bench/webhook.py --in-process --count 2000 --profile
    python bench/webhook.py --e2e --e2e-orders 10 --skip-load

Over 400 lines on purpose: one benchmark, one command; the load generator, the pipeline it runs beside and the
end-to-end part share the servers they start and the report they print.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from kombo_sync.kombo.signatures import SIGNATURE_HEADER, sign  # noqa: E402
from tests.support.webhooks import LiveAirflow, encode, integration_event, order_event, signed  # noqa: E402

SECRET = "bench-webhook-secret"
INTEGRATION = "greenhouse:bench"
# The package of the sandbox's bulk orders (the load's orders with `--with-pipeline`).
SANDBOX_PACKAGE = "sandbox-package"
TARGET_P99_MS = 50.0
# The targets (issue 14): p99 <= 50 ms at 200 requests/s; at higher rates (400/s) no errors.
P99_TARGET_RATE = 200.0
TARGET_E2E_P95_S = 60.0
POLL_INTERVAL_S = 300.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class LoadResult:
    # From the moment each request was due (its place in the schedule), so time spent waiting for a free
    # client slot or behind a stalled loop counts: no coordinated omission.
    latencies_ms: list[float] = field(default_factory=list)
    # From the moment the request was written: the server's own answer time, for diagnosis only.
    service_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    late_ms_max: float = 0.0
    elapsed_s: float = 0.0
    # Each request's due time (wall clock, seconds) and its answer time from then (ms; None: no answer in time),
    # to set the answers against what ran on the machine meanwhile (`dispatch_overlap`).
    by_due: list[tuple[float, float | None]] = field(default_factory=list)

    def pct(self, q: float, values: list[float] | None = None) -> float:
        values = self.latencies_ms if values is None else values
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a few tens of microseconds per request, so the
    load generator does not eat the CPU the server under test needs (httpx costs about a millisecond)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.path = parsed.path or "/"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    def encode(self, body: bytes, headers: dict[str, str]) -> bytes:
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def post(self, raw_request: bytes) -> int:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened.append(writer)
        writer.write(raw_request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await reader.readexactly(length)
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status

    async def close(self) -> None:
        for writer in self.opened:
            writer.close()


async def drive(
    url: str,
    requests: list[tuple[bytes, dict[str, str], int]],
    rate: float,
    timeout: float,
    max_in_flight: int,
) -> LoadResult:
    """Send `requests` (body, headers, expected status) at `rate` per second; bounded by the list's length."""
    result = LoadResult()
    client = RawHttpClient(url)
    prepared = [(client.encode(body, headers), expected) for body, headers, expected in requests]
    gate = asyncio.Semaphore(max_in_flight)

    loop = asyncio.get_running_loop()

    wall_offset = time.time() - loop.time()

    async def one(raw_request: bytes, expected: int, due: float) -> None:
        async with gate:
            started = loop.time()
            try:
                # The timeout runs from the due time too: a request stuck behind a full gate counts against it.
                status = await asyncio.wait_for(client.post(raw_request), max(0.001, due + timeout - started))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
                result.by_due.append((due + wall_offset, None))
                return
            answered = loop.time()
            result.latencies_ms.append((answered - due) * 1000)
            result.by_due.append((due + wall_offset, (answered - due) * 1000))
            result.service_ms.append((answered - started) * 1000)
            if status != expected:
                result.errors[f"HTTP {status}"] += 1

    tasks = []
    start = loop.time()
    for index, (raw_request, expected) in enumerate(prepared):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            result.late_ms_max = max(result.late_ms_max, -delay * 1000)
        tasks.append(asyncio.create_task(one(raw_request, expected, due)))
        result.sent += 1
    await asyncio.gather(*tasks)
    result.elapsed_s = loop.time() - start
    await client.close()
    return result


def order_requests(
    count: int, secret: str, integration: str = INTEGRATION, sandbox_orders: list[str] | None = None
) -> list[tuple[bytes, dict[str, str], int]]:
    """`count` signed order events; with `sandbox_orders`, for those orders of the Kombo sandbox (taken from the
    front of the list), so that the intake finds them open and invites them."""
    run = uuid.uuid4().hex[:8]
    requests = []
    for index in range(count):
        extra = {}
        if sandbox_orders is not None:
            extra = {"order_id": sandbox_orders.pop(0), "package_id": SANDBOX_PACKAGE}
        event = order_event(integration_id=integration, email=f"candidate.{run}.{index}@example.com", **extra)
        body, headers = signed(event, secret)
        requests.append((body, headers, 200))
    return requests


def forged_requests(count: int) -> list[tuple[bytes, dict[str, str], int]]:
    requests = []
    for _ in range(count):
        body = encode(order_event(integration_id=INTEGRATION))
        requests.append(
            (body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, "not-the-secret")}, 401)
        )
    return requests


def report(name: str, result: LoadResult, rate: float) -> None:
    errors = sum(result.errors.values())
    achieved = result.sent / result.elapsed_s if result.elapsed_s else 0.0
    # Answered with the expected status (timeouts and wrong answers excluded), per second of the run.
    wrong = sum(n for name, n in result.errors.items() if name.startswith("HTTP"))
    served = (len(result.latencies_ms) - wrong) / result.elapsed_s if result.elapsed_s else 0.0
    print(
        f"{name:<22} sent {result.sent:>6} at {achieved:6.1f}/s (asked {rate:g}/s)  "
        f"p50 {result.pct(50):7.2f} ms  p99 {result.pct(99):7.2f} ms  max {max(result.latencies_ms or [0]):7.1f} ms "
        f"(from each request's due time; server answer p99 {result.pct(99, result.service_ms):.2f} ms)  "
        f"errors {errors}{' ' + dict(result.errors).__repr__() if errors else ''}  served {served:.1f}/s  "
        f"client lag max {result.late_ms_max:.0f} ms"
    )


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to load {host!r}: this benchmark only targets loopback")


def state_connection(kind: str, workdir: Path, pg_admin_url: str) -> tuple[str, str | None]:
    """(AIRFLOW_CONN_KOMBO_STATE value, PostgreSQL database to drop afterwards)."""
    if kind == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": str(workdir / "state.db")}), None
    import sqlalchemy as sa

    name = f"kombo_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(pg_admin_url)
    engine.dispose()
    conn_value = {
        "conn_type": "postgres",
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "schema": name,
    }
    if url.username:
        conn_value["login"] = url.username
    if url.password:
        conn_value["password"] = url.password
    return json.dumps(conn_value), name


def drop_database(pg_admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def settle(max_seconds: float) -> None:
    """Wait (up to `max_seconds`) for the machine's 1-minute load average to fall below its CPU count: the
    servers' start (the api-server's workers, the dag-processor's first parse, the scheduler's first loops) is
    not what is measured."""
    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + max_seconds
    while os.getloadavg()[0] >= cpus and time.monotonic() < deadline:
        time.sleep(2)
    print(f"load average {os.getloadavg()[0]:.1f} on {cpus} CPUs before the load", flush=True)


def run_load(
    args: argparse.Namespace, url: str, secret: str, pipeline: Pipeline | None = None, state_conn: str = ""
) -> bool:
    check_loopback(url)
    integration = INTEGRATION
    if pipeline is not None:
        # An integration the sandbox knows (its integration-created webhook registers it with us), so that the
        # intake polls it and works on the load's orders; the only one, so that every poll succeeds.
        pipeline.sandbox.set_webhook(url, secret=secret)
        created = pipeline.sandbox.admin.create_integration(tool="greenhouse")
        if created["webhook"]["status_code"] != 200:
            raise SystemExit(f"the sandbox could not register its integration: {created['webhook']}")
        integration = created["id"]
        # The load's orders exist in the sandbox (created two days ago: older than any poll's window, so only
        # the webhook brings them in), so the intake's check with Kombo finds them open and invites them.
        sandbox_orders: list[str] | None = pipeline.sandbox.admin.bulk_create_orders(
            integration,
            int(min(args.rate, 100.0) * 3) + int(args.rate * args.duration),
            package_id=SANDBOX_PACKAGE,
            created_at_start=datetime.now(UTC) - timedelta(days=2),
        )
    else:
        sandbox_orders = None
        with httpx.Client(timeout=120) as client:
            body, headers = signed(integration_event("integration-created", INTEGRATION), secret)
            answer = client.post(url, content=body, headers=headers)
            if answer.status_code != 200:
                raise SystemExit(
                    f"could not register the bench integration: {answer.status_code} {answer.text}"
                )
    # Warm-up, a few seconds at a modest rate with requests overlapping: every worker imports the handlers and
    # opens the state store's connections its handler threads use at once (a running server has them open).
    warm_rate = min(args.rate, 100.0)
    warm_up = order_requests(int(warm_rate * 3), secret, integration, sandbox_orders)
    asyncio.run(drive(url, warm_up, warm_rate, args.timeout, args.max_in_flight))
    settle(args.settle_seconds)
    load_before = os.getloadavg()[0]
    count = int(args.rate * args.duration)
    baseline_count = int(args.rate * (min(args.duration, 5) if args.quick_baseline else args.duration))
    baseline = asyncio.run(
        drive(url, forged_requests(baseline_count), args.rate, args.timeout, args.max_in_flight)
    )
    load = asyncio.run(
        drive(
            url,
            order_requests(count, secret, integration, sandbox_orders),
            args.rate,
            args.timeout,
            args.max_in_flight,
        )
    )
    load_ended = time.monotonic()
    load_avg = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    beside = (
        "scheduler, dag-processor, triggerer and the intake running beside it"
        + (f" at nice {args.pipeline_nice}" if args.pipeline_nice else " at the api-server's priority")
        + f", the Kombo sandbox and platform stand-in in their own process at nice {pipeline.stand_ins.niceness}"
        if pipeline is not None
        else "api-server alone"
    )
    print(
        f"\nanswer times at {args.rate:g} requests/s for {args.duration:g} s (state store: {args.state}, "
        f"{args.workers} api-server worker(s), {beside}; machine load average {load_avg} on {os.cpu_count()} "
        f"CPUs, 1-min {load_before:.1f} before the load)"
    )
    report("baseline (401, no DB)", baseline, args.rate)
    report("orders accepted (200)", load, args.rate)
    p99, errors = load.pct(99), sum(load.errors.values())
    met = errors == 0 and (args.rate > P99_TARGET_RATE or p99 <= TARGET_P99_MS)
    if args.rate > P99_TARGET_RATE:
        # Above 200/s the target is that every order is answered in time (no errors); the p99 target is 200/s's.
        target = f"target at {args.rate:g}/s: 0 errors; p99 <= {TARGET_P99_MS:.0f} ms is the target at {P99_TARGET_RATE:g}/s"
    else:
        target = f"target <= {TARGET_P99_MS:.0f} ms and 0 errors"
    print(
        f"p99 {p99:.2f} ms: ratio to the 200/s target {p99 / TARGET_P99_MS:.2f}, ratio to baseline p99 "
        f"{p99 / max(baseline.pct(99), 1e-6):.1f}x; errors {errors} ({target}) -> {'OK' if met else 'MISSED'}"
    )
    if pipeline is not None:
        try:
            runs: object = dict(pipeline.intake_runs())
        except Exception as exc:  # the CLI is slow or chatty on a loaded machine: the figures above stand
            runs = f"not listed ({type(exc).__name__})"
        from kombo_sync.connections import sqlalchemy_url
        from kombo_sync.state.orders import OrderRepository
        from kombo_sync.state.store import StateStore

        store = StateStore(sqlalchemy_url(_ConnView(json.loads(state_conn))))
        try:
            orders = OrderRepository(store)
            counts = _orders_by_state(orders, integration)
            print(f"intake runs so far: {runs}; the load's orders by state: {counts}")
            dispatch_overlap(load, _dispatch_spans(store))
            _wait_for_catch_up(orders, integration, counts, load_ended, args.catch_up_timeout)
        finally:
            store.dispose()
    return met


def _dispatch_spans(store: Any) -> list[tuple[float, float | None]]:
    """(start, end or None while running) of the intake's dispatch tasks, wall clock seconds, from the `runs`
    table the tasks record themselves in."""
    from kombo_sync.intake.tasks import DISPATCH_JOB
    from kombo_sync.state.audit import RunAudit

    # A bench's load sees a few dozen dispatches at most.
    return [
        (run.started_at.timestamp(), run.finished_at and run.finished_at.timestamp())
        for run in RunAudit(store).recent(DISPATCH_JOB, limit=10_000)
    ]


def dispatch_overlap(load: LoadResult, spans: list[tuple[float, float | None]]) -> None:
    """Print the load's answer times split by whether an intake dispatch was running when each request was due,
    and the worst answer of each second of the load (`*`: a dispatch ran during that second): where the tail
    comes from when the api-server shares the machine with the batch side."""
    if not load.by_due:
        return

    def running(moment: float) -> bool:
        return any(start <= moment and (end is None or moment < end) for start, end in spans)

    split: dict[bool, list[float | None]] = {True: [], False: []}
    for due, latency in load.by_due:
        split[running(due)].append(latency)
    for during, label in ((True, "while an intake dispatch ran"), (False, "while none ran")):
        answers = split[during]
        answered = [latency for latency in answers if latency is not None]
        if answers:
            print(
                f"  answers due {label:<29} {len(answers):>6}: p99 {load.pct(99, answered):8.1f} ms, "
                f"{len(answers) - len(answered)} not answered in time"
            )
    first = min(due for due, _ in load.by_due)
    seconds: dict[int, list[float]] = {}
    for due, latency in load.by_due:
        # An answer that never came counts as the timeout's length or more: shown as the largest of the second.
        seconds.setdefault(int(due - first), []).append(float("inf") if latency is None else latency)
    cells = []
    for second in sorted(seconds):
        worst = max(seconds[second])
        begins = first + second
        overlaps = any(start < begins + 1 and (end is None or end > begins) for start, end in spans)
        marker = "*" if overlaps else ""
        cells.append(f"{second}{marker}:{'timeout' if worst == float('inf') else f'{worst:.0f}'}")
    print("  worst answer (ms) by second of the load (*: a dispatch ran then): " + " ".join(cells))


def _orders_by_state(orders: Any, integration: str) -> dict[str, int]:
    return {state: n for state, n in orders.counts_by_state(integration).items() if n}


def _wait_for_catch_up(
    orders: Any, integration: str, counts: dict[str, int], load_ended: float, timeout: float
) -> None:
    """How long after the load the intake has invited (or otherwise closed) every one of the load's orders: what
    a burst costs the batch side. Polled every 2 s, so up to 2 s late."""
    waiting = counts.get("received", 0) + counts.get("inviting", 0)
    if not waiting or timeout <= 0:
        return
    print(f"waiting up to {timeout:g} s for the intake to catch up ({waiting} orders not yet invited) ...")
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        time.sleep(2)
        counts = _orders_by_state(orders, integration)
        waiting = counts.get("received", 0) + counts.get("inviting", 0)
    after = time.monotonic() - load_ended
    if waiting:
        print(f"the intake had not caught up {after:.0f} s after the load: {counts}")
    else:
        print(f"the intake caught up {after:.0f} s after the load ended: {counts}")


class _RemoteSandbox:
    """What the bench uses of `sandbox.testing.KomboSandbox`, for a sandbox running in another process."""

    def __init__(self, url: str, api_key: str) -> None:
        from sandbox.testing import SandboxAdmin

        self.url = url
        self.api_key = api_key
        self.admin = SandboxAdmin(url)

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"

    def set_webhook(self, url: str | None, secret: str | None = None) -> None:
        self.admin.set_webhook(url, secret)

    def stop(self) -> None:
        self.admin.close()


def _serve_stand_ins(warehouse_url: str, niceness: int, pipe: Any) -> None:
    """The child process of `StandIns`: both servers until the parent says stop (or goes away)."""
    from sandbox.kombo_app import KomboSandboxSettings
    from sandbox.platform_app import PlatformSettings
    from sandbox.testing import run_kombo_sandbox, run_platform_standin

    if niceness:
        os.nice(niceness)
    sandbox = run_kombo_sandbox(KomboSandboxSettings(api_key="bench-key", webhook_secret=SECRET))
    platform = run_platform_standin(
        settings=PlatformSettings(warehouse_url=warehouse_url, api_key="bench-platform")
    )
    pipe.send((sandbox.url, platform.url))
    try:
        pipe.recv()
    except EOFError:
        pass
    platform.stop()
    sandbox.stop()


class StandIns:
    """The Kombo sandbox and the platform stand-in in a process of their own. In production they are other
    companies' servers; in the bench process they shared its GIL with the load generator, whose sends then lagged
    up to 100 ms behind their due times while the intake called them. `niceness` > 0 also gives their CPU (which
    production does not spend on this machine) a lower priority than the servers measured."""

    def __init__(self, workdir: Path, *, niceness: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_serve_stand_ins,
            args=(f"sqlite:///{workdir / 'warehouse.db'}", niceness, child),
            name="bench-stand-ins",
            daemon=True,
        )
        self._process.start()
        child.close()
        if not self._pipe.poll(120):
            self._process.kill()
            raise SystemExit("the Kombo sandbox and the platform stand-in did not start within 120 s")
        sandbox_url, self.platform_url = self._pipe.recv()
        self.sandbox = _RemoteSandbox(sandbox_url, "bench-key")
        self.niceness = niceness

    def stop(self) -> None:
        self.sandbox.stop()
        try:
            self._pipe.send("stop")
        except OSError:
            pass
        self._process.join(15)
        if self._process.is_alive():
            self._process.kill()


class Pipeline:
    """The Kombo sandbox, the platform stand-in and Airflow's api-server, scheduler, dag-processor and triggerer
    (LocalExecutor) on this machine, the intake wired to them: for part 2, and for part 1's `--with-pipeline`."""

    def __init__(
        self,
        workdir: Path,
        state_conn: str,
        *,
        workers: int = 1,
        intake_schedule: str,
        stand_ins_nice: int = 0,
        pipeline_nice: int = 0,
    ) -> None:
        self.stand_ins = StandIns(workdir, niceness=stand_ins_nice)
        self.sandbox = self.stand_ins.sandbox
        self.live = LiveAirflow(
            workdir / "airflow-pipeline",
            components=("api-server", "scheduler", "dag-processor", "triggerer"),
            # Every component but the api-server, and the tasks they start, at --pipeline-nice.
            batch_nice=pipeline_nice,
            env={
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                "AIRFLOW__API__WORKERS": str(workers),
                "KOMBO_INTAKE_SCHEDULE": intake_schedule,
                "KOMBO_SYNC_HOME": str(workdir),
                "KOMBO_WEBHOOK_SECRET": SECRET,
                "AIRFLOW_CONN_KOMBO_STATE": state_conn,
                "AIRFLOW_CONN_KOMBO_DEFAULT": json.dumps(
                    {"conn_type": "http", "host": self.sandbox.api_url, "password": self.sandbox.api_key}
                ),
                "AIRFLOW_CONN_KOMBO_PLATFORM": json.dumps(
                    {"conn_type": "http", "host": self.stand_ins.platform_url, "password": "bench-platform"}
                ),
            },
        )

    def start(self) -> None:
        print("\nstarting api-server, scheduler, dag-processor and triggerer ...", flush=True)
        self.live.start(timeout=180)
        self.live.airflow("pools", "set", "kombo_api", "4", "Kombo API calls")
        deadline = time.monotonic() + 180
        while True:
            try:
                self.live.airflow("dags", "unpause", "kombo_order_intake")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)

    def intake_runs(self) -> Counter[str]:
        """The intake's DAG runs by state (asset-triggered by the webhook's wake-ups, or scheduled)."""
        listed = self.live.airflow("dags", "list-runs", "kombo_order_intake", "--output", "json").stdout
        # The CLI may print log lines (which hold brackets too) before the JSON list: the line that is the list.
        runs: list[dict[str, object]] = []
        for line in listed.splitlines():
            if line.startswith("[{") or line.strip() == "[]":
                runs = json.loads(line)
        return Counter(str(run.get("state")) for run in runs)

    def stop(self) -> None:
        self.live.stop()
        self.stand_ins.stop()


def run_e2e(args: argparse.Namespace, workdir: Path, state_conn: str) -> bool:
    from kombo_sync.connections import sqlalchemy_url
    from kombo_sync.state.orders import OrderRepository
    from kombo_sync.state.store import StateStore

    pipeline = Pipeline(
        workdir,
        state_conn,
        intake_schedule="*/5 * * * *",
        stand_ins_nice=args.stand_ins_nice,
        pipeline_nice=args.pipeline_nice,
    )
    sandbox, live = pipeline.sandbox, pipeline.live
    store = StateStore(sqlalchemy_url(_ConnView(json.loads(state_conn))))
    try:
        pipeline.start()
        sandbox.set_webhook(live.webhook_url, secret=SECRET)
        integration = sandbox.admin.create_integration(tool="greenhouse")
        if integration["webhook"]["status_code"] != 200:
            raise SystemExit(f"integration webhook failed: {integration['webhook']}")
        answered: dict[str, float] = {}
        for index in range(args.e2e_orders):
            order = sandbox.admin.create_order(integration["id"], "pkg-1")
            answered[order["id"]] = time.monotonic()
            if order["webhook"]["status_code"] != 200:
                print(f"order {index}: webhook answered {order['webhook']['status_code']}")
            time.sleep(args.e2e_interval)
        invited: dict[str, float] = {}
        deadline = time.monotonic() + args.e2e_timeout
        repo = OrderRepository(store)
        while len(invited) < len(answered) and time.monotonic() < deadline:
            for order_id in answered.keys() - invited.keys():
                record = repo.get(order_id)
                if record is not None and record.state == "invited":
                    invited[order_id] = time.monotonic()
            time.sleep(0.25)
        # Polled every 0.25 s: the figures are at most that much late.
        seconds = sorted(invited[o] - answered[o] for o in invited)
        missing = len(answered) - len(invited)
        print(f"\nwebhook -> invitation recorded, {len(answered)} orders {args.e2e_interval:g} s apart")
        if seconds:
            p95 = seconds[min(len(seconds) - 1, max(0, round(0.95 * len(seconds)) - 1))]
            print(
                f"p50 {statistics.median(seconds):.1f} s  p95 {p95:.1f} s  max {seconds[-1]:.1f} s  "
                f"not invited within {args.e2e_timeout:g} s: {missing}"
            )
            print(
                f"p95 ratio to target {p95 / TARGET_E2E_P95_S:.2f} (target <= {TARGET_E2E_P95_S:.0f} s), "
                f"ratio to the 5-minute poll {p95 / POLL_INTERVAL_S:.2f} -> "
                f"{'OK' if p95 <= TARGET_E2E_P95_S and missing == 0 else 'MISSED'}"
            )
            return p95 <= TARGET_E2E_P95_S and missing == 0
        print(f"no order was invited within {args.e2e_timeout:g} s; logs in {live.log_dir}")
        return False
    finally:
        pipeline.stop()
        store.dispose()


class _ConnView:
    """Just enough of an Airflow connection for `sqlalchemy_url`."""

    def __init__(self, fields: dict) -> None:
        self.conn_type = fields.get("conn_type")
        self.host = fields.get("host")
        self.port = fields.get("port")
        self.login = fields.get("login")
        self.password = fields.get("password")
        self.schema = fields.get("schema")
        self.extra_dejson: dict = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--quick-baseline", action="store_true", help="baseline for at most 5 s")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, s")
    parser.add_argument("--max-in-flight", type=int, default=256, help="client-side cap on open requests")
    parser.add_argument(
        "--url", help="an already running loopback endpoint (needs --secret); default: start one"
    )
    parser.add_argument("--secret", default=SECRET, help="webhook secret of --url")
    parser.add_argument(
        "--state", choices=["sqlite", "postgres"], default="sqlite", help="state store backend"
    )
    parser.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=1, help="api-server workers (default 1)")
    parser.add_argument(
        "--pipeline-nice",
        type=int,
        default=0,
        help="--with-pipeline/--e2e: start the scheduler, dag-processor, triggerer (and so their tasks) at this "
        "niceness (default 0: the api-server's priority, as every deployment of this project runs them; "
        "docs/webhook.md has what nice 10 did)",
    )
    parser.add_argument(
        "--stand-ins-nice",
        type=int,
        default=10,
        help="--with-pipeline/--e2e: the niceness of the process that runs the Kombo sandbox and the platform "
        "stand-in (default 10: in production they are other companies' servers, not CPU of this machine; "
        "0 = the same priority as the api-server)",
    )
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=600.0,
        help="--with-pipeline: after the load, wait up to this long for the intake to invite every order of it "
        "and print how long that took (default 600; 0 = do not wait)",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=120.0,
        help="wait up to this long for the load average to fall below the CPU count before the load (default 120)",
    )
    parser.add_argument("--skip-load", action="store_true", help="only part 2")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the servers' Airflow homes and logs for reading"
    )
    parser.add_argument(
        "--with-pipeline",
        action="store_true",
        help="part 1 with a scheduler, dag-processor, triggerer and the intake (woken by the load, and every "
        "minute) running on the same machine",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="CPU per accepted order, calling the handler in this process (no HTTP; see bench/webhook_cpu.py)",
    )
    parser.add_argument("--count", type=int, default=2000, help="--in-process: orders timed (default 2000)")
    parser.add_argument("--asgi", action="store_true", help="--in-process: through the FastAPI app")
    parser.add_argument("--profile", action="store_true", help="--in-process: cProfile's top entries")
    parser.add_argument("--e2e", action="store_true", help="also measure webhook -> invitation (part 2)")
    parser.add_argument("--e2e-orders", type=int, default=10, help="orders in part 2 (default 10)")
    parser.add_argument("--e2e-interval", type=float, default=3.0, help="seconds between part 2 orders")
    parser.add_argument("--e2e-timeout", type=float, default=180.0, help="give up on an order after this, s")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.duration * args.rate > 200_000:
        parser.error("rate and duration must be positive, and rate x duration at most 200000")
    if not 0 <= args.pipeline_nice <= 19:
        parser.error("--pipeline-nice takes 0-19")

    workdir = Path(tempfile.mkdtemp(prefix="kombo-webhook-bench-"))
    state_conn, pg_database = state_connection(args.state, workdir, args.pg_admin_url)
    ok = True
    try:
        if args.in_process and args.with_pipeline:
            parser.error("--with-pipeline is for the HTTP load, not --in-process")
        if args.in_process:
            from bench.webhook_cpu import measure

            mean = measure(
                state_conn, count=args.count, asgi=args.asgi, profile=args.profile, state=args.state
            )
            ok &= mean <= 2.0
        elif not args.skip_load:
            if args.url:
                ok &= run_load(args, args.url, args.secret)
            elif args.with_pipeline:
                pipeline = Pipeline(
                    workdir,
                    state_conn,
                    workers=args.workers,
                    intake_schedule="* * * * *",
                    stand_ins_nice=args.stand_ins_nice,
                    pipeline_nice=args.pipeline_nice,
                )
                try:
                    pipeline.start()
                    ok &= run_load(args, pipeline.live.webhook_url, SECRET, pipeline, state_conn)
                finally:
                    pipeline.stop()
            else:
                server = LiveAirflow(
                    workdir / "airflow",
                    env={
                        "KOMBO_WEBHOOK_SECRET": SECRET,
                        "AIRFLOW_CONN_KOMBO_STATE": state_conn,
                        "AIRFLOW__API__WORKERS": str(args.workers),
                        # The access log line per request is the api-server's own cost, not the webhook's.
                        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                    },
                )
                print(f"starting airflow api-server ({args.workers} worker(s)) ...", flush=True)
                with server:
                    ok &= run_load(args, server.webhook_url, SECRET)
        if args.e2e:
            ok &= run_e2e(args, workdir, state_conn)
    finally:
        if pg_database:
            drop_database(args.pg_admin_url, pg_database)
        if args.keep_workdir:
            print(f"kept {workdir} (the servers' Airflow homes and logs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # Like the other benchmarks: a missed target is reported above, not an exit status (`make bench` runs all).
    print(f"overall: {'all targets met' if ok else 'a target was missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
