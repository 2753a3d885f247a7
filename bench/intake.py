"""One order-intake cycle (poll, then dispatch) over many integrations against the sandbox at 100 ms latency.

Default size: 1,000 integrations x 10 new orders, Kombo latency 100 ms, invitations through the platform
stand-in. Prints the cycle time against the 5-minute poll interval (target <= 60 s) and against a
one-integration-at-a-time baseline (the same code with poll and send concurrency 1), measured in the same run
on a sample of integrations and extrapolated linearly (running it over all 1,000 would take minutes).

    .venv/bin/python bench/intake.py                      # the full size
    .venv/bin/python bench/intake.py --integrations 50    # a quick run
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from kombo_sync.intake import dispatch_invitations, poll_orders  # noqa: E402
from kombo_sync.intake.window import KIND_INTERVAL, PollWindow  # noqa: E402
from kombo_sync.invites import Inviters  # noqa: E402
from kombo_sync.invites.platform import PlatformInviter  # noqa: E402
from kombo_sync.kombo.client import KomboClient  # noqa: E402
from kombo_sync.settings import PipelineSettings  # noqa: E402
from kombo_sync.state.integrations import IntegrationRepository  # noqa: E402
from kombo_sync.state.store import StateStore  # noqa: E402
from sandbox.testing import PlatformAdmin, SandboxAdmin  # noqa: E402

POLL_INTERVAL_S = 300.0
TARGET_S = 60.0
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
            api_url=f"{kombo_url}/v1", api_key=SANDBOX_KEY, admin=SandboxAdmin(kombo_url)
        )
        platform = SimpleNamespace(url=platform_url, api_key=PLATFORM_KEY, admin=PlatformAdmin(platform_url))
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


def cycle(store: StateStore, sandbox: Any, platform: Any, settings: PipelineSettings) -> dict[str, float]:
    client = KomboClient(sandbox.api_url, sandbox.api_key, timeout=30)
    inviters = Inviters(
        settings, prebuilt={"platform": PlatformInviter(platform.url, platform.api_key, timeout=30)}
    )
    now = datetime.now(UTC)
    window = PollWindow(created_after=now - timedelta(hours=1), until=now, kind=KIND_INTERVAL)
    started = time.perf_counter()
    polled = poll_orders(store, client, settings, window)
    poll_s = time.perf_counter() - started
    dispatched = dispatch_invitations(store, client, inviters, settings, owner="bench")
    total_s = time.perf_counter() - started
    client.close()
    if polled["integrations_failed"]:
        raise SystemExit(f"poll failed for {len(polled['integrations_failed'])} integrations")
    return {
        "poll_s": poll_s,
        "dispatch_s": total_s - poll_s,
        "total_s": total_s,
        "orders": polled["orders_new"],
        "invited": dispatched["invited"],
    }


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
        "--state-url", default=None, help="state store URL (default: a temporary SQLite file)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    with servers(tmp, args.latency_ms, args.platform_latency_ms) as (sandbox, platform):
        store = StateStore(args.state_url or f"sqlite:///{tmp / 'state.db'}")
        store.migrate()
        sample = min(args.baseline_integrations, args.integrations)
        concurrent = PipelineSettings.model_validate(
            {"intake": {"poll_concurrency": args.poll_concurrency, "send_concurrency": args.send_concurrency}}
        )
        sequential = PipelineSettings.model_validate(
            {"intake": {"poll_concurrency": 1, "send_concurrency": 1}}
        )
        # The baseline first, on the same store, then its integrations are switched off for the main cycle.
        print(
            f"baseline: {sample} integrations x {args.orders_per_integration} orders, one at a time ...",
            flush=True,
        )
        baseline_ids = make_integrations(sandbox, store, sample, args.orders_per_integration, "baseline")
        base = cycle(store, sandbox, platform, sequential)
        registry = IntegrationRepository(store)
        for integration_id in baseline_ids:
            registry.set_enabled(integration_id, False)
        print(
            f"setting up {args.integrations} integrations x {args.orders_per_integration} orders ...",
            flush=True,
        )
        make_integrations(sandbox, store, args.integrations, args.orders_per_integration, "bench")
        result = cycle(store, sandbox, platform, concurrent)

    per_integration = base["total_s"] / sample
    baseline_s = per_integration * args.integrations
    orders = args.integrations * args.orders_per_integration
    assert result["orders"] == orders and result["invited"] == orders, result
    print()
    print(
        f"intake cycle: {args.integrations} integrations x {args.orders_per_integration} new orders = {orders} orders, "
        f"Kombo latency {args.latency_ms:g} ms, state store {store.dialect}"
    )
    print(
        f"  concurrent (poll {args.poll_concurrency}, send {args.send_concurrency}): poll {result['poll_s']:.1f} s "
        f"+ dispatch {result['dispatch_s']:.1f} s = {result['total_s']:.1f} s"
    )
    print(
        f"  vs the 5-minute poll interval: {result['total_s'] / POLL_INTERVAL_S:.1%} of it "
        f"(target <= {TARGET_S:.0f} s: {'met' if result['total_s'] <= TARGET_S else 'NOT met'})"
    )
    print(
        f"  one integration at a time: {per_integration:.3f} s per integration (measured on {sample}) "
        f"-> {baseline_s:.0f} s for {args.integrations}"
    )
    print(f"  speed-up over one-at-a-time: {baseline_s / result['total_s']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
