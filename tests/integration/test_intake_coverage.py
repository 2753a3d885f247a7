"""Intake backfills read each past window once: a finished poll's span is kept per integration, and a backfill
run whose window lies inside it skips that integration (Kombo's listing has no upper bound)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kombo_sync.intake import poll_orders
from kombo_sync.intake.window import KIND_INTERVAL, PollWindow
from kombo_sync.state.coverage import Coverage, PollCoverage, merged
from tests.integration.intake_helpers import (
    intake_kombo_client,
    make_settings,
    new_order,
    order_states,
    register,
)

T = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def span(start_minutes: int, end_minutes: int) -> Coverage:
    return Coverage("i", T + timedelta(minutes=start_minutes), T + timedelta(minutes=end_minutes))


def test_spans_merge_when_they_touch_and_the_newer_wins_otherwise():
    assert merged(None, span(0, 10)) == span(0, 10)
    assert merged(span(0, 10), span(5, 20)) == span(0, 20)
    assert merged(span(0, 10), span(10, 20)) == span(0, 20)
    assert merged(span(5, 20), span(0, 8)) == span(0, 20)
    assert merged(span(0, 10), span(30, 40)) == span(30, 40)  # a gap: what lies between is unknown
    assert merged(span(30, 40), span(0, 10)) == span(30, 40)
    assert span(0, 20).covers(T + timedelta(minutes=1), T + timedelta(minutes=20))
    assert not span(0, 20).covers(T - timedelta(minutes=1), T + timedelta(minutes=5))
    assert not span(0, 20).covers(T, T + timedelta(minutes=21))


def test_coverage_is_recorded_and_merged_in_the_store(state_store):
    repo = PollCoverage(state_store)
    repo.record("i", T, T + timedelta(minutes=10))
    repo.record("i", T + timedelta(minutes=5), T + timedelta(minutes=30))
    repo.record("j", T, T + timedelta(minutes=1))
    assert repo.get_many(["i", "j", "k"]) == {
        "i": Coverage("i", T, T + timedelta(minutes=30)),
        "j": Coverage("j", T, T + timedelta(minutes=1)),
    }


def _listing_requests(sandbox) -> int:
    return sum(1 for r in sandbox.admin.requests(path_prefix="/v1/assessment/orders") if r["method"] == "GET")


def test_a_backfill_reads_a_covered_window_once(state_store, state_clock, kombo_sandbox):
    (integration,) = register(state_store, kombo_sandbox)
    settings = make_settings(overlap_minutes=15)
    client = intake_kombo_client(kombo_sandbox)
    now = state_clock.current = datetime.now(UTC)
    day_start = now - timedelta(days=1)
    orders = [
        new_order(kombo_sandbox, integration, created_at=day_start + timedelta(hours=h))["id"]
        for h in (1, 5, 9)
    ]
    hourly = [
        PollWindow(day_start + timedelta(hours=h) - timedelta(minutes=15), day_start + timedelta(hours=h + 1), KIND_INTERVAL)
        for h in range(12)
    ]  # fmt: skip
    kombo_sandbox.admin.clear_requests()
    summaries = [poll_orders(state_store, client, settings, window, skip_covered=True) for window in hourly]
    # The first run reads everything since its start (and records the span up to now); the other 11 skip.
    assert [s["integrations_covered"] for s in summaries] == [0] + [1] * 11
    assert _listing_requests(kombo_sandbox) == 1
    assert set(order_states(state_store)) == set(orders)

    # Not for scheduled runs (skip_covered=False), and `repoll` makes a backfill read again.
    kombo_sandbox.admin.clear_requests()
    poll_orders(state_store, client, settings, hourly[3])
    assert _listing_requests(kombo_sandbox) == 1


def test_a_failed_or_dry_poll_covers_nothing(state_store, state_clock, kombo_sandbox):
    (integration,) = register(state_store, kombo_sandbox)
    settings = make_settings()
    now = state_clock.current = datetime.now(UTC)
    window = PollWindow(now - timedelta(hours=3), now - timedelta(hours=2), KIND_INTERVAL)
    poll_orders(
        state_store, intake_kombo_client(kombo_sandbox), settings, window, dry_run=True, skip_covered=True
    )
    assert PollCoverage(state_store).get_many([integration]) == {}
    kombo_sandbox.admin.set_knobs(error_rate=1.0)
    try:
        failed = poll_orders(
            state_store, intake_kombo_client(kombo_sandbox), settings, window, skip_covered=True
        )
    finally:
        kombo_sandbox.admin.set_knobs(error_rate=0.0)
    assert integration in failed["integrations_failed"]
    assert PollCoverage(state_store).get_many([integration]) == {}
