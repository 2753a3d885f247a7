"""How the ops commands print: aligned plain-text tables that fit a terminal, CSV as the console exports it, JSON.

Times are UTC ISO 8601 (`2026-01-05T09:00:00Z`) in tables and JSON; CSV cells are exactly the console's
(`console.app.to_csv`). Nothing here logs: what is printed goes to stdout only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

WIDTH = 120
ELLIPSIS = "…"
GAP = "  "
# No column is cut below this many characters.
KEEP = 4


def iso(value: datetime) -> str:
    """A time as UTC ISO 8601 to the second (the state store keeps UTC; a naive value is UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def text(value: Any) -> str:
    """A cell as a table shows it: UTC ISO times, yes/no, empty for None, one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return iso(value)
    return " ".join(str(value).split())


def clip(value: str, width: int) -> str:
    """`value` cut to `width` characters, the last one an ellipsis when something was cut."""
    if len(value) <= width:
        return value
    return value[: max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def table(
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Mapping[str, Any]],
    *,
    width: int = WIDTH,
    whole: Iterable[str] = (),
) -> str:
    """An aligned table (a header, then one line per row) no wider than `width`: the widest column is cut
    (with an ellipsis) until the table fits, free text first; the `whole` columns (times, ids, counts) only as
    a last resort. Counts are right-aligned."""
    rows = list(rows)
    keys = [key for key, _label in columns]
    labels = [label for _key, label in columns]
    cells = [[text(row.get(key)) for key in keys] for row in rows]
    numbers = [
        bool(rows)
        and all(isinstance(row.get(key), int | float | None) for row in rows)
        and not all(isinstance(row.get(key), bool | None) for row in rows)
        for key in keys
    ]
    widths = [max([len(labels[index]), *(len(line[index]) for line in cells)]) for index in range(len(keys))]
    keep = set(whole)
    budget = width - len(GAP) * (len(keys) - 1)
    while sum(widths) > budget:
        cuttable = [
            index
            for index, key in enumerate(keys)
            if key not in keep and widths[index] > min(len(labels[index]), KEEP)
        ]
        cuttable = cuttable or [index for index in range(len(keys)) if widths[index] > KEEP]
        if not cuttable:
            break
        widths[max(cuttable, key=lambda index: widths[index])] -= 1

    def line(values: Sequence[str], header: bool = False) -> str:
        parts = []
        for index, value in enumerate(values):
            shown = clip(value, widths[index])
            right = numbers[index] and not header
            parts.append(shown.rjust(widths[index]) if right else shown.ljust(widths[index]))
        return GAP.join(parts).rstrip()

    return "\n".join([line(labels, header=True), *(line(values) for values in cells)])


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(item) for item in value]
    return value


def to_json(value: Any) -> str:
    """`value` as indented JSON, times as UTC ISO strings."""
    return json.dumps(_jsonable(value), indent=2, sort_keys=True, default=str)


def to_csv(columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV exactly as the console's export (same header labels, same cells)."""
    from kombo_sync.console.app import to_csv as console_csv

    return console_csv(columns, rows)
