"""The reconcile rule for one invited order (pure; a fixed clock decides whether a send is still in flight)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kombo_sync.reconcile.decide import (
    ALREADY_WRITTEN,
    AMBIGUOUS,
    CANCEL,
    IN_FLIGHT,
    NOT_LISTED,
    REASON_CANCELLED,
    REASON_COMPLETED_ELSEWHERE,
    REASON_INTEGRATION_DELETED,
    REASON_REJECTED,
    RESULT_LANDED,
    STILL_OPEN,
    UNKNOWN_STATUS,
    ResultVersion,
    decide,
)

NOW = datetime(2026, 11, 30, 3, 30, tzinfo=UTC)


def version(
    payload_hash: str = "h1",
    state: str = "pending",
    status: str | None = "COMPLETED",
    maybe_applied: bool = False,
    lease_expires_at: datetime | None = None,
) -> ResultVersion:
    return ResultVersion(payload_hash, state, status, maybe_applied, lease_expires_at)


@pytest.mark.parametrize(
    ("kombo_status", "reason"),
    [
        ("CANCELLED", REASON_CANCELLED),
        ("REJECTED", REASON_REJECTED),
        ("COMPLETED", REASON_COMPLETED_ELSEWHERE),
    ],
)
def test_an_order_that_left_open_without_us_is_cancelled_with_its_reason(
    kombo_status: str, reason: str
) -> None:
    decision = decide(kombo_status, [], now=NOW)
    assert (decision.outcome, decision.reason) == (CANCEL, reason)
    # A result we hold but never possibly sent (definite errors only) does not make it ours.
    assert decide(kombo_status, [version(status=kombo_status)], now=NOW).outcome == CANCEL


def test_an_open_order_is_left_alone_and_an_unlisted_one_too() -> None:
    assert decide("OPEN", [version(maybe_applied=True)], now=NOW).outcome == STILL_OPEN
    assert decide(None, [], now=NOW).outcome == NOT_LISTED
    assert decide("ARCHIVED", [], now=NOW).outcome == UNKNOWN_STATUS  # a value Kombo may add one day


def test_kombo_holding_one_of_our_versions_is_a_lost_reply_recorded_sent() -> None:
    versions = [
        version("old", state="superseded", status="CANCELLED", maybe_applied=True),
        version("new", state="dead", status="COMPLETED", maybe_applied=True),
    ]
    decision = decide("COMPLETED", versions, now=NOW)
    assert (decision.outcome, decision.landed_hash) == (RESULT_LANDED, "new")
    assert decide("CANCELLED", versions, now=NOW).landed_hash == "old"


def test_two_versions_that_may_be_there_cannot_be_told_apart() -> None:
    versions = [version("a", maybe_applied=True), version("b", state="not_writable", maybe_applied=True)]
    assert decide("COMPLETED", versions, now=NOW).outcome == AMBIGUOUS


def test_a_send_whose_lease_is_live_is_left_to_the_writeback_and_an_expired_one_counts_as_maybe() -> None:
    sending = version("s", state="sending", lease_expires_at=NOW + timedelta(seconds=1))
    assert decide("CANCELLED", [sending], now=NOW).outcome == IN_FLIGHT
    later = NOW + timedelta(seconds=2)
    decision = decide("COMPLETED", [sending], now=later)  # the worker died mid-send: it may have landed
    assert (decision.outcome, decision.landed_hash) == (RESULT_LANDED, "s")
    assert decide("CANCELLED", [sending], now=later).outcome == CANCEL


def test_a_final_result_delivered_meanwhile_ends_the_question() -> None:
    assert decide("CANCELLED", [version(state="sent")], now=NOW).outcome == ALREADY_WRITTEN


def test_a_deleted_integration_cancels_without_asking_kombo() -> None:
    decision = decide(None, [], now=NOW, integration_deleted=True)
    assert (decision.outcome, decision.reason) == (CANCEL, REASON_INTEGRATION_DELETED)
