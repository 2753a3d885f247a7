"""One order-intake cycle (poll, then dispatch) over many integrations against the sandbox at 100 ms latency.

Default size: 1,000 integrations x 10 new orders, Kombo latency 100 ms, invitations through the platform
stand-in, on SQLite and then on PostgreSQL (a fresh database each). Prints, per state store, the cycle time and
the dispatch time against the 30-second target (as a ratio), the dispatch's cost per order split into claim,
re-check with Kombo, duplicate check, send and commit, and the machine's load average beside every figure.
The baseline, one integration at a time (the same code with poll and send concurrency 1), is measured in the
same run on a sample of integrations of its own and extrapolated linearly (over all 1,000 it would take
minutes); nothing is shared between it and the timed cycle but the servers and the store's connection pool.

    .venv/bin/python bench/intake.py                                          # the full size, both stores
    .venv/bin/python bench/intake.py --integrations 100 --baseline-integrations 5 --databases sqlite
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from kombo_sync.connections import normalize_url  # noqa: E402
from kombo_sync.intake import dispatch_invitations, poll_orders  # noqa: E402
from kombo_sync.intake.dispatch import TIMED_STEPS  # noqa: E402
from kombo_sync.intake.window import KIND_INTERVAL, PollWindow  # noqa: E402
from kombo_sync.invites import Inviters  # noqa: E402
from kombo_sync.invites.platform import PlatformInviter  # noqa: E402
from kombo_sync.kombo.client import KomboClient  # noqa: E402
from kombo_sync.settings import PipelineSettings  # noqa: E402
from kombo_sync.state.integrations import IntegrationRepository  # noqa: E402
from kombo_sync.state.store import StateStore  # noqa: E402
from sandbox.testing import PlatformAdmin, SandboxAdmin  # noqa: E402
from tests.support.scratch_db import scratch_store  # noqa: E402

POLL_INTERVAL_S = 300.0
TARGET_S = 30.0
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SANDBOX_KEY = "bench-key"
PLATFORM_KEY = "bench-platform"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


@contextmanager
def servers(tmp: Path, latency_ms: float, platform_latency_ms: float) -> Iterator[tuple[Any, Any]]:
    """The Kombo sandbox and the platform stand-in in their own processes, as remote services would be: the
    benchmark process then spends its CPU on the intake only."""
    kombo_port, platform_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)])}
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "cwd": ROOT,
        "env": env,
        "start_new_session": True,
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--port", str(kombo_port), "--api-key", SANDBOX_KEY,
             "--latency-ms", str(latency_ms), "--log-level", "WARNING"], **quiet,  # type: ignore[arg-type]
        ),
        subprocess.Popen(
            [sys.executable, "-m", "sandbox.platform", "--port", str(platform_port), "--api-key", PLATFORM_KEY,
             "--latency-ms", str(platform_latency_ms), "--warehouse-url", f"sqlite:///{tmp / 'warehouse.db'}",
             "--log-level", "WARNING"], **quiet,  # type: ignore[arg-type]
        ),
    ]  # fmt: skip
    try:
        kombo_url, platform_url = f"http://127.0.0.1:{kombo_port}", f"http://127.0.0.1:{platform_port}"
        _wait_for(f"{kombo_url}/_sandbox/health")
        _wait_for(f"{platform_url}/_platform/health")
        sandbox = SimpleNamespace(
            api_url=f"{kombo_url}/v1", api_key=SANDBOX_KEY, admin=SandboxAdmin(kombo_url), pid=children[0].pid
        )
        platform = SimpleNamespace(
            url=platform_url, api_key=PLATFORM_KEY, admin=PlatformAdmin(platform_url), pid=children[1].pid
        )
        yield sandbox, platform
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)


def make_integrations(
    sandbox: Any, store: StateStore, count: int, orders_each: int, prefix: str
) -> list[str]:
    registry = IntegrationRepository(store)
    ids = []
    for n in range(count):
        created = sandbox.admin.create_integration(
            "workday", organization_name=f"{prefix} {n}", origin_id=f"{prefix}-{n}"
        )
        integration_id = created.get("integration", created)["id"]
        registry.upsert(integration_id, source="admin", tool="workday", customer_key=f"{prefix}-{n}")
        ids.append(integration_id)
    for start in range(0, len(ids), 200):  # round-robin: `orders_each` new orders per integration
        chunk = ids[start : start + 200]
        sandbox.admin.bulk_create_orders(chunk, len(chunk) * orders_each, return_ids=False)
    return ids


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of another one from /proc (0 where unreadable)."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cycle(store: StateStore, sandbox: Any, platform: Any, settings: PipelineSettings) -> dict[str, Any]:
    client = KomboClient(sandbox.api_url, sandbox.api_key, timeout=30)
    inviters = Inviters(
        settings, prebuilt={"platform": PlatformInviter(platform.url, platform.api_key, timeout=30)}
    )
    now = datetime.now(UTC)
    window = PollWindow(created_after=now - timedelta(hours=1), until=now, kind=KIND_INTERVAL)
    started = time.perf_counter()
    polled = poll_orders(store, client, settings, window)
    poll_s = time.perf_counter() - started
    # CPU of the intake and of the two servers during the dispatch: less at the mercy of the machine's load
    # than wall time, as all three share the same cores.
    cpu_before = [cpu_seconds(), cpu_seconds(sandbox.pid), cpu_seconds(platform.pid)]
    dispatched = dispatch_invitations(store, client, inviters, settings, owner="bench")
    total_s = time.perf_counter() - started
    cpu = [after - before for after, before in zip(
        [cpu_seconds(), cpu_seconds(sandbox.pid), cpu_seconds(platform.pid)], cpu_before, strict=True
    )]  # fmt: skip
    client.close()
    if polled["integrations_failed"]:
        raise SystemExit(f"poll failed for {len(polled['integrations_failed'])} integrations")
    return {
        "poll_s": poll_s,
        "dispatch_s": total_s - poll_s,
        "total_s": total_s,
        "orders": polled["orders_new"],
        "invited": dispatched["invited"],
        "step_seconds": dispatched["step_seconds"],
        "commit_transactions": dispatched["commit_transactions"],
        "dispatch_cpu_s": {"intake": cpu[0], "kombo_sandbox": cpu[1], "platform_standin": cpu[2]},
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def make_store(
    tmp: Path, database: str, state_url: str | None, admin_url: str
) -> tuple[StateStore, Callable[[], None]]:
    """An empty, migrated state store (`--state-url`, or a new SQLite file or PostgreSQL database) and a function
    that removes it."""
    if state_url:
        store = StateStore(state_url)
        store.migrate()
        return store, store.dispose
    return scratch_store(tmp, admin_url if database != "sqlite" else None, "bench_intake")


STEP_LABELS = {
    "claim": "claim",
    "recheck_kombo": "re-check with Kombo",
    "duplicate_check": "duplicate check",
    "send": "send",
    "commit": "commit",
}


def measure(args: argparse.Namespace, database: str, tmp: Path) -> dict[str, Any]:
    """Baseline, then the timed cycle, on a fresh store and fresh servers; prints the figures."""
    with servers(tmp, args.latency_ms, args.platform_latency_ms) as (sandbox, platform):
        store, remove = make_store(tmp, database, args.state_url, args.postgres_admin_url)
        try:
            sample = min(args.baseline_integrations, args.integrations)
            concurrent = PipelineSettings.model_validate(
                {
                    "intake": {
                        "poll_concurrency": args.poll_concurrency,
                        "send_concurrency": args.send_concurrency,
                    }
                }
            )
            sequential = PipelineSettings.model_validate(
                {"intake": {"poll_concurrency": 1, "send_concurrency": 1}}
            )
            # The baseline first, on integrations of its own, then they are switched off for the timed cycle.
            print(
                f"[{store.dialect}] baseline: {sample} integrations x {args.orders_per_integration} orders, "
                f"one at a time ({load()}) ...",
                flush=True,
            )
            baseline_ids = make_integrations(sandbox, store, sample, args.orders_per_integration, "baseline")
            base = cycle(store, sandbox, platform, sequential)
            base_load = load()
            registry = IntegrationRepository(store)
            for integration_id in baseline_ids:
                registry.set_enabled(integration_id, False)
            print(
                f"[{store.dialect}] setting up {args.integrations} integrations x {args.orders_per_integration} "
                "orders ...",
                flush=True,
            )
            make_integrations(sandbox, store, args.integrations, args.orders_per_integration, "bench")
            load_before = load()
            result = cycle(store, sandbox, platform, concurrent)
            load_after = load()
        finally:
            remove()

    orders = args.integrations * args.orders_per_integration
    assert result["orders"] == orders and result["invited"] == orders, result
    per_integration = base["total_s"] / sample
    baseline_s = per_integration * args.integrations
    total, dispatch = result["total_s"], result["dispatch_s"]
    print()
    print(
        f"intake cycle on {store.dialect}: {args.integrations} integrations x {args.orders_per_integration} new "
        f"orders = {orders} orders, Kombo latency {args.latency_ms:g} ms, platform latency "
        f"{args.platform_latency_ms:g} ms"
    )
    print(f"  {load_before} before the cycle, {load_after} after it")
    print(
        f"  concurrent (poll {args.poll_concurrency}, send {args.send_concurrency}): poll {result['poll_s']:.1f} s "
        f"+ dispatch {dispatch:.1f} s = cycle {total:.1f} s"
    )
    print(
        f"  vs the {TARGET_S:.0f} s target: cycle {total / TARGET_S:.2f}x, dispatch {dispatch / TARGET_S:.2f}x "
        f"({'met' if total <= TARGET_S else 'NOT met'})"
    )
    steps = result["step_seconds"]
    split = ", ".join(f"{STEP_LABELS[step]} {steps[step] * 1000 / orders:.2f}" for step in TIMED_STEPS)
    print(f"  dispatch per order: {dispatch * 1000 / orders:.2f} ms of wall time")
    print(f"  time per order summed over threads (ms; they overlap): {split}")
    cpu = result["dispatch_cpu_s"]
    print(
        "  dispatch CPU per order (ms): "
        + ", ".join(
            f"{name.replace('_', ' ')} {seconds * 1000 / orders:.2f}" for name, seconds in cpu.items()
        )
    )
    print(
        f"  commits: {result['commit_transactions']} transactions for {orders} orders "
        f"({orders / max(result['commit_transactions'], 1):.1f} orders each)"
    )
    print(
        f"  one integration at a time: {per_integration:.3f} s per integration (measured on {sample}, "
        f"{base_load}) -> {baseline_s:.0f} s for {args.integrations}; speed-up {baseline_s / total:.1f}x"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=1000)
    parser.add_argument("--orders-per-integration", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=100.0, help="Kombo sandbox latency per request")
    parser.add_argument("--platform-latency-ms", type=float, default=0.0, help="platform stand-in latency")
    parser.add_argument("--baseline-integrations", type=int, default=30, help="sample size of the baseline")
    parser.add_argument("--poll-concurrency", type=int, default=32)
    parser.add_argument("--send-concurrency", type=int, default=16)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated state stores: sqlite, postgresql"
    )
    parser.add_argument(
        "--postgres-admin-url", default=PG_ADMIN_URL, help="PostgreSQL server to create the bench database on"
    )
    parser.add_argument(
        "--state-url", default=None, help="one state store URL to use instead (its database must be empty)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = set(databases) - {"sqlite", "postgresql"}
    if unknown or not databases:
        parser.error(f"--databases: sqlite and/or postgresql, not {sorted(unknown) or 'nothing'}")
    if args.state_url:
        databases = [make_url(normalize_url(args.state_url)).get_backend_name()]

    tmp = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    met = True
    for database in databases:
        result = measure(args, database, tmp)
        met = met and result["total_s"] <= TARGET_S
        print()
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
