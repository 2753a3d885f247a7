"""The webhook's CPU per accepted order, in-process: no HTTP, no other client, one thread.

`bench/webhook.py --in-process` calls this. The handler is wired as in production (`app.default_deps()`: the
secret from the environment, the state store from `AIRFLOW_CONN_KOMBO_STATE`, settings from the pipeline file),
an integration is registered, then N signed `assessment:order-received` events (each a new order and a new
candidate) go through `handle_webhook` one after the other, and `time.process_time()` is read around each
call. The baseline, measured in the same run, is the same number of deliveries answered 401 (signature
check only). `--asgi` goes through the FastAPI app instead (Starlette, the worker thread, the JSON answer),
without a socket. `--profile` runs the orders under cProfile and prints the top entries by own and by
cumulative time.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

SignedRequest = tuple[bytes, dict[str, str]]


def _orders(count: int, integration: str, secret: str) -> list[SignedRequest]:
    from tests.support.webhooks import order_event, signed

    run = uuid.uuid4().hex[:8]
    return [
        signed(order_event(integration_id=integration, email=f"candidate.{run}.{index}@example.com"), secret)
        for index in range(count)
    ]


def _forged(count: int, integration: str) -> list[SignedRequest]:
    from kombo_sync.kombo.signatures import SIGNATURE_HEADER, sign
    from tests.support.webhooks import encode, order_event

    requests = []
    for _ in range(count):
        body = encode(order_event(integration_id=integration))
        requests.append((body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, "forged")}))
    return requests


def _asgi_caller(app: Any) -> Callable[[bytes, Mapping[str, str]], int]:
    """Call the ASGI app directly, no socket, on an event loop that keeps running between requests (as under
    uvicorn: the worker threads it hands the handler to stay alive)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="bench-asgi-loop", daemon=True).start()

    async def call(body: bytes, headers: Mapping[str, str]) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/webhooks",
            "raw_path": b"/webhooks",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await app(scope, receive, send)
        return status

    return lambda body, headers: asyncio.run_coroutine_threadsafe(call(body, headers), loop).result()


def _handler_caller(deps: Any) -> Callable[[bytes, Mapping[str, str]], int]:
    from kombo_sync.webhooks.handlers import handle_webhook

    return lambda body, headers: handle_webhook(body, headers, deps).status_code


def _time(call: Callable[[bytes, Mapping[str, str]], int], requests: list[SignedRequest], expected: int):
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    wrong = 0
    for body, headers in requests:
        cpu, wall = time.process_time(), time.perf_counter()
        status = call(body, headers)
        cpu_ms.append((time.process_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
        wrong += status != expected
    return cpu_ms, wall_ms, wrong


def _database_cpu_seconds(state: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL server's processes on this machine (None for SQLite, or when
    /proc shows none: a server elsewhere)."""
    if state != "postgres" or not os.path.isdir("/proc"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total, seen = 0.0, False
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name.startswith("postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            seen = True
    return total if seen else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _line(name: str, cpu_ms: list[float], wall_ms: list[float], wrong: int) -> str:
    # process_time() ticks in whole clock ticks on some kernels: the mean over N calls is exact, a single
    # call's value is not, hence mean first.
    return (
        f"{name:<24} n {len(cpu_ms):>5}  CPU mean {statistics.fmean(cpu_ms):6.3f} ms  "
        f"wall p50 {_pct(wall_ms, 50):6.2f} ms  p99 {_pct(wall_ms, 99):6.2f} ms  wrong status {wrong}"
    )


def measure(
    state_conn: str, *, count: int, asgi: bool, profile: bool, top: int = 25, state: str = "sqlite"
) -> float:
    """Print the in-process figures; returns the mean CPU ms per accepted order."""
    secret = "bench-webhook-cpu-secret"
    integration = "greenhouse:bench-cpu"
    os.environ["AIRFLOW_CONN_KOMBO_STATE"] = state_conn
    os.environ["KOMBO_WEBHOOK_SECRET"] = secret
    import logging
    import tempfile

    # Logged as the api-server logs: INFO lines, formatted and written (to a scratch file), so their cost counts.
    log_file = tempfile.NamedTemporaryFile(prefix="kombo-webhook-cpu-", suffix=".log", delete=False)
    handler = logging.FileHandler(log_file.name)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_log = logging.getLogger("kombo_sync")
    package_log.setLevel(logging.INFO)
    package_log.addHandler(handler)
    package_log.propagate = False
    from kombo_sync.runtime import state_store
    from kombo_sync.state.integrations import IntegrationRepository
    from kombo_sync.webhooks.app import create_app, default_deps

    store = state_store()
    IntegrationRepository(store).upsert(integration, source="admin", category="ASSESSMENT")
    deps = default_deps()
    if asgi:
        call = _asgi_caller(create_app(lambda: deps))
        path = "ASGI app (no socket)"
    else:
        call = _handler_caller(deps)
        path = "handle_webhook"
    # Warm-up: imports, the pool's first connections, the settings and secret caches.
    _time(call, _orders(50, integration, secret), 200)
    baseline = _time(call, _forged(count, integration), 401)
    orders = _orders(count, integration, secret)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
    database_before = _database_cpu_seconds(state)
    accepted = _time(call, orders, 200)
    database_after = _database_cpu_seconds(state)
    if profile:
        profiler.disable()
    wakeups = getattr(deps, "wakeups", None)
    batcher = wakeups() if callable(wakeups) else None
    if batcher is not None:
        # Before the database goes away; the writes the batcher made are part of the figures above.
        batcher.flush()
    store.dispose()
    package_log.removeHandler(handler)
    handler.close()
    os.unlink(log_file.name)
    load_avg = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nin-process CPU per request through {path}, state store {state} "
        f"(load average {load_avg} on {os.cpu_count()} CPUs)"
    )
    print(_line("baseline (401, no DB)", *baseline))
    print(_line("order accepted (200)", *accepted))
    if batcher is not None:
        print(f"wake-up writes: {batcher.writes} for {count} orders (window {batcher.window * 1000:g} ms)")
    if database_before is not None and database_after is not None:
        # Every PostgreSQL process on this machine (the backends serving this one and the server's own), so
        # run it on a quiet machine; the other side of each round trip, which process_time() does not see.
        per_order = (database_after - database_before) / count * 1000
        print(f"PostgreSQL's own CPU per accepted order: {per_order:.3f} ms (its processes on this machine)")
    mean = statistics.fmean(accepted[0])
    print(f"accepted order: {mean:.3f} ms CPU (target <= 2 ms) -> {'OK' if mean <= 2.0 else 'MISSED'}")
    if profile:
        for sort in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
            print(f"\ncProfile over {count} accepted orders, top {top} by {sort}:")
            print(out.getvalue().split("\n", 6)[-1].rstrip())
    return mean
