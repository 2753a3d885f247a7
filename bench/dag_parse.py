"""Parse time of each DAG file, in a fresh interpreter per file (target: <= 0.3 s each).

Prints, per file, the median of several parses and the ratio to the target; the baseline is an empty
DAG file parsed in the same run, so the figure shows what the project adds on top of Airflow's own import.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.3
RUNS = 5

PROBE = r"""
import importlib.util, json, sys, time
import airflow.sdk  # Airflow itself is already imported by the dag-processor before any DAG file
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(json.dumps(time.perf_counter() - t0))
"""

EMPTY_DAG = """
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def empty():
    @task
    def noop():
        return None
    noop()

empty()
"""


def parse_seconds(path: Path) -> float:
    samples = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True, cwd=ROOT
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        baseline = parse_seconds(empty)
    print(f"baseline (empty DAG): {baseline:.3f} s")
    worst = 0.0
    for path in sorted((ROOT / "dags").glob("*.py")):
        seconds = parse_seconds(path)
        worst = max(worst, seconds)
        print(
            f"{path.name:32s} {seconds:.3f} s  target {TARGET_S:.1f} s  "
            f"ratio to target {seconds / TARGET_S:.2f}  ratio to empty DAG {seconds / max(baseline, 1e-6):.1f}x"
        )
    print(f"worst: {worst:.3f} s ({'OK' if worst <= TARGET_S else 'OVER TARGET'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
