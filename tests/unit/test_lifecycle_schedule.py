"""The reminder and expiry rules (kombo_sync.lifecycle.schedule) with a fake clock: defaults, per-package and
per-integration overrides, switched off, and which reminder is due when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kombo_sync.lifecycle.schedule import Plans, plan_for
from kombo_sync.settings import LifecycleSettings, PipelineSettings, SettingsError, load_settings

INVITED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def due_over_time(plan, *, until_days: float, step_hours: float = 1.0) -> list[tuple[int, float]]:  # type: ignore[no-untyped-def]
    """Run the rule hourly like the DAG, recording each reminder as sent: (number, days after invitation)."""
    clock = FakeClock(INVITED)
    sent: list[int] = []
    when: list[tuple[int, float]] = []
    while clock.now < INVITED + timedelta(days=until_days):
        number = plan.due_reminder(INVITED, clock.now, sent)
        if number is not None:
            sent.append(number)
            when.append((number, (clock.now - INVITED) / timedelta(days=1)))
        clock.advance(hours=step_hours)
    return when


def test_defaults_remind_after_2_and_5_days_and_expire_after_14():
    plan = plan_for(LifecycleSettings(), "workday:a", "pkg")
    assert plan.reminder_offsets == (timedelta(days=2), timedelta(days=5))
    assert plan.expires_at(INVITED) == INVITED + timedelta(days=14)
    assert due_over_time(plan, until_days=20) == [(1, 2.0), (2, 5.0)]
    assert not plan.is_expired(INVITED, INVITED + timedelta(days=14) - timedelta(seconds=1))
    assert plan.is_expired(INVITED, INVITED + timedelta(days=14))


def test_nothing_is_due_a_second_before_its_time():
    plan = plan_for(LifecycleSettings(), "i", "p")
    assert plan.due_reminder(INVITED, INVITED + timedelta(days=2) - timedelta(seconds=1)) is None
    assert plan.due_reminder(INVITED, INVITED + timedelta(days=2)) == 1


def test_after_a_pause_only_the_latest_due_reminder_goes_out_and_none_after_expiry():
    plan = plan_for(LifecycleSettings(), "i", "p")
    assert plan.due_reminder(INVITED, INVITED + timedelta(days=6)) == 2  # not 1 and 2 at once
    assert plan.due_reminder(INVITED, INVITED + timedelta(days=6), [2]) is None
    assert plan.due_reminder(INVITED, INVITED + timedelta(days=6), [1]) == 2
    assert plan.due_reminder(INVITED, INVITED + timedelta(days=15)) is None  # expired: never a reminder


def test_package_override_wins_over_integration_override_which_wins_over_defaults():
    settings = LifecycleSettings.model_validate(
        {
            "reminder_days": [2, 5],
            "expiry_days": 14,
            "integrations": {"greenhouse:x": {"reminder_days": [1], "expiry_days": 10}},
            "packages": {"video-1": {"reminder_days": [0.5, 1.5], "expiry_days": 3}},
        }
    )
    assert plan_for(settings, "greenhouse:x", "py").reminder_offsets == (timedelta(days=1),)
    assert plan_for(settings, "greenhouse:x", "py").expiry == timedelta(days=10)
    video = plan_for(settings, "greenhouse:x", "video-1")
    assert video.reminder_offsets == (timedelta(hours=12), timedelta(hours=36))
    assert video.expiry == timedelta(days=3)
    assert due_over_time(video, until_days=5) == [(1, 0.5), (2, 1.5)]
    assert plan_for(settings, "workday:y", "py") == plan_for(LifecycleSettings(), "workday:y", "py")


def test_an_override_that_sets_only_one_knob_inherits_the_other():
    settings = LifecycleSettings.model_validate({"packages": {"p": {"expiry_days": 7}}})
    plan = plan_for(settings, "i", "p")
    assert plan.expiry == timedelta(days=7)
    assert plan.reminder_offsets == (timedelta(days=2), timedelta(days=5))


def test_reminders_off_globally_per_integration_or_per_package_and_expiry_off():
    assert plan_for(LifecycleSettings(reminders=False), "i", "p").reminder_offsets == ()
    assert plan_for(LifecycleSettings(reminder_days=[]), "i", "p").reminder_offsets == ()
    per = LifecycleSettings.model_validate(
        {"integrations": {"quiet": {"reminder_days": []}}, "packages": {"forever": {"expiry_days": 0}}}
    )
    assert plan_for(per, "quiet", "p").reminder_offsets == ()
    assert plan_for(per, "loud", "p").reminder_offsets != ()
    forever = plan_for(per, "i", "forever")
    assert forever.expiry is None and forever.expires_at(INVITED) is None
    assert not forever.is_expired(INVITED, INVITED + timedelta(days=3650))
    assert due_over_time(plan_for(LifecycleSettings(reminders=False), "i", "p"), until_days=20) == []
    assert plan_for(LifecycleSettings(expiry_days=0), "i", "p").expiry is None


def test_reminders_at_or_after_the_expiry_are_dropped_and_duplicates_merged():
    settings = LifecycleSettings(reminder_days=[5, 2, 2, 7, 9], expiry_days=7)
    assert plan_for(settings, "i", "p").reminder_offsets == (timedelta(days=2), timedelta(days=5))


def test_plans_are_cached_per_integration_and_package():
    plans = Plans(LifecycleSettings())
    assert plans("i", "p") is plans("i", "p")


@pytest.mark.parametrize(
    "section",
    [
        {"reminder_days": [0]},
        {"reminder_days": [-1]},
        {"expiry_days": -1},
        {"reminder_days": "2,5"},
        {"packages": {"p": {"reminder_days": [2], "unknown": 1}}},
        {"lease_seconds": 1},
    ],
)
def test_bad_lifecycle_settings_are_refused_naming_the_key(tmp_path, section):
    config = tmp_path / "pipeline.yaml"
    import yaml

    config.write_text(yaml.safe_dump({"lifecycle": section}))
    with pytest.raises(SettingsError, match="lifecycle"):
        load_settings(config)


def test_the_shipped_pipeline_yaml_has_the_documented_defaults():
    shipped = load_settings().lifecycle
    assert shipped == PipelineSettings().lifecycle
    assert (shipped.reminder_days, shipped.expiry_days, shipped.reminders) == ([2.0, 5.0], 14.0, True)
