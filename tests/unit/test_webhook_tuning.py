"""The webhook process's tuning (`kombo_sync.webhooks.tuning`): the heap freezer and the switch interval, each case
in a fresh interpreter: both change the whole process, which pytest's own process must keep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import gc, json
    from kombo_sync.webhooks.tuning import MAX_FREEZES, MIN_LONG_LIVED, freezer

    class Node:
        def __init__(self):
            self.peer = self  # tracked by the collector, as most of an application's objects are

    seen = {"before": gc.get_freeze_count()}
    freezer.start()
    freezer.start()  # idempotent
    seen["after_start"] = gc.get_freeze_count()
    seen["freezes_after_start"] = freezer.freezes

    gc.disable()  # only the collections this probe asks for
    kept = [Node() for _ in range(MIN_LONG_LIVED + 10_000)]  # loaded lazily after the first webhook
    freezer.maybe_freeze()
    seen["before_full_collection"] = gc.get_freeze_count()
    gc.collect()  # a full collection that finds them all alive
    freezer.maybe_freeze()
    seen["after_settled_collection"] = gc.get_freeze_count()

    [Node() for _ in range(MIN_LONG_LIVED + 10_000)]  # garbage in cycles
    more = [Node() for _ in range(100)]
    gc.collect()  # a full collection that freed much of what it saw: not settled
    freezer.maybe_freeze()
    seen["after_busy_collection"] = gc.get_freeze_count()
    seen["freezes"] = freezer.freezes
    seen["max"] = MAX_FREEZES
    print(json.dumps(seen))
    """
)


def _run(env_extra: dict[str, str]) -> dict[str, int]:
    env = {**os.environ, **env_extra}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freezes_the_heap_at_the_first_webhook_and_again_once_a_full_collection_finds_it_settled():
    seen = _run({"KOMBO_WEBHOOK_GC_FREEZE": "1"})
    assert seen["before"] == 0
    assert seen["after_start"] > 5_000  # the interpreter's and the imported modules' objects
    assert seen["freezes_after_start"] == 1
    # Objects created later are not frozen until a full collection found them long-lived...
    assert seen["before_full_collection"] == seen["after_start"]
    assert seen["after_settled_collection"] >= seen["after_start"] + 60_000
    # ...and a collection that freed a large share of what it looked at freezes nothing.
    assert seen["after_busy_collection"] == seen["after_settled_collection"]
    assert seen["freezes"] == 2 <= seen["max"]


def test_switched_off_nothing_is_frozen():
    seen = _run({"KOMBO_WEBHOOK_GC_FREEZE": "0"})
    assert seen["after_start"] == 0 and seen["after_settled_collection"] == 0 and seen["freezes"] == 0


SWITCH_PROBE = (
    "import sys; from kombo_sync.webhooks.tuning import tune_webhook_process; "
    "tune_webhook_process(); tune_webhook_process(); print(sys.getswitchinterval())"
)


def _switch_interval(value: str | None) -> float:
    env = {key: item for key, item in os.environ.items() if key != "KOMBO_WEBHOOK_SWITCH_INTERVAL_MS"}
    if value is not None:
        env["KOMBO_WEBHOOK_SWITCH_INTERVAL_MS"] = value
    env["KOMBO_WEBHOOK_GC_FREEZE"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", SWITCH_PROBE], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def test_the_switch_interval_is_half_a_millisecond_unless_configured():
    assert _switch_interval(None) == pytest.approx(0.0005)
    assert _switch_interval("2") == pytest.approx(0.002)
    assert _switch_interval("50") == pytest.approx(0.005)  # never above Python's own default
    assert _switch_interval("fast") == pytest.approx(0.0005)  # logged, and the default used
