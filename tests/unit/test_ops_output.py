"""The ops commands' table, time and JSON formatting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from kombo_sync.ops.output import ELLIPSIS, clip, iso, table, to_json

COLUMNS = (("id", "Order"), ("message", "Message"), ("attempts", "Tries"), ("at", "When"))


def test_a_wide_table_is_cut_to_width_free_text_first() -> None:
    rows = [
        {"id": "ord-1", "message": "x" * 300, "attempts": 3, "at": datetime(2026, 1, 5, 9, 0, tzinfo=UTC)},
        {"id": "ord-22", "message": "short", "attempts": 12, "at": None},
    ]
    lines = table(COLUMNS, rows, width=60, whole={"id", "attempts", "at"}).splitlines()
    assert max(len(line) for line in lines) <= 60
    assert lines[0].split() == ["Order", "Message", "Tries", "When"]
    assert lines[1].startswith("ord-1 ") and f"x{ELLIPSIS}" in lines[1]
    assert lines[1].endswith("2026-01-05T09:00:00Z")  # a kept column is whole
    # Counts right-aligned under their header.
    tries = lines[0].index("Tries")
    assert lines[1][tries : tries + 5] == "    3" and lines[2][tries : tries + 5] == "   12"
    assert len(table(COLUMNS, rows, width=10**6).splitlines()[1]) > 300  # --wide cuts nothing


def test_cells_are_one_line_and_times_utc_iso() -> None:
    rows = [{"id": "a\nb", "message": None, "attempts": 0, "at": datetime(2026, 1, 5, 10, 0)}]
    line = table(COLUMNS, rows).splitlines()[1]
    assert line.startswith("a b ") and "2026-01-05T10:00:00Z" in line
    local = datetime(2026, 1, 5, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iso(local) == "2026-01-05T09:00:00Z"
    assert json.loads(to_json({"at": local, "n": [1]})) == {"at": "2026-01-05T09:00:00Z", "n": [1]}
    assert clip("abcdef", 4) == f"abc{ELLIPSIS}" and clip("abc", 4) == "abc"


def test_the_command_line_triggers_the_consoles_writeback_dag() -> None:
    from kombo_sync.console.security import WRITEBACK_DAG_ID
    from kombo_sync.ops import console

    assert console.WRITEBACK_DAG_ID == WRITEBACK_DAG_ID
