"""The soak's duplicate-pair check: both orders invited is right only when one was closed before the other went out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.soak import reordered_after_cancel

T0 = datetime(2026, 12, 5, 23, 31, tzinfo=UTC)


def test_the_twin_invited_after_the_first_was_cancelled_in_the_ats_is_right():
    states = {"first": "cancelled", "twin": "invited"}
    times = {"first": (T0 - timedelta(minutes=4), T0), "twin": (T0 + timedelta(seconds=53), T0)}
    assert reordered_after_cancel("first", "twin", states, times, gone={"first"})
    # Either order of the pair may be the one that was closed.
    assert reordered_after_cancel("twin", "first", states, times, gone={"first"})


def test_the_twin_invited_while_the_first_was_still_active_is_a_double_invitation():
    states = {"first": "cancelled", "twin": "invited"}
    times = {"first": (T0 - timedelta(minutes=4), T0), "twin": (T0 - timedelta(seconds=1), T0)}
    assert not reordered_after_cancel("first", "twin", states, times, gone={"first"})


def test_only_an_order_the_soak_cancelled_or_let_expire_counts_as_closed():
    states = {"first": "cancelled", "twin": "invited"}
    times = {"first": (T0 - timedelta(minutes=4), T0), "twin": (T0 + timedelta(minutes=1), T0)}
    assert not reordered_after_cancel("first", "twin", states, times, gone=set())
    both_invited = {"first": "invited", "twin": "invited"}
    assert not reordered_after_cancel("first", "twin", both_invited, times, gone={"first"})


def test_missing_times_never_excuse_a_pair():
    states = {"first": "cancelled", "twin": "invited"}
    assert not reordered_after_cancel("first", "twin", states, {}, gone={"first"})
    assert not reordered_after_cancel(
        "first", "twin", states, {"first": (None, T0), "twin": (None, T0)}, gone={"first"}
    )
