"""The one backoff rule: a delay that doubles with each failure, capped, optionally with full jitter.

Used by the Kombo client's retry loop (seconds to sleep, full jitter, never below ``Retry-After``), the intake's
retry time for an order whose channel failed, and the write-back's retry time for a result.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def exponential_delay(
    base: float, doublings: int, *, cap: float | None = None, max_doublings: int | None = None
) -> float:
    """``base * 2**doublings`` (``doublings`` below zero count as zero), with at most ``max_doublings``
    doublings and the result at most ``cap``."""
    doublings = max(0, doublings)
    if max_doublings is not None:
        doublings = min(doublings, max_doublings)
    delay = base * (2**doublings)
    return delay if cap is None else min(cap, delay)


def full_jitter(
    ceiling: float, *, at_least: float | None = None, rng: Callable[[], float] = random.random
) -> float:
    """A random delay in ``[0, ceiling)`` ("full jitter"), but never below ``at_least`` (a server's
    ``Retry-After``). ``rng`` returns a float in ``[0, 1)``; tests pin it."""
    delay = rng() * ceiling
    if at_least is not None:
        delay = max(delay, at_least)
    return delay
