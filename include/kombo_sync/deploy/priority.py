"""CPU priority on a shared machine: Kombo's webhook answers first, the batch side catches up.

The webhook runs in the api-server and Kombo waits for each answer; the intake, the write-back and the catalog are
batch work with minutes of slack. On one machine (`make up`, or docker-compose.yaml on one host) they share the
cores, and at a few hundred webhooks a second an intake inviting as fast, plus the scheduler starting its tasks,
takes the CPU the api-server needs: the answers queue and time out. Run at a lower priority, the batch side only
takes what the api-server leaves; it falls behind during a burst and catches up after it.

- Local processes (`make up`, or any launcher that calls `batch_niceness`): the scheduler, dag-processor and
  triggerer start at niceness `KOMBO_BATCH_NICE`; the task processes they start inherit it. Unset, it is 10 with a
  PostgreSQL state store and 0 (the api-server's priority) with SQLite: SQLite has one write lock for the whole
  database, and an intake at a lower priority that holds it while the api-server keeps the cores busy runs at a
  tenth of its speed, so every webhook waits for it (priority inversion; at 400 webhooks a second for 60 s, of two
  runs at nice 10 one answered with a p99 of 2.3 s and one timed out 12,640 webhooks; two at 0 had no errors).
  PostgreSQL's writers share no lock.
- docker-compose.yaml (PostgreSQL): containers do not compete by niceness (each is its own cgroup), so the batch
  services get `cpu_shares: ${KOMBO_BATCH_CPU_SHARES:-102}`, a tenth of the api-server's 1024: the same ratio as
  the kernel's weights of nice 10 and nice 0 (110 and 1024). `niceness_for_cpu_shares` maps one onto the other
  for the tests that run the compose file as local processes.

Neither changes anything while the machine has CPU to spare: a lower priority only decides who waits when both
want a core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

BATCH_NICE_ENV = "KOMBO_BATCH_NICE"
DEFAULT_BATCH_NICE = 10
DEFAULT_API_CPU_SHARES = 1024
MAX_NICE = 19

# The Linux scheduler's weight of each niceness from 0 to 19 (kernel/sched/core.c, sched_prio_to_weight).
_WEIGHTS = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)


class PriorityError(ValueError):
    """A CPU priority setting that is not a number in its range."""


def batch_niceness(environ: Mapping[str, str] | None = None, *, state_dialect: str = "postgresql") -> int:
    """The niceness of the batch side, from `KOMBO_BATCH_NICE` (0-19). Unset or empty: 10 with a PostgreSQL state
    store, 0 with SQLite (`state_dialect`, a SQLAlchemy dialect name; see the module's docstring)."""
    raw = (os.environ if environ is None else environ).get(BATCH_NICE_ENV, "").strip()
    if not raw:
        return 0 if state_dialect == "sqlite" else DEFAULT_BATCH_NICE
    try:
        value = int(raw)
    except ValueError:
        raise PriorityError(
            f"{BATCH_NICE_ENV}={raw!r} is not a whole number: give 0-{MAX_NICE} (0: the batch side runs at the "
            f"api-server's priority; default {DEFAULT_BATCH_NICE} with PostgreSQL, 0 with SQLite)"
        ) from None
    if not 0 <= value <= MAX_NICE:
        raise PriorityError(
            f"{BATCH_NICE_ENV}={value} is out of range: give 0-{MAX_NICE} (a negative niceness would put the "
            f"batch side ahead of the webhook; default {DEFAULT_BATCH_NICE} with PostgreSQL, 0 with SQLite)"
        )
    return value


def niceness_for_cpu_shares(shares: int, reference: int = DEFAULT_API_CPU_SHARES) -> int:
    """The niceness whose scheduler weight relative to nice 0 is closest to `shares / reference`: how a container's
    `cpu_shares` against the api-server's is reproduced by local processes (1024 -> 0, 512 -> 3, 102 -> 10)."""
    if shares <= 0 or reference <= 0:
        raise PriorityError(f"cpu_shares must be positive, got {shares} against {reference}")
    wanted = _WEIGHTS[0] * shares / reference
    return min(range(len(_WEIGHTS)), key=lambda nice: abs(_WEIGHTS[nice] - wanted))


def lower_priority(niceness: int) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child runs at `niceness` at least (never raised above its
    parent's priority, which would need privileges)."""

    def apply() -> None:
        current = os.nice(0)
        if niceness > current:
            os.nice(niceness - current)

    return apply
