"""The one backoff rule (`kombo_sync.backoff`) and the places that must agree with it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kombo_sync.backoff import exponential_delay, full_jitter
from kombo_sync.intake.dispatch import retry_delay
from kombo_sync.kombo.client import KomboClient
from kombo_sync.settings import IntakeSettings


def test_exponential_delay_doubles_per_failure_from_base() -> None:
    assert [exponential_delay(60, n) for n in range(4)] == [60, 120, 240, 480]
    assert exponential_delay(0.5, 3) == 4.0


def test_exponential_delay_counts_negative_doublings_as_zero() -> None:
    assert exponential_delay(60, -1) == 60
    assert exponential_delay(60, -5, cap=10) == 10


def test_exponential_delay_cap_bounds_the_result() -> None:
    assert [exponential_delay(0.5, n, cap=4.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert exponential_delay(60, 100, cap=3600) == 3600


def test_exponential_delay_max_doublings_bounds_the_exponent_not_the_result() -> None:
    assert [exponential_delay(60, n, max_doublings=6) for n in (5, 6, 7, 50)] == [1920, 3840, 3840, 3840]
    assert exponential_delay(60, 50, max_doublings=6, cap=1000) == 1000


def test_full_jitter_scales_the_ceiling_by_the_random_part() -> None:
    assert full_jitter(8.0, rng=lambda: 0.25) == 2.0
    assert full_jitter(8.0, rng=lambda: 0.0) == 0.0
    assert 0.0 <= full_jitter(8.0) < 8.0


def test_full_jitter_never_goes_below_at_least() -> None:
    assert full_jitter(8.0, at_least=5.0, rng=lambda: 0.25) == 5.0
    assert full_jitter(8.0, at_least=1.0, rng=lambda: 0.25) == 2.0
    assert full_jitter(0.0, at_least=2.5, rng=lambda: 0.9) == 2.5


@pytest.mark.parametrize("attempts", [0, 1, 2, 3, 7, 30])
def test_intake_retry_delay_is_the_capped_rule(attempts: int) -> None:
    intake = IntakeSettings(retry_backoff_seconds=60, retry_backoff_max_seconds=3600)
    expected = min(60 * 2 ** max(0, attempts - 1), 3600)
    assert retry_delay(intake, attempts) == timedelta(seconds=expected)


def test_kombo_client_backoff_is_full_jitter_over_the_capped_rule() -> None:
    client = KomboClient(
        base_url="http://kombo.invalid/v1", api_key="k", backoff_base=0.5, backoff_cap=4.0, rng=lambda: 0.5
    )
    assert [client.backoff_delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert client.backoff_delay(0, retry_after=3.0) == 3.0
