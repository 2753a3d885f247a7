"""The batch side's CPU priority: `KOMBO_BATCH_NICE` for local processes, compose `cpu_shares` mapped to it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kombo_sync.deploy.priority import (
    DEFAULT_BATCH_NICE,
    PriorityError,
    batch_niceness,
    lower_priority,
    niceness_for_cpu_shares,
)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, DEFAULT_BATCH_NICE), ({"KOMBO_BATCH_NICE": ""}, 10), ({"KOMBO_BATCH_NICE": " 0 "}, 0),
     ({"KOMBO_BATCH_NICE": "19"}, 19), ({"KOMBO_BATCH_NICE": "5"}, 5)],
)  # fmt: skip
def test_batch_niceness_reads_the_setting(environ: dict[str, str], expected: int) -> None:
    assert batch_niceness(environ) == expected


def test_unset_the_batch_side_keeps_the_api_servers_priority_on_sqlite() -> None:
    # SQLite's one write lock: a lower-priority intake holding it would make every webhook wait.
    assert batch_niceness({}, state_dialect="sqlite") == 0
    assert batch_niceness({}, state_dialect="postgresql") == DEFAULT_BATCH_NICE == 10
    assert batch_niceness({"KOMBO_BATCH_NICE": "4"}, state_dialect="sqlite") == 4


@pytest.mark.parametrize(
    ("raw", "says"),
    [("ten", "is not a whole number"), ("2.5", "is not a whole number"), ("-5", "out of range"),
     ("20", "out of range")],
)  # fmt: skip
def test_a_bad_batch_niceness_is_a_clear_error(raw: str, says: str) -> None:
    with pytest.raises(PriorityError) as caught:
        batch_niceness({"KOMBO_BATCH_NICE": raw})
    assert says in str(caught.value)
    assert "KOMBO_BATCH_NICE" in str(caught.value) and "0-19" in str(caught.value)


def test_cpu_shares_map_to_the_niceness_of_the_same_weight() -> None:
    # Equal shares, half (weight 526 at nice 3), the compose file's default a tenth (110 at nice 10), the least.
    assert [niceness_for_cpu_shares(s) for s in (1024, 4096, 512, 102, 128, 2)] == [0, 0, 3, 10, 9, 19]
    assert niceness_for_cpu_shares(512, reference=512) == 0
    with pytest.raises(PriorityError):
        niceness_for_cpu_shares(0)


def _child_niceness(niceness: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.nice(0))"],
        preexec_fn=lower_priority(niceness),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_lower_priority_starts_a_child_at_the_niceness() -> None:
    own = os.nice(0)
    assert _child_niceness(max(own, 7)) == max(own, 7)
    # Never above the parent's priority (that would need privileges): a lower niceness leaves the child as is.
    assert _child_niceness(own - 1 if own > 0 else 0) == own
