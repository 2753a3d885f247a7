"""Wake-up requests (webhook -> triggerer): coalescing, and compare-and-set consumption."""

from __future__ import annotations

import threading
import time

import pytest

from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import WakeupBatcher, consume_wakeups, pending_wakeups, request_wakeup


@pytest.fixture
def store(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    yield store
    store.dispose()


def test_nothing_pending_consumes_nothing(store):
    assert consume_wakeups(store, "orders") == 0
    assert pending_wakeups(store, "orders") == 0


def test_request_then_consume_once(store):
    assert request_wakeup(store, "orders") is True
    assert pending_wakeups(store, "orders") == 1
    assert consume_wakeups(store, "orders") == 1
    assert consume_wakeups(store, "orders") == 0
    assert request_wakeup(store, "orders") is True
    assert consume_wakeups(store, "orders") == 1


def test_requests_while_one_is_pending_coalesce(store):
    assert request_wakeup(store, "orders") is True
    assert request_wakeup(store, "orders") is False
    assert consume_wakeups(store, "orders") == 1


def test_requests_inside_a_caller_transaction_always_count(store):
    with store.transaction() as conn:
        request_wakeup(store, "orders", conn=conn)
        request_wakeup(store, "orders", conn=conn)
    assert consume_wakeups(store, "orders") == 2


def test_topics_are_independent(store):
    request_wakeup(store, "orders")
    assert consume_wakeups(store, "integrations") == 0
    assert consume_wakeups(store, "orders") == 1


def test_two_consumers_never_both_consume_a_request(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    producer, first, second = StateStore(url), StateStore(url), StateStore(url)
    producer.migrate()
    consumed: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def consume(store):
        while not done.is_set():
            got = consume_wakeups(store, "orders")
            if got:
                with lock:
                    consumed.append(got)

    threads = [threading.Thread(target=consume, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        with producer.transaction() as conn:
            request_wakeup(producer, "orders", conn=conn)
    done.set()
    for thread in threads:
        thread.join()
    consumed.append(consume_wakeups(producer, "orders"))
    # Every request consumed exactly once across both consumers.
    assert sum(consumed) == 200
    for store in (producer, first, second):
        store.dispose()


# WakeupBatcher: this process's requests coalesced before the database ----------------------------------------


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_batcher_writes_the_first_request_at_once(store):
    batcher = WakeupBatcher(lambda topic: request_wakeup(store, topic), window=5.0)
    started = time.monotonic()
    batcher.request("orders")
    # Not held back by the window: a quiet period's first order wakes the intake at once.
    assert _wait_for(lambda: pending_wakeups(store, "orders") == 1, timeout=2.0)
    assert time.monotonic() - started < 2.0


def test_batcher_coalesces_a_burst_and_never_loses_the_last_request(store):
    writes: list[str] = []

    def write(topic):
        request_wakeup(store, topic)
        writes.append(topic)

    batcher = WakeupBatcher(write, window=0.2)
    batcher.request("orders")
    assert _wait_for(lambda: writes == ["orders"])
    # The triggerer fires meanwhile: what follows must be requested again, after the requests were made.
    assert consume_wakeups(store, "orders") == 1
    for _ in range(500):
        batcher.request("orders")
    # The write lands in the store before `write` records it: wait for both (on a slow machine the test thread
    # saw the row between the two).
    assert _wait_for(lambda: pending_wakeups(store, "orders") == 1 and len(writes) >= 2)
    assert len(writes) == 2  # 501 requests, two writes
    time.sleep(0.3)
    assert len(writes) == 2  # nothing pending: nothing more written


def test_batcher_topics_are_independent(store):
    batcher = WakeupBatcher(lambda topic: request_wakeup(store, topic), window=0.05)
    batcher.request("orders")
    batcher.request("integrations")
    assert _wait_for(
        lambda: pending_wakeups(store, "orders") == 1 and pending_wakeups(store, "integrations") == 1
    )


def test_batcher_retries_a_failed_write(store):
    attempts: list[float] = []

    def flaky(topic):
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ConnectionError("database away")
        request_wakeup(store, topic)

    batcher = WakeupBatcher(flaky, window=0.05)
    batcher.request("orders")
    assert _wait_for(lambda: pending_wakeups(store, "orders") == 1)
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.04


def test_batcher_flush_writes_what_is_pending_now(store):
    writes: list[str] = []
    batcher = WakeupBatcher(writes.append, window=60.0)
    batcher.request("orders")
    assert _wait_for(lambda: writes == ["orders"])
    batcher.request("orders")  # inside the window: held back
    time.sleep(0.05)
    assert writes == ["orders"]
    batcher.flush()
    assert writes == ["orders", "orders"]


def test_batcher_needs_a_window():
    with pytest.raises(ValueError):
        WakeupBatcher(lambda topic: None, window=0)
