"""The reconcile DAG's report step: the counts per outcome, and a final (not retried) failure that names what
failed and says the next run repairs it."""

from __future__ import annotations

import re

import pytest
from airflow.sdk.exceptions import AirflowFailException

from kombo_sync.reconcile.tasks import REPORT_KEYS, report_task

SUMMARY = {
    "dry_run": False,
    "checked": 7,
    "still_open": 4,
    "cancel": 2,
    "cancelled": 2,
    "result_landed": 1,
    "revocations": {"revoked": 1, "already_revoked": 0, "not_revocable": 1},
    "integrations_failed": {},
    "revoke_failed": 0,
    "revoke_errors": [],
}


def test_the_report_counts_every_outcome() -> None:
    report = report_task(SUMMARY)
    assert report.pop("alerts") == {"enabled": False, "kinds": {}}  # no alert channel in the default settings
    assert set(report) == {*REPORT_KEYS, "dry_run", "revocations"}
    assert (report["checked"], report["cancelled"], report["result_landed"], report["not_checked"]) == (
        7,
        2,
        1,
        0,
    )
    assert report["revocations"] == {"revoked": 1, "not_revocable": 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (None, "reconcile: the task failed"),
        (
            {"integrations_failed": {"workday:a": "INTEGRATION.INACTIVE: inactive"}},
            "1 integration(s) could not",
        ),
        (
            {"revoke_failed": 1, "revoke_errors": [{"order_id": "o-1", "error": "platform: HTTP 503 [503]"}]},
            "1 invitation(s) could not be revoked (first: order o-1",
        ),
    ],
)
def test_a_deliberate_failure_is_final_and_says_the_next_run_repairs_it(changes, message) -> None:  # type: ignore[no-untyped-def]
    summary = None if changes is None else {**SUMMARY, **changes}
    with pytest.raises(AirflowFailException, match=re.escape(message)) as failure:
        report_task(summary)
    assert "next run" in str(failure.value)
