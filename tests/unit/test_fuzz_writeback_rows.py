"""Hostile warehouse rows in the write-back mapping: each bad row is rejected with a reason naming its column,
never a crash, and every good row of the same chunk is mapped (the latest version when an order repeats)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kombo_sync.kombo.models import ResultPayload
from kombo_sync.state._util import to_jsonable
from kombo_sync.storable import storable_text, text_problem
from kombo_sync.writeback.mapping import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, canonical_json, map_results
from tests.support.fuzz import assert_enough, deep_list, fuzz_settings, hostile_values, tried

COLUMNS = ("order_id", *REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
# What each rejection starts with: the column it names, or the step (report, Kombo's own model).
REASON_PREFIXES = (*COLUMNS, "report:", "payload invalid:")
MIN_EXAMPLES = 120
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisWarning"
)  # long reprs, on purpose


def good_row(order_id: str, minute: int = 0) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "integration_id": "workday:fuzz",
        "status": "completed",
        "score": 80,
        "max_score": 100,
        "completed_at": "2026-01-05 08:00:00",
        "result_url": f"https://platform.example/results/{order_id}",
        "report_url": None,
        "report_bytes": None,
        "report_name": None,
        "report_content_type": None,
        "sub_results": json.dumps([{"id": "s1", "label": "Logic", "score": 3, "max": 5}]),
        "attributes": json.dumps({"Level": "senior"}),
        "updated_at": f"2026-01-05 08:{minute:02d}:00",
    }


def check_chunk(good: list[dict[str, Any]], bad: list[dict[str, Any]], order: list[int]) -> None:
    rows = good + bad
    frame = pd.DataFrame([rows[index] for index in order], columns=list(COLUMNS))
    chunk = map_results(frame)  # must not raise, whatever the cells hold

    mapped = dict(zip(chunk.results["order_id"], chunk.results["payload"], strict=True))
    latest: dict[str, dict[str, Any]] = {}
    for row in good:
        if row["order_id"] not in latest or row["updated_at"] >= latest[row["order_id"]]["updated_at"]:
            latest[row["order_id"]] = row
    for order_id, row in latest.items():  # nothing good is lost, and a repeated order keeps its latest row
        assert order_id in mapped, (order_id, [r.reason for r in chunk.rejections])
        assert mapped[order_id]["result_url"] == row["result_url"]
    assert len(chunk.results) + len(chunk.rejections) <= len(rows)
    assert not {r.source_key for r in chunk.rejections} & set(latest)  # no good row rejected
    for payload in mapped.values():  # what is enqueued is sendable and storable
        assert ResultPayload.model_validate(payload).to_wire() == payload
        assert text_problem(canonical_json(payload)) is None
    for rejection in chunk.rejections:
        assert rejection.reason.startswith(REASON_PREFIXES), rejection.reason
        assert text_problem(storable_text(rejection.reason)) is None
        json.dumps(to_jsonable(rejection.row))  # the quarantine row can be written


@fuzz_settings(max_examples=MIN_EXAMPLES)
@given(
    good_count=st.integers(1, 4),
    bad=st.lists(
        st.dictionaries(st.sampled_from(COLUMNS), hostile_values, min_size=1, max_size=3),
        min_size=1,
        max_size=4,
    ),
    repeat_first=st.booleans(),
    data=st.data(),
)
@example(good_count=1, bad=[{"status": b"\xff\xfe"}], repeat_first=False, data=None)  # UnicodeDecodeError
@example(good_count=1, bad=[{"updated_at": b"\xff"}], repeat_first=False, data=None)
@example(
    good_count=1, bad=[{"sub_results": "[" * 5000 + "]" * 5000}], repeat_first=False, data=None
)  # Recursion
@example(
    good_count=1, bad=[{"attributes": [{"label": "\ud800", "value": "x"}]}], repeat_first=False, data=None
)
@example(good_count=1, bad=[{"sub_results": deep_list(5000)}], repeat_first=False, data=None)
@example(good_count=2, bad=[{"result_url": "https://x.example/\x00"}], repeat_first=True, data=None)
@example(good_count=1, bad=[{"completed_at": date(999, 1, 1)}], repeat_first=False, data=None)  # "999-01-01T"
def test_hostile_cells_are_rejected_by_name_and_good_rows_survive(good_count, bad, repeat_first, data):
    tried("writeback rows: hostile cells mixed with good rows")
    good = [good_row(f"good-{index}", minute=10 + index) for index in range(good_count)]
    if repeat_first:  # the same order twice in one chunk: an older and a newer version
        good.append({**good[0], "updated_at": "2026-01-05 07:00:00", "result_url": "https://old.example/r"})
    bad_rows = []
    for index, changes in enumerate(bad):
        row = good_row(f"bad-{index}")
        row.update(changes)
        if isinstance(row["order_id"], str) and row["order_id"].startswith("good-"):
            row["order_id"] = f"bad-{index}"
        bad_rows.append(row)
    order = list(range(len(good) + len(bad_rows)))
    if data is not None:
        order = data.draw(st.permutations(order))
    check_chunk(good, bad_rows, order)


timestamps = st.one_of(
    hostile_values,
    st.datetimes().map(str),
    st.datetimes(timezones=st.timezones()).map(lambda value: value.isoformat()),
)


@fuzz_settings(max_examples=60)
@given(completed_at=timestamps, updated_at=timestamps)
@example(completed_at="garbage", updated_at="2026-01-05 08:30:00")
@example(completed_at=None, updated_at="garbage")  # accepted with no cursor before: now rejected by name
@example(completed_at="10000-01-01", updated_at="9999-12-31T23:59:59.9999999+00:00")
def test_any_timestamp_is_read_or_rejected_by_name(completed_at, updated_at):
    tried("writeback rows: completed_at / updated_at of every kind")
    row = {**good_row("bad-0"), "completed_at": completed_at, "updated_at": updated_at}
    chunk = map_results(pd.DataFrame([good_row("good-0"), row], columns=list(COLUMNS)))
    assert "good-0" in set(chunk.results["order_id"])
    for rejection in chunk.rejections:
        assert rejection.reason.startswith(("completed_at", "updated_at")), rejection.reason
    for payload in chunk.results["payload"]:
        assert payload["completed_at"].endswith("Z") and len(payload["completed_at"]) == 24


@pytest.fixture(scope="module", autouse=True)
def _enough_examples():
    yield
    assert_enough("writeback rows: hostile cells mixed with good rows", MIN_EXAMPLES)
    assert_enough("writeback rows: completed_at / updated_at of every kind", 60)
