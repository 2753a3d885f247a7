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


def test_a_process_that_holds_frozen_objects_freezes_its_own_too_and_keeps_them_frozen():
    # As a task process forked from an Airflow executor that froze its heap before forking: the objects made
    # since (the probe's Node class, its imports) are frozen as well, and nothing is given back at the end.
    seen = _run("frozen-before", KOMBO_GC_FREEZE="1")
    assert seen["before"] > 5_000
    assert seen["outer_yield"] > 0
    assert seen["inside"] >= seen["before"]
    assert seen["after"] > 5_000 and seen["after_error"] > 5_000


def test_turned_off():
    seen = _run("plain", KOMBO_GC_FREEZE="0")
    assert seen["outer_yield"] == seen["inside"] == seen["after"] == 0


SANDBOX_PROBE = textwrap.dedent(
    """
    import gc, json, sys
    from fastapi.testclient import TestClient
    from sandbox.kombo_app import KomboSandboxSettings, create_kombo_app

    app = create_kombo_app(KomboSandboxSettings(gc_freeze_bulk=sys.argv[1] == "1"))
    with TestClient(app) as client:
        integration = client.post("/_sandbox/integrations", json={"tool": "workday"}).json()["id"]
        before = gc.get_freeze_count()
        answer = client.post("/_sandbox/orders/bulk", json={"integration_id": integration, "count": 200})
        print(json.dumps({"status": answer.status_code, "before": before, "after": gc.get_freeze_count()}))
    """
)


def _sandbox(freeze: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", SANDBOX_PROBE, freeze], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_sandbox_as_its_own_process_freezes_bulk_orders_and_inside_a_test_process_does_not():
    # `python -m sandbox` sets gc_freeze_bulk (unless --no-gc-freeze); the in-process sandbox of the tests not.
    own_process = _sandbox("1")
    assert own_process["status"] == 201
    assert own_process["before"] == 0 and own_process["after"] > 5_000
    in_tests = _sandbox("0")
    assert in_tests["status"] == 201
    assert in_tests["after"] == 0


def test_the_sandbox_command_line_turns_the_bulk_freeze_on_unless_told_not_to():
    from sandbox.__main__ import build_parser, settings_from_args

    assert settings_from_args(build_parser().parse_args([])).gc_freeze_bulk is True
    assert settings_from_args(build_parser().parse_args(["--no-gc-freeze"])).gc_freeze_bulk is False
