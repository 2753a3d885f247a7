"""Which warehouse rows a write-back run reads: ``[start, end)`` on ``updated_at``, from the run's kind.

Every input goes through :func:`kombo_sync.runs.as_utc`, so pendulum, stdlib aware, naive and string values
give the same window (a scheduled run's pendulum interval once produced a naive start and failed the run).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from kombo_sync.runs import ASSET_TRIGGERED, MANUAL, SCHEDULED, as_utc

# The widest window: a run for given order ids reads them whatever their date.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def writeback_window(
    *,
    overlap_minutes: int,
    now: datetime,
    data_interval_start: Any = None,
    data_interval_end: Any = None,
    run_type: str | None = None,
    previous_success_end: Any = None,
    max_gap_hours: float = 168,
    manual_lookback_hours: float = 24,
    date_from: str | date | datetime | None = None,
    date_to: str | date | datetime | None = None,
) -> tuple[datetime, datetime]:
    """``[start, end)`` on ``updated_at`` for one run.

    - ``date_from`` / ``date_to`` (manual re-send of a range): exactly that range (whole days for bare dates;
      no ``date_to`` means up to now).
    - A manual or asset-triggered run otherwise, or any run without a data interval: from its data interval's
      start or ``manual_lookback_hours`` ago, whichever is earlier, up to now, so a click on "Trigger" also
      sends results that landed after the last interval.
    - A scheduled run: its data interval widened by the overlap, reaching back to the end of the last
      successful run (at most ``max_gap_hours``) when runs were missed; backfills: their interval plus the
      overlap.
    """
    now = as_utc(now) or now
    start, end = as_utc(date_from), as_utc(date_to, end_of_day=True)
    if start is not None or end is not None:
        if start is None:
            raise ValueError("date_to needs date_from")
        end = end or now
        if end <= start:
            raise ValueError(f"date_to ({end.isoformat()}) must be after date_from ({start.isoformat()})")
        return start, end
    overlap = timedelta(minutes=overlap_minutes)
    interval_start, interval_end = as_utc(data_interval_start), as_utc(data_interval_end)
    if run_type in (MANUAL, ASSET_TRIGGERED) or interval_start is None or interval_end is None:
        lookback = now - timedelta(hours=manual_lookback_hours)
        start = lookback if interval_start is None else min(interval_start, lookback)
        return start - overlap, now
    if run_type == SCHEDULED:
        reach = as_utc(previous_success_end)
        if reach is not None and reach < interval_start:
            interval_start = max(reach, now - timedelta(hours=max_gap_hours))
    return interval_start - overlap, interval_end
