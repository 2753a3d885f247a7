"""The six DAGs' params as a trigger form or a JSON conf may hand them: read as meant, or a `ParamError` naming
the param (final: a retry would read the same conf), never a TypeError, OverflowError or a bare ValueError."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kombo_sync.catalog.plan import SyncOptions
from kombo_sync.housekeeping import tasks as housekeeping_tasks
from kombo_sync.runs import ParamError, RunInfo, scope_params
from kombo_sync.storable import text_problem
from kombo_sync.writeback import tasks as writeback_tasks
from kombo_sync.writeback.window import writeback_window
from tests.support.fuzz import assert_enough, fuzz_settings, hostile_values, tried

pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisWarning"
)  # long reprs, on purpose
NAME = "DAG params: every param of the six DAGs"
PARAMS = ("integration_ids", "order_ids", "dry_run", "repoll", "force", "allow_shrink", "replay_dead_letters",
          "date_from", "date_to", "erase_emails", "erase_reason")  # fmt: skip
form_values = st.one_of(
    hostile_values,
    st.lists(hostile_values, max_size=4),
    st.sampled_from(["true", "false", "False", "1", "0", "yes", "", " a, b ,a\nc", "2026-01-05", "9999-12-31",
                     "2026-01-05T08:00:00+14:00", "0000-01-01", "2026-02-30", ["a", ["b"]], ["a\x00"]]),
)  # fmt: skip


def _info(params: dict) -> RunInfo:
    return RunInfo("dag", "manual__1", "manual", "task", 1, None, None, params)


@fuzz_settings(max_examples=300)
@given(params=st.dictionaries(st.sampled_from(PARAMS), form_values, max_size=5))
@example(params={"replay_dead_letters": "false"})  # was True: every dead letter requeued
@example(params={"date_to": "9999-12-31", "date_from": "2026-01-01"})  # OverflowError
@example(params={"date_from": "yesterday"})  # bare ValueError not naming the param
@example(params={"date_from": 20260105})  # TypeError: not a time
@example(params={"order_ids": 5})  # TypeError: int is not iterable
@example(params={"date_from": pd.NaT})  # TypeError from its NaN fields
@example(params={"integration_ids": ["ok", "a\x00b"]})  # NUL reached the state store query
def test_params_are_read_as_meant_or_refused_by_name(params):
    tried(NAME)
    for read in (
        lambda: scope_params(_info(params)),  # intake, reconcile and lifecycle
        lambda: writeback_tasks._params(_info(params)),
        lambda: housekeeping_tasks._params(_info(params)),
        lambda: SyncOptions.from_params(params),
    ):
        try:
            read()
        except ParamError as exc:
            assert any(str(exc).startswith(name) for name in PARAMS), exc
    try:
        values = writeback_tasks._params(_info(params))
    except ParamError:
        return
    for key in ("order_ids",):
        assert all(isinstance(item, str) and item and text_problem(item) is None for item in values[key])
    assert all(isinstance(values[key], bool) for key in ("dry_run", "replay_dead_letters"))
    if params.get("replay_dead_letters") in ("false", "False", "0", "", False, None):
        assert values["replay_dead_letters"] is False
    try:
        start, end = writeback_window(
            overlap_minutes=60, now=datetime(2026, 1, 5, 12, tzinfo=UTC), run_type="manual",
            date_from=values["date_from"], date_to=values["date_to"],
        )  # fmt: skip
    except ValueError as exc:  # the pair does not make a window; the message names both params
        assert "date_from" in str(exc) and "date_to" in str(exc)
        return
    assert start < end and start.tzinfo is UTC


@pytest.fixture(scope="module", autouse=True)
def _enough_examples():
    yield
    assert_enough(NAME, 300)
