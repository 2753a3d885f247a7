"""Hostile warehouse rows through the jobs' real state store (SQLite and PostgreSQL): each bad row lands in
`quarantine` with its reason, every good row of the same batch is enqueued (write-back) or planned (catalog),
and nothing raises: PostgreSQL refuses NUL in text, which once failed the whole chunk's quarantine write."""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kombo_sync.catalog.job import plan_catalog_sync
from kombo_sync.catalog.plan import SyncOptions
from kombo_sync.catalog.source import CONTRACT_COLUMNS
from kombo_sync.settings import CatalogSettings, PipelineSettings
from kombo_sync.state.audit import Quarantine
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.writeback import job as writeback_job
from kombo_sync.writeback.job import enqueue_results
from tests.support.fuzz import assert_enough, fuzz_settings, hostile_values, tried
from tests.unit.test_fuzz_writeback_rows import COLUMNS, good_row

pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisWarning"
)  # long reprs, on purpose
_batches = itertools.count()
WRITEBACK = "quarantine: write-back batches with hostile rows"
CATALOG = "quarantine: catalog batches with hostile rows"


@fuzz_settings(max_examples=25)
@given(
    bad=st.lists(
        st.dictionaries(st.sampled_from(COLUMNS), hostile_values, min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    )
)
@example(bad=[{"status": "completed\x00"}, {"order_id": "a\x00b"}])  # NUL in the reason and the key
@example(bad=[{"attributes": '{"k": "\\ud800"}'}, {"order_id": "\udfff"}])
@example(bad=[{"order_id": "x" * 5000}])  # PostgreSQL: value too long for varchar(255), the chunk was lost
def test_writeback_batch_with_hostile_rows(state_store, monkeypatch, bad):
    tried(WRITEBACK)
    batch = next(_batches)
    good = [good_row(f"good-{batch}-{index}") for index in range(2)]
    rows = good + [{**good_row(f"bad-{batch}-{index}"), **changes} for index, changes in enumerate(bad)]
    for index, row in enumerate(rows[len(good) :]):
        if isinstance(row["order_id"], str) and row["order_id"].startswith("good-"):
            row["order_id"] = f"bad-{batch}-{index}"
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    monkeypatch.setattr(writeback_job, "_chunks", lambda *args, **kwargs: iter([frame]))
    before = len(Quarantine(state_store).list_open("writeback"))

    summary = enqueue_results(state_store, None, PipelineSettings(), window_start=None, order_ids=["any"])  # type: ignore[arg-type]

    queued = ResultOutbox(state_store).versions([row["order_id"] for row in good])
    assert set(queued) == {row["order_id"] for row in good}
    assert summary["mapped"] + summary["rejected"] <= len(rows)
    stored = Quarantine(state_store).list_open("writeback")[before:]
    assert len(stored) == summary["quarantined"] <= summary["rejected"]
    assert all(row.reason for row in stored)


def _catalog_row(customer: str, package: str) -> dict[str, Any]:
    return {"customer_key": customer, "package_id": package, "type": "SKILLS_TEST", "name": "N", "description": "D",
            "active": True}  # fmt: skip


@fuzz_settings(max_examples=25)
@given(
    bad=st.lists(
        st.dictionaries(st.sampled_from(CONTRACT_COLUMNS), hostile_values, min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    )
)
@example(bad=[{"name": "\x00"}, {"customer_key": "a\x00"}, {"type": "x\x00"}])
def test_catalog_batch_with_hostile_rows(state_store, bad):
    tried(CATALOG)
    batch = next(_batches)
    rows = [_catalog_row(f"good-{batch}", "p1")]
    rows += [{**_catalog_row(f"bad-{batch}-{index}", "p1"), **changes} for index, changes in enumerate(bad)]
    frame = pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS), dtype=object)

    planned = plan_catalog_sync(
        state_store, lambda: frame, CatalogSettings(), SyncOptions(), run_id=f"fuzz-{batch}"
    )

    catalog = planned["summary"]["catalog"]
    assert catalog["rows"] == len(rows)
    assert f"good-{batch}" not in catalog["customers_with_bad_rows"]
    stored = catalog["quarantined"] + catalog["already_quarantined"]
    assert stored == catalog["bad_rows"]
    assert all(row.reason for row in Quarantine(state_store).list_open("catalog"))


@pytest.fixture(scope="module", autouse=True)
def _enough_examples():
    yield
    for name in (WRITEBACK, CATALOG):
        assert_enough(name, 25)
