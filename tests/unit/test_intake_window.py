"""The intake's poll window: data interval minus overlap, gap protection for scheduled runs, look-back otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kombo_sync.intake.window import KIND_INTERVAL, KIND_LOOKBACK, poll_window
from kombo_sync.settings import IntakeSettings

NOW = datetime(2026, 3, 2, 12, 7, 30, tzinfo=UTC)
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
END = datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
SETTINGS = IntakeSettings(overlap_minutes=15, lookback_minutes=60, max_gap_hours=72)


def test_scheduled_run_polls_its_interval_minus_the_overlap() -> None:
    window = poll_window(
        SETTINGS,
        now=NOW,
        data_interval_start=START,
        data_interval_end=END,
        run_type="scheduled",
        previous_success_end=START,
    )
    assert window.kind == KIND_INTERVAL
    assert window.created_after == START - timedelta(minutes=15)
    assert window.until == END


@pytest.mark.parametrize("run_type", ["backfill", "manual"])
def test_backfill_and_dated_manual_runs_poll_exactly_their_range(run_type: str) -> None:
    past_start = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    window = poll_window(
        SETTINGS,
        now=NOW,
        data_interval_start=past_start,
        data_interval_end=past_start + timedelta(hours=1),
        run_type=run_type,
        previous_success_end=datetime(2026, 1, 1, tzinfo=UTC),  # ignored: only scheduled runs reach back
    )
    assert window.created_after == past_start - timedelta(minutes=15)


def test_a_scheduled_run_after_an_outage_reaches_back_to_the_last_success() -> None:
    last_success = START - timedelta(hours=3)
    window = poll_window(
        SETTINGS, now=NOW, data_interval_start=START, data_interval_end=END, run_type="scheduled",
        previous_success_end=last_success,
    )  # fmt: skip
    assert window.created_after == last_success - timedelta(minutes=15)


def test_the_reach_back_is_capped_by_max_gap_hours() -> None:
    window = poll_window(
        SETTINGS, now=NOW, data_interval_start=START, data_interval_end=END, run_type="scheduled",
        previous_success_end=NOW - timedelta(days=30),
    )  # fmt: skip
    assert window.created_after == NOW - timedelta(hours=72) - timedelta(minutes=15)


def test_the_first_scheduled_run_looks_back_like_an_undated_run() -> None:
    window = poll_window(
        SETTINGS, now=NOW, data_interval_start=START, data_interval_end=END, run_type="scheduled",
        previous_success_end=None,
    )  # fmt: skip
    assert window.created_after == NOW - timedelta(minutes=60 + 15)


@pytest.mark.parametrize(
    ("start", "run_type"),
    [(None, "manual"), (None, "asset_triggered"), (START, "asset_triggered"), (None, None)],
)
def test_runs_without_a_data_interval_use_the_look_back(start: datetime | None, run_type: str | None) -> None:
    window = poll_window(SETTINGS, now=NOW, data_interval_start=start, run_type=run_type)
    assert window.kind == KIND_LOOKBACK
    assert window.created_after == NOW - timedelta(minutes=75)
    assert "lookback" in window.describe()
