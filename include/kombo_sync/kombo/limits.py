"""Client-side limits that keep us inside Kombo's: a rate budget per API key (its state in a ledger: this process,
or one shared by every process, `kombo_sync.kombo.budgets`) and a per-integration in-flight cap."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

from kombo_sync.kombo.errors import parse_ratelimit_reset

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = (
    30  # Kombo's default per-integration concurrency cap (may be lower for some integrations)
)


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class BudgetLedger(Protocol):
    """Where a rate budget's state lives: this process (`LocalLedger`), or Redis or the state database, shared by
    every task process using the same API key (`kombo_sync.kombo.budgets`). Each ledger keeps its own clock."""

    def reserve(self, interval: float | None, burst: float) -> float:
        """Take the next start time from the budget (``interval`` seconds apart once ``burst`` are spent; None:
        no client-side rate, only the pause) and return the seconds until it."""
        ...

    def pause(self, seconds: float) -> bool:
        """Hold every new request for ``seconds`` (never shortens a pause); True when the pause grew."""
        ...

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when none)."""
        ...


class LocalLedger:
    """The budget's state in this process (thread-safe): a token bucket in its GCRA form and the pause."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # When the bucket would be full again if nothing else started (GCRA's "theoretical arrival time").
        self._full_at = clock()
        self.paused_until = 0.0

    def reserve(self, interval: float | None, burst: float) -> float:
        with self._lock:
            now = self._clock()
            start = max(now, self.paused_until)
            if interval is not None:
                start = max(start, self._full_at - (burst - 1.0) * interval)
                self._full_at = max(self._full_at, start) + interval
            return start - now

    def pause(self, seconds: float) -> bool:
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            if until <= self.paused_until:
                return False
            self.paused_until = until
            return True

    def paused_for(self) -> float:
        with self._lock:
            return max(0.0, self.paused_until - self._clock())


class RateBudget:
    """Thread-safe rate budget for one API key, which also obeys the server; its state lives in a ledger (this
    process by default; Redis or the state database to share it between processes, `kombo_sync.kombo.budgets`).

    Each request reserves its own start time (a token bucket in its GCRA form: a full bucket lets ``burst``
    requests start at once, then one every ``1 / rate_per_second``) and sleeps once until then, so many waiting
    threads cost one wake-up each rather than all polling for the next token.

    ``rate_per_second=None`` means no client-side rate; the budget then only waits when Kombo says so
    (``ratelimit-remaining: 0`` or a 429), until ``ratelimit-reset`` has passed. That pause applies to every
    thread (and, with a shared ledger, every process), so one 429 does not turn into thirty: a thread that wakes
    inside a pause set while it slept takes a new start time after it.
    """

    def __init__(
        self,
        rate_per_second: float | None = None,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        default_pause: float = 1.0,
        ledger: BudgetLedger | None = None,
    ) -> None:
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive or None")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_second = rate_per_second
        self.burst = float(burst if burst is not None else max(1, round(rate_per_second or 1)))
        self._clock = clock
        self._sleep = sleep
        self._default_pause = default_pause
        self.ledger: BudgetLedger = ledger if ledger is not None else LocalLedger(clock)
        self._lock = threading.Lock()
        self.server_limit: float | None = None
        self.server_remaining: float | None = None

    @property
    def paused_until(self) -> float:
        """Clock time before which no request may start (0 when not paused)."""
        if isinstance(self.ledger, LocalLedger):
            return self.ledger.paused_until
        left = self.ledger.paused_for()
        return self._clock() + left if left > 0 else 0.0

    def pause_for(self, seconds: float) -> None:
        """Hold every new request for ``seconds`` (never shortens an existing pause)."""
        if self.ledger.pause(seconds):
            log.info("Kombo rate budget paused for %.1f s", seconds)

    def _interval(self) -> float | None:
        return None if self.rate_per_second is None else 1.0 / self.rate_per_second

    def _waits(self) -> Iterator[float]:
        """The sleeps before a request may start (one, unless Kombo pauses everyone meanwhile): the one rule
        behind ``acquire`` and ``acquire_async``."""
        delay = self.ledger.reserve(self._interval(), self.burst)
        while delay > 0:
            yield delay
            if self.ledger.paused_for() <= 0:
                break
            # Kombo paused everyone while we slept: a new start time, after the pause.
            delay = self.ledger.reserve(self._interval(), self.burst)

    def acquire(self) -> float:
        """Block until a request may start; returns the seconds waited."""
        waited = 0.0
        for delay in self._waits():
            self._sleep(delay)
            waited += delay
        return waited

    async def acquire_async(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> float:
        """``acquire`` for a coroutine: waits on the event loop, not in a thread; returns the seconds waited. The
        ledger is asked from the loop's thread (a shared ledger's reservation is one short round trip)."""
        waited = 0.0
        for delay in self._waits():
            await sleep(delay)
            waited += delay
        return waited

    def observe(self, headers: Mapping[str, str], *, rate_limited: bool = False) -> None:
        """Learn from a response's ``ratelimit-*`` headers; pause everyone when the window is spent.

        ``rate_limited`` marks a 429 for Kombo's rate limit: it pauses until ``ratelimit-reset`` too, or for
        ``default_pause`` when the response does not say.
        """
        limit = _header_number(headers, "ratelimit-limit")
        remaining = _header_number(headers, "ratelimit-remaining")
        with self._lock:
            if limit is not None:
                self.server_limit = limit
            if remaining is not None:
                self.server_remaining = remaining
        if rate_limited or (remaining is not None and remaining <= 0):
            reset = parse_ratelimit_reset(headers.get("ratelimit-reset"))
            if reset is None and rate_limited:
                reset = self._default_pause
            if reset is not None and reset > 0:
                self.pause_for(reset)


class InFlightLimiter:
    """At most ``max_in_flight`` simultaneous requests per integration id (Kombo's concurrency cap).

    A ``Concurrency-Limit`` response header lower than the configured cap lowers it for that integration,
    since Kombo sets smaller caps for sensitive integrations.
    """

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._condition = threading.Condition()
        self._in_flight: dict[str, int] = {}
        self._caps: dict[str, int] = {}
        # Coroutines waiting for a slot, per integration, first come first woken: (their loop, a future that
        # wakes them). Threads wait on the condition.
        self._async_waiters: dict[str, deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def cap(self, integration_id: str) -> int:
        with self._condition:
            return self._caps.get(integration_id, self.max_in_flight)

    def in_flight(self, integration_id: str) -> int:
        with self._condition:
            return self._in_flight.get(integration_id, 0)

    def observe(self, integration_id: str | None, headers: Mapping[str, str]) -> None:
        """Adopt a lower per-integration cap from a ``Concurrency-Limit`` header."""
        if integration_id is None:
            return
        server_cap = _header_number(headers, "concurrency-limit")
        if server_cap is None or server_cap < 1:
            return
        new_cap = min(self.max_in_flight, int(server_cap))
        with self._condition:
            if self._caps.get(integration_id, self.max_in_flight) != new_cap:
                self._caps[integration_id] = new_cap
                log.info("Kombo concurrency cap for integration %s is %s", integration_id, new_cap)
                self._condition.notify_all()
                self._wake_async(integration_id, every=True)

    def _wake_async(self, integration_id: str, *, every: bool = False) -> None:
        """Wake the integration's first waiting coroutine (``every``: all of them) to look again; caller holds
        the condition. One freed slot wakes one coroutine, so a release costs the same however many wait."""
        waiters = self._async_waiters.get(integration_id)
        while waiters:
            loop, future = waiters.popleft()
            if future.done() or loop.is_closed():
                continue  # cancelled meanwhile
            loop.call_soon_threadsafe(_wake, future)
            if not every:
                break
        if not waiters:
            self._async_waiters.pop(integration_id, None)

    def _try_take(self, integration_id: str) -> bool:
        """Take a slot if one is free (caller holds the condition)."""
        if self._in_flight.get(integration_id, 0) >= self._caps.get(integration_id, self.max_in_flight):
            return False
        self._in_flight[integration_id] = self._in_flight.get(integration_id, 0) + 1
        return True

    def _release(self, integration_id: str) -> None:
        with self._condition:
            count = self._in_flight[integration_id] - 1
            if count:
                self._in_flight[integration_id] = count
            else:
                del self._in_flight[integration_id]
            self._condition.notify_all()
            self._wake_async(integration_id)

    @contextmanager
    def slot(self, integration_id: str | None, timeout: float | None = None) -> Iterator[None]:
        """Hold one of the integration's slots for the duration of the block (no limit when id is None)."""
        if integration_id is None:
            yield
            return
        deadline = None if timeout is None else self._clock() + timeout
        with self._condition:
            while not self._try_take(integration_id):
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no free request slot for integration {integration_id}")
                self._condition.wait(remaining)
        try:
            yield
        finally:
            self._release(integration_id)

    @asynccontextmanager
    async def slot_async(self, integration_id: str | None) -> AsyncIterator[None]:
        """``slot`` for a coroutine: waits on the event loop; shares the counts with the threads' slots."""
        if integration_id is None:
            yield
            return
        loop = asyncio.get_running_loop()
        while True:
            with self._condition:
                if self._try_take(integration_id):
                    break
                future: asyncio.Future[None] = loop.create_future()
                self._async_waiters.setdefault(integration_id, deque()).append((loop, future))
            try:
                await future
            except asyncio.CancelledError:
                with self._condition:
                    if future.done() and not future.cancelled():
                        self._wake_async(integration_id)  # the slot it was woken for goes to the next one
                raise
        try:
            yield
        finally:
            self._release(integration_id)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
