"""Which orders a poll asks Kombo for: ``created_after`` from the run's data interval, with a safety overlap.

Kombo's ``GET /assessment/orders`` filters on ``created_after`` only (no upper bound, and orders carry no
creation time), so a window is a lower bound: a backfill over a past range asks again for everything created
since that range began minus the overlap. Recording is idempotent and invitations are claimed, so asking again
changes nothing already done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kombo_sync.settings import IntakeSettings

KIND_INTERVAL = "interval"  # a scheduled, backfill or dated manual run: its data interval
KIND_LOOKBACK = "lookback"  # no data interval (manual without a date, woken by the webhook)

SCHEDULED = "scheduled"


@dataclass(frozen=True)
class PollWindow:
    """Ask Kombo for open orders created on or after ``created_after``; ``until`` is informational."""

    created_after: datetime
    until: datetime | None
    kind: str

    def describe(self) -> str:
        until = self.until.isoformat() if self.until else "now"
        return f"{self.kind} window: created_after {self.created_after.isoformat()} (interval end {until})"


def poll_window(
    settings: IntakeSettings,
    *,
    now: datetime,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    run_type: str | None = None,
    previous_success_end: datetime | None = None,
) -> PollWindow:
    """The window of one intake run.

    - With a data interval: ``data_interval_start - overlap``. A *scheduled* run that follows missed or
      failed runs reaches back to the end of the last successful run's interval (minus the overlap), at most
      ``max_gap_hours``, so an outage loses nothing (the first scheduled run reaches back ``lookback_minutes``);
      backfills and dated manual runs poll exactly their range.
    - Without one (asset-triggered, manual without a logical date): ``now - lookback - overlap``.
    """
    overlap = timedelta(minutes=settings.overlap_minutes)
    if data_interval_start is None or run_type == "asset_triggered":
        return PollWindow(
            created_after=now - timedelta(minutes=settings.lookback_minutes) - overlap,
            until=None,
            kind=KIND_LOOKBACK,
        )
    start = data_interval_start
    if run_type == SCHEDULED:
        # The first scheduled run has no predecessor: it looks back like an undated run would.
        reach = previous_success_end or now - timedelta(minutes=settings.lookback_minutes)
        if reach < start:
            start = max(reach, now - timedelta(hours=settings.max_gap_hours))
    return PollWindow(created_after=start - overlap, until=data_interval_end, kind=KIND_INTERVAL)
