"""Shared pieces of the hostile-input fuzz tests (tests/*/test_fuzz_*.py): settings, strategies and counts.

Every fuzz test calls `tried(name)` once per example; the session prints the counts at the end
(`pytest_terminal_summary` in tests/conftest.py) and each module asserts its own minimum (`assert_enough`), so a
strategy that silently stops generating fails instead of passing on a handful of cases.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

COUNTS: Counter[str] = Counter()


def tried(name: str) -> None:
    COUNTS[name] += 1


def assert_enough(name: str, minimum: int) -> None:
    """At least `minimum` examples of `name` were tried, unless its test did not run at all (deselected with
    `-k`, or skipped): a test that ran calls `tried` for every example, so a count of zero means it never ran."""
    count = COUNTS[name]
    assert count == 0 or count >= minimum, (
        f"{name}: only {count} examples tried (at least {minimum} expected)"
    )


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible (derandomized) and without a deadline: the machine is shared and slow at times."""
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )


class DeepList(list):  # type: ignore[type-arg]
    """A list nested `depth` levels, printed short (Hypothesis would recurse printing a failing example)."""

    def __init__(self, depth: int) -> None:
        value: list = []  # type: ignore[type-arg]
        for _ in range(depth - 1):
            value = [value]
        super().__init__([value])
        self.depth = depth

    def __repr__(self) -> str:
        return f"deep_list({self.depth})"

    def _repr_pretty_(self, printer, cycle) -> None:  # type: ignore[no-untyped-def]
        printer.text(repr(self))


def deep_list(depth: int) -> list:  # type: ignore[type-arg]
    return DeepList(depth)


SPECIAL_TEXT = [
    "",
    "   ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202eevil.exe",  # right-to-left override
    "مرحبا",
    "😀🏳️‍🌈",
    "e\u0301",  # combining accent
    "\ufeffBOM",
    "NULL",
    "null",
    "None",
    "NaN",
    "Infinity",
    "-1",
    "1e309",
    "0x10",
    "2026-13-45",
    "2026-01-05T25:61:00",
    "9999-12-31",
    "0001-01-01",
    "x" * 5000,
    "é" * 20_000,
    "[" * 3000,
    "{" * 3000,
    '{"a": ' * 100 + "1" + "}" * 100,
    "'; DROP TABLE orders; --",
    "%s %(x)s {0} :window_start",
]
hostile_text = st.text(max_size=30) | st.sampled_from(SPECIAL_TEXT)
hostile_bytes = st.binary(max_size=20) | st.sampled_from(
    [b"\xff\xfe", b"\x00", "é".encode("latin-1"), b"\xed\xa0\x80", "ok".encode("utf-16")]
)
hostile_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included
    st.sampled_from(
        [
            Decimal("NaN"),
            Decimal("Infinity"),
            Decimal("-Infinity"),
            Decimal("1E+999999"),
            Decimal("1E-999999"),
            Decimal("-0"),
            Decimal("36123.000"),
            np.int64(2**63 - 1),
            np.float64("nan"),
            np.float32(1e38),
            math.pi,
            -0.0,
            1e308,
            2**63,
        ]
    ),
)
naive_or_aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.none() | st.just(UTC)
)
hostile_times = st.one_of(
    naive_or_aware,
    naive_or_aware.map(lambda value: value.replace(tzinfo=timezone(timedelta(hours=14)))),
    st.dates(),
    st.builds(pd.Timestamp, st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1))),
    st.sampled_from(
        [pd.NaT, "2026-01-05", "2026-01-05T08:00:00Z", "2026-01-05 08:00:00+05:30", date(1, 1, 1)]
    ),
)
missing = st.sampled_from([None, float("nan"), pd.NA, pd.NaT, np.nan])
json_scalars = st.none() | st.booleans() | hostile_numbers | hostile_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=15,
)
hostile_values = st.one_of(
    hostile_text,
    hostile_bytes,
    hostile_numbers,
    hostile_times,
    missing,
    st.booleans(),
    json_values,
    st.sampled_from([deep_list(70), deep_list(5000), bytearray(b"\xff"), memoryview(b"ab"), object()]),
)
