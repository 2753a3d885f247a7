"""Wake-up requests (webhook -> triggerer): coalescing, and compare-and-set consumption."""

from __future__ import annotations

import threading

import pytest

from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import consume_wakeups, pending_wakeups, request_wakeup


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
