"""When an invited order is reminded and when it expires: the rules, pure (no clock, no database).

The schedule comes from ``lifecycle`` in ``pipeline.yaml``: reminders ``reminder_days`` after the invitation
(default 2 and 5 days), expiry ``expiry_days`` after it (default 14); a package's override wins over its
integration's, which wins over the defaults. ``reminders: false`` (or ``reminder_days: []``) switches reminders
off; ``expiry_days: 0`` switches expiry off. A reminder due at or after the expiry is never sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from kombo_sync.settings import LifecycleSettings


@dataclass(frozen=True)
class LifecyclePlan:
    """One order's schedule: reminder offsets after the invitation (ascending) and the expiry offset (or None)."""

    reminder_offsets: tuple[timedelta, ...]
    expiry: timedelta | None

    def reminder_due_at(self, invited_at: datetime, number: int) -> datetime:
        """When reminder ``number`` (1 = the first) is due."""
        return invited_at + self.reminder_offsets[number - 1]

    def expires_at(self, invited_at: datetime) -> datetime | None:
        return None if self.expiry is None else invited_at + self.expiry

    def is_expired(self, invited_at: datetime, now: datetime) -> bool:
        expires_at = self.expires_at(invited_at)
        return expires_at is not None and now >= expires_at

    def due_reminder(self, invited_at: datetime, now: datetime, recorded: Iterable[int] = ()) -> int | None:
        """The reminder to send now: the latest one due, unless it or a later one is already recorded (sent,
        being sent, failed or skipped). After a pause (the pipeline stopped) only the latest due one goes out,
        never several at once; nothing is due once the order has expired."""
        if self.is_expired(invited_at, now):
            return None
        due = [number for number in range(1, len(self.reminder_offsets) + 1)
               if self.reminder_due_at(invited_at, number) <= now]  # fmt: skip
        if not due:
            return None
        latest = due[-1]
        if any(number >= latest for number in recorded):
            return None
        return latest


def _offsets(days: Iterable[float], expiry: timedelta | None) -> tuple[timedelta, ...]:
    offsets = sorted({timedelta(days=value) for value in days})
    return tuple(offset for offset in offsets if expiry is None or offset < expiry)


def plan_for(settings: LifecycleSettings, integration_id: str, package_id: str) -> LifecyclePlan:
    """The schedule of an order of ``package_id`` in ``integration_id`` (package override, then integration's,
    then the defaults)."""
    overrides = [
        o for o in (settings.packages.get(package_id), settings.integrations.get(integration_id)) if o
    ]
    reminder_days = next((o.reminder_days for o in overrides if o.reminder_days is not None), None)
    expiry_days = next((o.expiry_days for o in overrides if o.expiry_days is not None), None)
    if reminder_days is None:
        reminder_days = settings.reminder_days
    if expiry_days is None:
        expiry_days = settings.expiry_days
    expiry = timedelta(days=expiry_days) if expiry_days > 0 else None
    reminders = _offsets(reminder_days, expiry) if settings.reminders else ()
    return LifecyclePlan(reminders, expiry)


class Plans:
    """``plan_for`` cached per (integration, package): a run asks for the same few pairs many times."""

    def __init__(self, settings: LifecycleSettings) -> None:
        self.settings = settings
        self._plans: dict[tuple[str, str], LifecyclePlan] = {}

    def __call__(self, integration_id: str, package_id: str) -> LifecyclePlan:
        key = (integration_id, package_id)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = plan_for(self.settings, integration_id, package_id)
        return plan
