"""The scheduled soak's short form (5 minutes of traffic, then drain and check): the three DAGs on one-minute
schedules under a real scheduler, with faults. `make soak` runs the long form (tests/support/soak.py)."""

from __future__ import annotations

import os

import pytest

from tests.support.soak import SoakConfig, format_summary, run_soak

# Setup (~1 min), the traffic, the drain (up to 7 min): far past the suite's default per-test timeout.
pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.soak, pytest.mark.timeout(1800)]


def test_scheduled_soak_keeps_every_invariant(tmp_path, pg_admin_url):
    minutes = float(os.environ.get("KOMBO_SOAK_MINUTES", "5"))
    summary = run_soak(SoakConfig(minutes=minutes, workdir=tmp_path / "soak", database="postgres",
                                  pg_admin_url=pg_admin_url))  # fmt: skip
    print(format_summary(summary))
    assert summary["orders_created"] >= 40, summary
    assert summary["results_finished"] >= 20, summary
    assert not summary["broken_invariants"], format_summary(summary)
