"""`bench/webhook.py`'s split of the load's answers by whether the intake's dispatch was running when each was due
(the figures are the benchmark's business; this checks the arithmetic that attributes them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_webhook_under_test", ROOT / "bench" / "webhook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_answers_are_split_by_the_dispatch_running_when_they_were_due(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    load = bench.LoadResult()
    start = 1_000_000.0
    # Four seconds of load, 10 requests a second: slow answers while the dispatch ran (seconds 1 and 2).
    for index in range(40):
        due = start + index / 10
        during = 1.0 <= due - start < 3.0
        latency = None if index == 25 else (400.0 + index if during else 5.0)
        load.by_due.append((due, latency))
        if latency is not None:
            load.latencies_ms.append(latency)
    bench.dispatch_overlap(load, [(start + 1.0, start + 3.0), (start + 100.0, None)])
    out = capsys.readouterr().out
    assert "while an intake dispatch ran      20: p99    429.0 ms, 1 not answered in time" in out
    assert "while none ran                    20: p99      5.0 ms, 0 not answered in time" in out
    assert "by second of the load (*: a dispatch ran then): 0:5 1*:419 2*:timeout 3:5" in out


def test_a_dispatch_still_running_counts_to_the_end(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    load = bench.LoadResult()
    load.by_due.extend([(10.0, 3.0), (11.5, 90.0)])
    bench.dispatch_overlap(load, [(11.0, None)])
    out = capsys.readouterr().out
    assert "while an intake dispatch ran       1: p99     90.0 ms" in out
    assert "while none ran                     1: p99      3.0 ms" in out
    assert out.rstrip().endswith("0:3 1*:90")
