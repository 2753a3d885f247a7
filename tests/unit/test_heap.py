"""`kombo_sync.heap.frozen_heap`: the long sending loops' exemption of long-lived objects from full garbage
collections. Each case runs in a fresh interpreter, since freezing changes the whole process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import gc, json, sys
    from kombo_sync.heap import frozen_heap

    class Node:
        def __init__(self):
            self.peer = self  # a reference cycle: only the cyclic collector frees it

    seen = {}
    if sys.argv[1] == "frozen-before":
        gc.freeze()
    seen["before"] = gc.get_freeze_count()
    with frozen_heap("outer") as outer:
        seen["outer_yield"] = outer
        seen["inside"] = gc.get_freeze_count()
        with frozen_heap("inner") as inner:
            seen["inner_yield"] = inner
        seen["after_inner"] = gc.get_freeze_count()
        gc.disable()  # only the collection below
        for _ in range(1000):
            Node()
        seen["collected_inside"] = gc.collect()
        gc.enable()  # cycles made during the block are freed as before
    seen["after"] = gc.get_freeze_count()
    try:
        with frozen_heap("failing"):
            raise ValueError("boom")
    except ValueError:
        pass
    seen["after_error"] = gc.get_freeze_count()
    print(json.dumps(seen))
    """
)


def _run(case: str, **env: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, case],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freezes_what_exists_for_the_block_and_gives_it_back():
    seen = _run("plain", KOMBO_GC_FREEZE="1")
    assert seen["before"] == 0
    # The interpreter's and the modules' objects (a frozen object freed by its reference count leaves the count).
    assert seen["outer_yield"] > 5_000 and seen["inside"] > 5_000
    assert seen["inner_yield"] == 0  # nested: one freeze, shared
    assert seen["after_inner"] > 5_000  # the inner block's end does not unfreeze the outer's
    assert seen["collected_inside"] >= 1000
    assert seen["after"] == 0
    assert seen["after_error"] == 0


def test_a_heap_frozen_by_someone_else_is_left_as_it_is():
    seen = _run("frozen-before", KOMBO_GC_FREEZE="1")
    assert seen["before"] > 5_000
    assert seen["outer_yield"] == 0
    assert seen["inside"] > 5_000 and seen["after"] > 5_000  # not unfrozen by us


def test_turned_off():
    seen = _run("plain", KOMBO_GC_FREEZE="0")
    assert seen["outer_yield"] == seen["inside"] == seen["after"] == 0
