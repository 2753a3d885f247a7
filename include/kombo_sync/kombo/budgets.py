"""One Kombo rate budget per API key across task processes: the ledgers that share it, and the choice of one.

Kombo's rate limit is per API key, but every task process (the catalog's parallel shards, the intake, the
write-back) builds its own client. With a shared ledger they take their start times from one token bucket and
all honour a pause Kombo asked for (429, ``ratelimit-remaining: 0``), instead of each discovering the limit.

- ``redis``: a Lua script per step, atomic in Redis, on Redis's own clock (``TIME``); the Celery deployment has
  Redis already. Keys are ``<prefix>:rate_budget:<SHA-256 of the API key>``, never the key itself.
- ``database``: a row per key hash in the state database's ``rate_budgets`` (migration 0012), one short
  transaction per request (SQLite ``BEGIN IMMEDIATE``, PostgreSQL a row lock); the clock is the hosts' wall
  clock, so keep the workers' clocks in sync (NTP).
- ``process``: the budget stays in the task process, as before.

``KOMBO_RATE_BUDGET`` chooses (``auto``, the default: ``redis`` when a Redis URL is configured, else
``process``). An unreachable shared ledger never stops sending: the process falls back to its own budget, logs
that once, and tries the shared one again every ``RETRY_SHARED_SECONDS``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kombo_sync.kombo.limits import BudgetLedger, LocalLedger, RateBudget

if TYPE_CHECKING:
    from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

BACKEND_ENV = "KOMBO_RATE_BUDGET"
REDIS_URL_ENV = "KOMBO_RATE_BUDGET_REDIS_URL"
PREFIX_ENV = "KOMBO_RATE_BUDGET_PREFIX"
CELERY_BROKER_ENV = "AIRFLOW__CELERY__BROKER_URL"
BACKENDS = ("auto", "redis", "database", "process")
DEFAULT_PREFIX = "kombo_sync"
RETRY_SHARED_SECONDS = 30.0
# A key's budget state is tiny and rebuilt from nothing at no cost: let Redis forget idle keys.
REDIS_TTL_SECONDS = 3600


def key_hash(api_key: str) -> str:
    """The name a budget is kept under: SHA-256 of the API key (the key itself is never stored)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


# KEYS[1] the budget's hash; ARGV[1] interval in seconds (0: no rate, only the pause), ARGV[2] burst, ARGV[3] TTL.
# Returns the seconds until the reserved start, as a string (Lua numbers become integers in Redis replies).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local full_at = tonumber(redis.call('HGET', KEYS[1], 'full_at') or '0')
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or '0')
local start = math.max(now, paused)
local interval = tonumber(ARGV[1])
if interval > 0 then
  start = math.max(start, full_at - (tonumber(ARGV[2]) - 1) * interval)
  redis.call('HSET', KEYS[1], 'full_at', string.format('%.6f', math.max(full_at, start) + interval))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return string.format('%.6f', start - now)
"""
# ARGV[1] seconds, ARGV[2] TTL; returns 1 when the pause grew.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or '0')
local target = now + tonumber(ARGV[1])
if target <= paused then return 0 end
redis.call('HSET', KEYS[1], 'paused_until', string.format('%.6f', target))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
_PAUSED_FOR = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or '0')
return string.format('%.6f', math.max(0, paused - now))
"""


class RedisLedger:
    """A budget kept in Redis: each step one atomic Lua script on Redis's clock."""

    def __init__(self, url: str, api_key: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 1.0) -> None:
        import redis

        # Short timeouts: a Redis that does not answer must not hold a request up; the fallback takes over.
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.key = f"{prefix}:rate_budget:{key_hash(api_key)}"
        self._reserve = self._redis.register_script(_RESERVE)
        self._pause = self._redis.register_script(_PAUSE)
        self._paused_for = self._redis.register_script(_PAUSED_FOR)

    def __repr__(self) -> str:
        return f"RedisLedger(key={self.key!r})"

    def reserve(self, interval: float | None, burst: float) -> float:
        return float(self._reserve(keys=[self.key], args=[interval or 0, burst, REDIS_TTL_SECONDS]))

    def pause(self, seconds: float) -> bool:
        return bool(self._pause(keys=[self.key], args=[max(0.0, seconds), REDIS_TTL_SECONDS]))

    def paused_for(self) -> float:
        return float(self._paused_for(keys=[self.key]))


class DatabaseLedger:
    """A budget kept in the state database: a row per key hash, one short transaction per step."""

    def __init__(self, store: StateStore, api_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.key = key_hash(api_key)
        self._clock = clock

    def __repr__(self) -> str:
        return f"DatabaseLedger(key={self.key[:12]}...)"

    def _locked_row(self, conn: Any) -> tuple[float, float]:
        import sqlalchemy as sa

        from kombo_sync.state.schema import rate_budgets

        self._store.upsert(conn, rate_budgets, [{"key_hash": self.key}], ["key_hash"], [])
        row = conn.execute(
            sa.select(rate_budgets.c.full_at, rate_budgets.c.paused_until)
            .where(rate_budgets.c.key_hash == self.key)
            .with_for_update()  # PostgreSQL row lock; SQLite's BEGIN IMMEDIATE already holds the database
        ).one()
        return float(row.full_at), float(row.paused_until)

    def _update(self, conn: Any, **values: float) -> None:
        import sqlalchemy as sa

        from kombo_sync.state.schema import rate_budgets

        conn.execute(sa.update(rate_budgets).where(rate_budgets.c.key_hash == self.key).values(**values))

    def reserve(self, interval: float | None, burst: float) -> float:
        with self._store.transaction() as conn:
            full_at, paused_until = self._locked_row(conn)
            now = self._clock()
            start = max(now, paused_until)
            if interval is not None:
                start = max(start, full_at - (burst - 1.0) * interval)
                self._update(conn, full_at=max(full_at, start) + interval)
            return start - now

    def pause(self, seconds: float) -> bool:
        with self._store.transaction() as conn:
            _full_at, paused_until = self._locked_row(conn)
            target = self._clock() + max(0.0, seconds)
            if target <= paused_until:
                return False
            self._update(conn, paused_until=target)
            return True

    def paused_for(self) -> float:
        import sqlalchemy as sa

        from kombo_sync.state.schema import rate_budgets

        with self._store.transaction(readonly=True) as conn:
            paused_until = conn.execute(
                sa.select(rate_budgets.c.paused_until).where(rate_budgets.c.key_hash == self.key)
            ).scalar()
        return max(0.0, float(paused_until or 0.0) - self._clock())


class FallbackLedger:
    """A shared ledger that never stops sending: while it fails, this process keeps its own budget (logged once
    per outage) and tries the shared one again every `retry_seconds`."""

    def __init__(
        self,
        shared: BudgetLedger,
        *,
        name: str,
        local: BudgetLedger | None = None,
        retry_seconds: float = RETRY_SHARED_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.local = local if local is not None else LocalLedger(clock)
        self.name = name
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until: float | None = None  # None: the shared ledger is in use

    @property
    def using_shared(self) -> bool:
        with self._lock:
            return self._down_until is None

    def _call(self, step: Callable[[BudgetLedger], Any]) -> Any:
        with self._lock:
            down_until = self._down_until
        if down_until is not None and self._clock() < down_until:
            return step(self.local)
        try:
            result = step(self.shared)
        except Exception as exc:  # any failure of the shared store: never stop sending for it
            with self._lock:
                first = self._down_until is None
                self._down_until = self._clock() + self._retry_seconds
            if first:
                log.warning(
                    "shared Kombo rate budget (%s) unavailable (%s); this process keeps its own budget and "
                    "tries again every %.0f s",
                    self.name,
                    type(exc).__name__,
                    self._retry_seconds,
                )
            return step(self.local)
        if down_until is not None:
            with self._lock:
                self._down_until = None
            log.info("shared Kombo rate budget (%s) is back", self.name)
        return result

    def reserve(self, interval: float | None, burst: float) -> float:
        return float(self._call(lambda ledger: ledger.reserve(interval, burst)))

    def pause(self, seconds: float) -> bool:
        # The local budget pauses too, so a fallback that starts during a pause honours it.
        self.local.pause(seconds)
        return bool(self._call(lambda ledger: ledger.pause(seconds)))

    def paused_for(self) -> float:
        return float(self._call(lambda ledger: ledger.paused_for()))


def redis_url_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """`KOMBO_RATE_BUDGET_REDIS_URL`, else the Celery deployment's broker URL when it is Redis."""
    environ = os.environ if environ is None else environ
    url = environ.get(REDIS_URL_ENV) or environ.get(CELERY_BROKER_ENV) or ""
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def chosen_backend(environ: Mapping[str, str] | None = None) -> str:
    """The backend `KOMBO_RATE_BUDGET` names (`auto`: redis when a Redis URL is configured, else process)."""
    environ = os.environ if environ is None else environ
    backend = (environ.get(BACKEND_ENV) or "auto").strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={backend!r}: must be one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "redis" if redis_url_from_environment(environ) else "process"
    return backend


def shared_rate_budget(
    api_key: str,
    *,
    rate_per_second: float | None = None,
    burst: int | None = None,
    store: Callable[[], StateStore] | None = None,
    environ: Mapping[str, str] | None = None,
    **budget_options: Any,
) -> RateBudget:
    """The API key's rate budget on the configured backend (`store` gives the state store for `database`)."""
    environ = os.environ if environ is None else environ
    backend = chosen_backend(environ)
    ledger: BudgetLedger | None = None
    if backend == "redis":
        url = redis_url_from_environment(environ)
        if url is None:
            raise ValueError(f"{BACKEND_ENV}=redis needs {REDIS_URL_ENV} (or a Redis {CELERY_BROKER_ENV})")
        prefix = environ.get(PREFIX_ENV) or DEFAULT_PREFIX
        ledger = FallbackLedger(RedisLedger(url, api_key, prefix=prefix), name="redis")
    elif backend == "database":
        if store is None:
            raise ValueError(f"{BACKEND_ENV}=database needs the state store")
        ledger = FallbackLedger(DatabaseLedger(store(), api_key), name="state database")
    return RateBudget(rate_per_second, burst, ledger=ledger, **budget_options)
