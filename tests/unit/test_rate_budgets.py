"""Choosing the Kombo rate budget's backend and falling back when a shared one is down (kombo_sync.kombo.budgets)."""

from __future__ import annotations

import logging

import pytest

from kombo_sync.kombo.budgets import (
    FallbackLedger,
    RedisLedger,
    chosen_backend,
    key_hash,
    redis_url_from_environment,
    shared_rate_budget,
)
from kombo_sync.kombo.limits import LocalLedger


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class BrokenLedger:
    """A shared ledger whose store is down until `healthy` is set; counts the calls it got."""

    def __init__(self) -> None:
        self.healthy = False
        self.calls = 0
        self.inner = LocalLedger()

    def _check(self) -> None:
        self.calls += 1
        if not self.healthy:
            raise ConnectionError("connection refused")

    def reserve(self, interval, burst):
        self._check()
        return self.inner.reserve(interval, burst)

    def pause(self, seconds):
        self._check()
        return self.inner.pause(seconds)

    def paused_for(self):
        self._check()
        return self.inner.paused_for()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "process"),
        ({"AIRFLOW__CELERY__BROKER_URL": "redis://redis:6379/0"}, "redis"),
        ({"AIRFLOW__CELERY__BROKER_URL": "amqp://rabbit:5672"}, "process"),  # not a Redis: nothing to share
        ({"KOMBO_RATE_BUDGET_REDIS_URL": "redis://cache:6379/2"}, "redis"),
        ({"KOMBO_RATE_BUDGET": "database"}, "database"),
        ({"KOMBO_RATE_BUDGET": "process", "AIRFLOW__CELERY__BROKER_URL": "redis://redis:6379/0"}, "process"),
        ({"KOMBO_RATE_BUDGET": " Redis ", "KOMBO_RATE_BUDGET_REDIS_URL": "redis://x:1/0"}, "redis"),
    ],
)
def test_the_backend_follows_the_configuration(environ, expected):
    assert chosen_backend(environ) == expected


def test_an_unknown_backend_or_a_missing_redis_url_is_a_clear_error():
    with pytest.raises(ValueError, match="KOMBO_RATE_BUDGET='memcached': must be one of"):
        chosen_backend({"KOMBO_RATE_BUDGET": "memcached"})
    with pytest.raises(ValueError, match="needs KOMBO_RATE_BUDGET_REDIS_URL"):
        shared_rate_budget("key", environ={"KOMBO_RATE_BUDGET": "redis"})
    with pytest.raises(ValueError, match="needs the state store"):
        shared_rate_budget("key", environ={"KOMBO_RATE_BUDGET": "database"})


def test_the_dedicated_redis_url_wins_over_the_broker():
    environ = {
        "KOMBO_RATE_BUDGET_REDIS_URL": "redis://cache:6379/2",
        "AIRFLOW__CELERY__BROKER_URL": "redis://b/0",
    }
    assert redis_url_from_environment(environ) == "redis://cache:6379/2"


def test_the_redis_key_names_a_hash_of_the_api_key_never_the_key():
    ledger = RedisLedger("redis://127.0.0.1:1/0", "secret-api-key", prefix="p")  # no connection until used
    assert ledger.key == f"p:rate_budget:{key_hash('secret-api-key')}"
    assert "secret-api-key" not in ledger.key and "secret-api-key" not in repr(ledger)


def test_process_backend_is_todays_budget():
    budget = shared_rate_budget("key", rate_per_second=5, burst=2, environ={})
    assert isinstance(budget.ledger, LocalLedger)
    assert (budget.rate_per_second, budget.burst) == (5, 2.0)


def test_a_shared_ledger_that_is_down_never_stops_sending_and_is_logged_once(caplog):
    clock = FakeClock()
    shared = BrokenLedger()
    ledger = FallbackLedger(shared, name="redis", local=LocalLedger(clock), retry_seconds=30, clock=clock)
    with caplog.at_level(logging.WARNING, logger="kombo_sync.kombo.budgets"):
        waits = [ledger.reserve(0.5, 1) for _ in range(3)]
    # the process's own budget took over: one start now, then one every 0.5 s
    assert waits == [0.0, 0.5, 1.0]
    assert not ledger.using_shared
    assert shared.calls == 1  # not asked again until the retry time
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "unavailable (ConnectionError)" in caplog.records[0].getMessage()

    clock.now += 31
    shared.healthy = True
    with caplog.at_level(logging.INFO, logger="kombo_sync.kombo.budgets"):
        assert ledger.reserve(0.5, 1) == pytest.approx(0.0, abs=0.01)
    assert ledger.using_shared and shared.calls == 2
    assert "is back" in caplog.records[-1].getMessage()


def test_a_pause_during_an_outage_holds_the_fallback_too():
    clock = FakeClock()
    ledger = FallbackLedger(BrokenLedger(), name="redis", local=LocalLedger(clock), clock=clock)
    ledger.pause(3.0)
    assert ledger.paused_for() == pytest.approx(3.0)
    assert ledger.reserve(None, 1) == pytest.approx(3.0)
