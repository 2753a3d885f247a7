"""Run windows from every kind of time Airflow or a user hands a task, on every run type.

Scheduled and backfill runs carry pendulum ``DateTime``s, ``dag.test()`` plain ones, the trigger form strings,
and ``prev_data_interval_end_success`` is a lazy proxy that may wrap None. Whatever the input kind, the windows
must be the same, aware, in UTC, and plain ``datetime``s (pendulum arithmetic once produced a naive start).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import lazy_object_proxy
import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kombo_sync.intake.window import poll_window
from kombo_sync.runs import as_utc, previous_success_end, run_info
from kombo_sync.settings import IntakeSettings
from kombo_sync.writeback.window import writeback_window

RUN_TYPES = ["scheduled", "manual", "backfill", "asset_triggered", None]
INTAKE = IntakeSettings(overlap_minutes=15, lookback_minutes=60, max_gap_hours=72)

moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
).map(lambda value: value.replace(microsecond=0))
offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _kinds(moment: datetime, offset: timezone) -> list[Any]:
    """The same instant as each kind of value a task may receive."""
    local = moment.astimezone(offset)
    return [
        moment,
        local,
        moment.replace(tzinfo=None),  # naive: UTC by convention
        pendulum.instance(moment),
        pendulum.instance(moment).in_timezone("Europe/Berlin"),
        pendulum.instance(moment).astimezone(UTC),  # pendulum DateTime with the stdlib UTC zone
        local.isoformat(),
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        lazy_object_proxy.Proxy(lambda: pendulum.instance(moment)),
    ]


def _plain_utc(value: datetime) -> bool:
    return type(value) is datetime and value.tzinfo is UTC


@settings(max_examples=150, deadline=None)
@given(start=moments, length=st.integers(1, 24 * 60), offset=offsets, run_type=st.sampled_from(RUN_TYPES),
       gap=st.integers(0, 10 * 24 * 60))  # fmt: skip
def test_writeback_window_is_the_same_for_every_input_kind(start, length, offset, run_type, gap):
    end = start + timedelta(minutes=length)
    now = end + timedelta(minutes=3)
    previous = start - timedelta(minutes=gap)
    expected = None
    for kind_start, kind_end, kind_now, kind_previous in zip(
        _kinds(start, offset), _kinds(end, offset), _kinds(now, offset), _kinds(previous, offset), strict=True
    ):
        window = writeback_window(
            overlap_minutes=15,
            now=as_utc(kind_now),
            data_interval_start=kind_start,
            data_interval_end=kind_end,
            run_type=run_type,
            previous_success_end=kind_previous,
            max_gap_hours=72,
        )
        assert all(_plain_utc(bound) for bound in window), window
        assert window[0] < window[1]
        expected = expected or window
        assert window == expected
    if run_type in ("scheduled", "backfill"):
        assert expected[1] == end
        reach = max(previous, now - timedelta(hours=72)) if run_type == "scheduled" else start
        assert expected[0] == min(start, reach) - timedelta(minutes=15)


@settings(max_examples=150, deadline=None)
@given(start=moments, length=st.integers(1, 24 * 60), offset=offsets, run_type=st.sampled_from(RUN_TYPES),
       gap=st.integers(0, 10 * 24 * 60))  # fmt: skip
def test_intake_window_is_the_same_for_every_input_kind(start, length, offset, run_type, gap):
    end = start + timedelta(minutes=length)
    now = end + timedelta(minutes=2)
    windows = set()
    for kind_start, kind_end, kind_previous in zip(
        _kinds(start, offset),
        _kinds(end, offset),
        _kinds(start - timedelta(minutes=gap), offset),
        strict=True,
    ):
        # Tasks read the context through run_info, which normalises what Airflow hands them.
        info = run_info(
            {
                "dag_run": SimpleNamespace(run_type=run_type, run_id="r"),
                "data_interval_start": kind_start,
                "data_interval_end": kind_end,
                "prev_data_interval_end_success": kind_previous,
            }
        )
        window = poll_window(
            INTAKE,
            now=now,
            data_interval_start=info.data_interval_start,
            data_interval_end=info.data_interval_end,
            run_type=info.run_type,
            previous_success_end=info.previous_success_end,
        )
        assert _plain_utc(window.created_after)
        windows.add((window.created_after, window.until, window.kind))
    assert len(windows) == 1


def test_the_scheduled_writeback_defect_is_gone():
    """The reported case: pendulum bounds on a scheduled run gave a naive start."""
    start = pendulum.datetime(2026, 11, 30, 0, 0, tz="UTC")
    window = writeback_window(
        overlap_minutes=15,
        now=datetime(2026, 11, 30, 0, 12, tzinfo=UTC),
        data_interval_start=start,
        data_interval_end=start.add(minutes=10),
        run_type="scheduled",
    )
    assert window == (datetime(2026, 11, 29, 23, 45, tzinfo=UTC), datetime(2026, 11, 30, 0, 10, tzinfo=UTC))
    assert window[0] < datetime(2026, 11, 30, tzinfo=UTC)  # comparable with aware values: no TypeError


def test_previous_success_is_read_from_the_lazy_proxy_even_when_it_wraps_none():
    assert (
        previous_success_end({"prev_data_interval_end_success": lazy_object_proxy.Proxy(lambda: None)})
        is None
    )
    found = previous_success_end(
        {
            "prev_data_interval_end_success": lazy_object_proxy.Proxy(
                lambda: pendulum.datetime(2026, 1, 1, tz="UTC")
            )
        }
    )
    assert found == datetime(2026, 1, 1, tzinfo=UTC) and type(found) is datetime

    def unreachable() -> None:
        raise ConnectionError("api-server down")

    assert (
        previous_success_end({"prev_data_interval_end_success": lazy_object_proxy.Proxy(unreachable)}) is None
    )


def test_run_info_looks_up_the_previous_success_only_for_scheduled_runs():
    calls = []

    def lookup() -> Any:
        calls.append(1)
        return pendulum.datetime(2026, 1, 1, tz="UTC")

    for run_type in ("manual", "backfill", "asset_triggered"):
        info = run_info({"dag_run": SimpleNamespace(run_type=run_type), "prev_data_interval_end_success":
                         lazy_object_proxy.Proxy(lookup)})  # fmt: skip
        assert info.previous_success_end is None
    assert calls == []
    info = run_info({"dag_run": SimpleNamespace(run_type="scheduled"),
                     "prev_data_interval_end_success": lazy_object_proxy.Proxy(lookup)})  # fmt: skip
    assert info.previous_success_end == datetime(2026, 1, 1, tzinfo=UTC) and calls == [1]


def test_context_keys_missing_on_manual_and_asset_runs_are_fine():
    info = run_info({"params": {"dry_run": True}})
    assert info.data_interval_start is None and info.run_type is None and info.previous_success_end is None
    assert info.lease_owner("intake").startswith("intake:?:?:?:")
    window = writeback_window(overlap_minutes=5, now=datetime(2026, 1, 1, tzinfo=UTC), run_type="manual")
    assert window == (datetime(2025, 12, 30, 23, 55, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))


def test_every_try_of_a_task_instance_shares_a_lease_prefix_no_other_task_does():
    def info(run_id: str, task_id: str, try_number: int) -> Any:
        ti = SimpleNamespace(task_id=task_id, try_number=try_number, dag_id="kombo_order_intake")
        return run_info({"dag_run": SimpleNamespace(run_id=run_id, run_type="scheduled"), "ti": ti})

    first, retry = info("scheduled__2026-01-01", "dispatch", 1), info("scheduled__2026-01-01", "dispatch", 2)
    family = retry.earlier_tries("intake")
    assert family == "intake:scheduled__2026-01-01:dispatch:"
    assert first.lease_owner("intake").startswith(family) and retry.lease_owner("intake").startswith(family)
    assert first.lease_owner("intake") != retry.lease_owner("intake")
    for other in (info("scheduled__2026-01-01", "poll", 1), info("scheduled__2026-01-010", "dispatch", 1)):
        assert not other.lease_owner("intake").startswith(family)
    assert not first.lease_owner("writeback").startswith(family)
    assert run_info({"params": {}}).earlier_tries("intake") is None  # which try this is is unknown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T10:00:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00-02:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("  ", None),
    ],
)
def test_as_utc_reads_strings(text, expected):
    assert as_utc(text) == expected
    assert as_utc("2026-03-01", end_of_day=True) == datetime(2026, 3, 2, tzinfo=UTC)


def test_as_utc_refuses_what_is_not_a_time():
    with pytest.raises(ValueError):
        as_utc("yesterday")
    with pytest.raises(TypeError):
        as_utc(42)
