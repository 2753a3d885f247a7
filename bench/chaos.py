"""The chaos run: the compose deployment (CeleryExecutor, two workers) on a PostgreSQL cluster and a Redis of its
own, under the scheduled soak's traffic, while its parts are killed and stopped at moments drawn from a seed.

    python bench/chaos.py --minutes 20 --seed 11 --report .local/chaos/report.txt   # the long form (>= 50 faults)
    python bench/chaos.py --minutes 3 --outage-seconds 10                           # one fault of each kind

Fault kinds (`--faults`, comma-separated): worker_kill (SIGKILL of a Celery worker while it runs the intake's
dispatch or the write-back's send), scheduler_kill, triggerer_kill, api_server_kill (during a webhook burst),
redis_stop and postgres_stop (`--outage-seconds`, default 30). Prints the figures (faults by kind with their
recovery times, orders and results processed, invariant violations, duplicates absorbed by idempotency keys and
by leases) and exits 1 on any violation. Needs /usr/local/bin/initdb and pg_ctl, and redis-server; touches no
other PostgreSQL or Redis. docs/reliability.md, "Chaos run", has the figures of past runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from tests.support.chaos import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
