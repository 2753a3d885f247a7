"""One Kombo rate budget per API key across processes (kombo_sync.kombo.budgets): two processes taking start
times from the same budget stay within its rate together, on Redis (127.0.0.1:6379) and on the state database
(SQLite and PostgreSQL); two processes with budgets of their own (`process`) do not."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator

import pytest

from kombo_sync.kombo.budgets import key_hash, shared_rate_budget
from kombo_sync.state.store import StateStore

RATE = 20.0  # per second, for the key
BURST = 2
PER_PROCESS = 30
API_KEY = "test-key-for-the-shared-budget"


def _take_start_times(
    environ: dict[str, str], state_url: str | None, ready: object, go: object, results: object
) -> None:
    """Child process: wait for the start signal, then take PER_PROCESS start times from the budget."""
    budget = shared_rate_budget(
        API_KEY,
        rate_per_second=RATE,
        burst=BURST,
        store=(lambda: StateStore(state_url)) if state_url else None,
        environ=environ,
    )
    budget.ledger.reserve(None, BURST)  # connect (and reach the shared store) before the race starts
    ready.put(True)  # type: ignore[attr-defined]
    go.wait(30)  # type: ignore[attr-defined]
    starts = []
    for _ in range(PER_PROCESS):
        budget.acquire()
        starts.append(time.time())
    results.put(starts)  # type: ignore[attr-defined]


def run_two_processes(environ: dict[str, str], state_url: str | None = None) -> list[float]:
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=_take_start_times, args=(environ, state_url, ready, go, results))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=60)
        go.set()
        starts = sorted(start for _ in processes for start in results.get(timeout=60))
    finally:
        for process in processes:
            process.join(timeout=10)
    assert all(process.exitcode == 0 for process in processes)
    return starts


def most_in_any_second(starts: list[float]) -> int:
    return max(
        sum(1 for other in starts[index:] if other - start < 1.0) for index, start in enumerate(starts)
    )


def assert_within_the_key_rate(starts: list[float]) -> None:
    assert len(starts) == 2 * PER_PROCESS
    # Both processes together: the burst, then one every 1 / RATE (one more for scheduling jitter on a busy host).
    assert most_in_any_second(starts) <= BURST + RATE + 1
    assert starts[-1] - starts[0] >= (2 * PER_PROCESS - BURST) / RATE * 0.9


@pytest.fixture
def redis_environ() -> Iterator[dict[str, str]]:
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"kombo-test-{uuid.uuid4().hex[:12]}"
    yield {
        "KOMBO_RATE_BUDGET": "redis",
        "KOMBO_RATE_BUDGET_REDIS_URL": "redis://127.0.0.1:6379/0",
        "KOMBO_RATE_BUDGET_PREFIX": prefix,
    }
    keys = list(client.scan_iter(f"{prefix}:*"))
    assert keys == [f"{prefix}:rate_budget:{key_hash(API_KEY)}".encode()]  # the key's hash, never the key
    client.delete(*keys)


def test_two_processes_share_one_budget_on_redis(redis_environ):
    assert_within_the_key_rate(run_two_processes(redis_environ))


def test_two_processes_share_one_budget_in_the_state_database(state_db_url):
    StateStore(state_db_url).migrate()
    starts = run_two_processes({"KOMBO_RATE_BUDGET": "database"}, state_db_url)
    assert_within_the_key_rate(starts)
    with StateStore(state_db_url).transaction(readonly=True) as conn:
        stored = conn.exec_driver_sql("SELECT key_hash FROM rate_budgets").scalars().all()
    assert stored == [key_hash(API_KEY)]


def test_budgets_of_their_own_let_two_processes_exceed_the_rate():
    """The check above can fail: each process with its own budget sends at the full rate."""
    starts = run_two_processes({"KOMBO_RATE_BUDGET": "process"})
    assert most_in_any_second(starts) > RATE + BURST + 1
