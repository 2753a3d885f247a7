"""Which rows a write-back run reads (its window), the params of manual runs, and the team's SQL file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from kombo_sync.runs import as_utc, run_info
from kombo_sync.settings import load_settings
from kombo_sync.writeback.source import load_results_sql, read_result_chunks
from kombo_sync.writeback.tasks import _params
from kombo_sync.writeback.window import writeback_window

NOW = datetime(2026, 1, 5, 12, 3, tzinfo=UTC)
START, END = datetime(2026, 1, 5, 11, 50, tzinfo=UTC), datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def window(**kwargs):
    return writeback_window(overlap_minutes=60, now=NOW, **kwargs)


def test_a_scheduled_run_reads_its_interval_widened_by_the_overlap():
    assert window(data_interval_start=START, data_interval_end=END, run_type="scheduled") == (
        START - timedelta(minutes=60),
        END,
    )


def test_a_scheduled_run_after_missed_runs_reaches_back_to_the_last_success_within_the_cap():
    last_success = START - timedelta(hours=5)
    assert window(
        data_interval_start=START,
        data_interval_end=END,
        run_type="scheduled",
        previous_success_end=last_success,
    )[0] == last_success - timedelta(minutes=60)
    capped = window(
        data_interval_start=START,
        data_interval_end=END,
        run_type="scheduled",
        previous_success_end=START - timedelta(days=30),
        max_gap_hours=24,
    )
    assert capped[0] == NOW - timedelta(hours=24) - timedelta(minutes=60)


def test_a_backfill_reads_exactly_its_interval_plus_the_overlap():
    old = datetime(2025, 12, 1, tzinfo=UTC)
    assert window(
        data_interval_start=old,
        data_interval_end=old + timedelta(minutes=10),
        run_type="backfill",
        previous_success_end=START,
    ) == (old - timedelta(minutes=60), old + timedelta(minutes=10))


def test_a_manual_run_reads_up_to_now():
    start, end = window(data_interval_start=START, data_interval_end=END, run_type="manual")
    assert end == NOW
    assert start == NOW - timedelta(hours=24) - timedelta(minutes=60)
    assert window(run_type="manual", manual_lookback_hours=1) == (NOW - timedelta(minutes=120), NOW)


def test_a_date_range_is_read_exactly_whole_days_for_bare_dates():
    assert window(date_from="2025-12-01", date_to="2025-12-02", run_type="manual") == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2025, 12, 3, tzinfo=UTC),
    )
    assert window(date_from="2025-12-01T10:00:00Z")[1] == NOW
    with pytest.raises(ValueError, match="after date_from"):
        window(date_from="2025-12-02", date_to="2025-12-01T00:00:00")
    with pytest.raises(ValueError, match="needs date_from"):
        window(date_to="2025-12-01")


def test_as_utc_accepts_dates_times_and_offsets():
    assert as_utc("2026-01-05T13:00:00+01:00") == datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert as_utc("") is None and as_utc(None) is None


def test_params_of_a_manual_run():
    params = _params(run_info({"params": {"order_ids": "a, b,\nc, a", "dry_run": True, "date_from": ""}}))
    assert params == {
        "order_ids": ["a", "b", "c"],
        "dry_run": True,
        "replay_dead_letters": False,
        "date_from": None,
        "date_to": None,
        "discard_order_ids": [],
        "discard_quarantine_ids": [],
        "discard_reason": None,
    }
    discard = _params(
        run_info(
            {
                "params": {
                    "discard_order_ids": ["o1"],
                    "discard_quarantine_ids": ["7", 8],
                    "discard_reason": " x ",
                }
            }
        )
    )
    assert (discard["discard_order_ids"], discard["discard_quarantine_ids"], discard["discard_reason"]) == (
        ["o1"],
        [7, 8],
        "x",
    )


def test_the_shipped_query_loads_and_comments_cannot_inject_parameters(tmp_path):
    shipped = load_results_sql(load_settings().resolve_path(load_settings().writeback.sql_file))
    assert ":window_start" in shipped and "--" not in shipped
    bad = tmp_path / "bad.sql"
    bad.write_text("-- reads :window_start\nSELECT 1 AS order_id")
    with pytest.raises(ValueError, match=":window_start, :window_end"):
        load_results_sql(bad)


def test_the_window_is_half_open_and_read_in_chunks_on_sqlite(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (order_id TEXT, updated_at TIMESTAMP)")
        stamps = [START - timedelta(microseconds=1), START, START + timedelta(minutes=1), END]
        for index, stamp in enumerate(stamps * 3):
            conn.execute(
                sa.text("INSERT INTO t VALUES (:o, :u)"),
                {"o": f"o{index}", "u": stamp.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")},
            )
    sql = "SELECT * FROM t WHERE updated_at >= :window_start AND updated_at < :window_end ORDER BY order_id"
    chunks = list(read_result_chunks(engine, sql, window_start=START, window_end=END, chunk_rows=4))
    assert [len(chunk) for chunk in chunks] == [4, 2]
    assert sorted(o for chunk in chunks for o in chunk["order_id"]) == sorted(
        ["o1", "o2", "o5", "o6", "o9", "o10"]
    )
