"""A clock for tests of timing rules (rate budgets, backoff): it only moves when something sleeps, and records
every sleep."""

from __future__ import annotations


class FakeTime:
    """A clock that only moves when something sleeps; records every sleep (blocking or awaited)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
