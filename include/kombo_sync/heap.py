"""Long sending loops and Python's garbage collector.

The cyclic garbage collector stops every thread while it runs, and a full collection looks at every object it
tracks. A task process holds a few hundred thousand of them before its work starts (Airflow's task runner, the
providers, SQLAlchemy, pydantic, our modules); a full collection during the write-back's sends stopped its event
loop for 120-160 ms, once or twice per 10,000 results. The sends due meanwhile then left together, and beside the
requests the rate budget's burst let out after the gap, a fixed rate-limit window could see more than Kombo's
limit: a 429 and a pause of every send until the window reset (docs/writeback.md).

`frozen_heap()` moves the objects that exist when the loop starts out of the collector's sight for the loop's
duration (`gc.freeze`) and gives them back afterwards (`gc.unfreeze`); objects created during the loop are
collected as before. Nothing is collected to start (that would be the same stall), so garbage that exists at the
start waits until the end. Nested and concurrent uses share one freeze. A process that already holds frozen
objects keeps them frozen: Airflow's executors freeze the heap before they fork their workers, so a task process
starts with its parent's objects frozen and its own (our modules, the DAG's) not; those are frozen too and stay
so, since unfreezing would also give back what the parent froze. `KOMBO_GC_FREEZE=0` turns it off.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_lock = threading.Lock()
_holders = 0
_owned = False  # the current freeze is ours to undo


def freeze_enabled(variable: str = "KOMBO_GC_FREEZE") -> bool:
    """Whether a heap-freeze switch (on unless set to 0, false, no or off) is on; also the webhook's
    `KOMBO_WEBHOOK_GC_FREEZE`."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def frozen_heap(what: str) -> Iterator[int]:
    """Exempt the objects alive now from full collections while the block runs; yields how many were frozen
    by this call (0 inside another holder's block or when turned off)."""
    global _holders, _owned
    if not freeze_enabled():
        yield 0
        return
    frozen = 0
    with _lock:
        _holders += 1
        if _holders == 1:
            before = gc.get_freeze_count()
            gc.freeze()
            frozen = gc.get_freeze_count() - before
            _owned = before == 0
    if frozen:
        log.debug("%s: %d long-lived objects exempted from full garbage collections", what, frozen)
    try:
        yield frozen
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _owned:
                _owned = False
                gc.unfreeze()
