"""Tuning of the process that answers webhooks (an Airflow api-server worker), applied at the first webhook.

**The GIL's switch interval.** The handler threads share the interpreter's lock (the GIL). The thread that holds
the state store's write lock releases the GIL at every database call, and to take it back it waits until the
thread now running gives it up: after Python's switch interval, 5 ms by default, while the other handler threads
parse and check the next webhooks. Several statements per transaction made every SQLite write transaction wait
several switch intervals while everyone else waited for its lock. `KOMBO_WEBHOOK_SWITCH_INTERVAL_MS` (default
0.5) sets it for the whole process; measured beside a running intake, the write transactions' own time fell from
6.8-9.5 s to 4.8 s per 6,000 orders and the median answer from 6-10 ms to 2.6-3.4 ms (docs/webhook.md).

**The garbage collector's full collections.** Python's cyclic garbage collector stops every thread while it
runs, and a full collection looks at every object it tracks. An Airflow api-server holds about a million of them
once it serves (its app, the providers, the plugin, their modules), so a full collection stopped it for
0.2-0.7 s, every few seconds under load. Those objects live as long as the process; `gc.freeze()` moves them out
of the collector's sight, and objects created afterwards are collected as before.

`freezer.start()` collects once and freezes what is left. Airflow keeps loading modules and caches lazily after
that (the first task's Execution API calls, the first UI page), hundreds of thousands of objects more; so after a
full collection that looked at more than `MIN_LONG_LIVED` objects and found less than 1 % of them garbage, the
next webhook freezes again. At most `MAX_FREEZES` times per process: an object frozen and later dropped in a
reference cycle is never freed, so freezing stops once the heap has settled. `KOMBO_WEBHOOK_GC_FREEZE=0` turns
it off.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from typing import Any

from kombo_sync.heap import freeze_enabled

log = logging.getLogger(__name__)

MIN_LONG_LIVED = 50_000
MAX_FREEZES = 8
# A full collection that frees less than this share of the objects it looked at found a settled heap.
SETTLED_SHARE = 0.01


class HeapFreezer:
    def __init__(self) -> None:
        self.freezes = 0
        self._started = False
        self._wanted = False
        self._lock = threading.Lock()

    @staticmethod
    def enabled() -> bool:
        return freeze_enabled("KOMBO_WEBHOOK_GC_FREEZE")

    def start(self) -> None:
        """Collect once and freeze what survives; from then on, watch full collections. Idempotent."""
        with self._lock:
            if self._started or not self.enabled():
                return
            self._started = True
            gc.collect()
            self._freeze("the first webhook")
            gc.callbacks.append(self._after_collection)

    def maybe_freeze(self) -> None:
        """Freeze again if the last full collection found a large, settled heap (cheap when it did not)."""
        if not self._wanted:
            return
        with self._lock:
            if self._wanted:
                self._wanted = False
                self._freeze("a full collection found them all alive")

    def _freeze(self, why: str) -> None:
        before = gc.get_freeze_count()
        gc.freeze()
        self.freezes += 1
        log.info(
            "Kombo webhook: %d long-lived objects exempted from full garbage collections (%s; %d in all, %d/%d)",
            gc.get_freeze_count() - before,
            why,
            gc.get_freeze_count(),
            self.freezes,
            MAX_FREEZES,
        )
        if self.freezes >= MAX_FREEZES:
            self._stop_watching()

    def _stop_watching(self) -> None:
        try:
            gc.callbacks.remove(self._after_collection)
        except ValueError:
            pass

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: only look, and leave the freeze to the next webhook.
        if phase != "stop" or info.get("generation") != 2 or self.freezes >= MAX_FREEZES:
            return
        alive = len(gc.get_objects(generation=2))
        if alive >= MIN_LONG_LIVED and info.get("collected", 0) < SETTLED_SHARE * alive:
            self._wanted = True


freezer = HeapFreezer()

DEFAULT_SWITCH_INTERVAL_MS = 0.5


def switch_interval_seconds() -> float:
    """`KOMBO_WEBHOOK_SWITCH_INTERVAL_MS` (default 0.5, between 0.1 and 5: Python's own default) in seconds."""
    raw = os.environ.get("KOMBO_WEBHOOK_SWITCH_INTERVAL_MS", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_SWITCH_INTERVAL_MS
    except ValueError:
        log.error(
            "KOMBO_WEBHOOK_SWITCH_INTERVAL_MS=%r is not a number; using %s",
            raw[:20],
            DEFAULT_SWITCH_INTERVAL_MS,
        )
        value = DEFAULT_SWITCH_INTERVAL_MS
    return max(0.1, min(value, 5.0)) / 1000


_tuned = False


def tune_webhook_process() -> None:
    """At the first webhook (its modules imported): the switch interval, then the heap freeze. Idempotent."""
    global _tuned
    if not _tuned:
        _tuned = True
        sys.setswitchinterval(switch_interval_seconds())
    freezer.start()
