"""Searching what a test run wrote (log files, captured logging, alerts) for candidate data: e-mails, names,
phones. Shared by the scheduled soak (`soak.py`) and the canary test (`tests/integration/test_no_candidate_data.py`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.leaks import mask


def log_files(*roots: Path) -> list[Path]:
    """Every log file under these folders (Airflow's components and task logs end in .log)."""
    return sorted({path for root in roots if root.exists() for path in root.rglob("*.log") if path.is_file()})


def candidate_data_in_files(
    paths: Iterable[Path], patterns: Sequence[re.Pattern[str]], *, relative_to: Path | None = None
) -> list[str]:
    """One finding per file that holds a match of any pattern ("candidate data (PATT... (N chars)) in PATH")."""
    found: list[str] = []
    for path in paths:
        text = path.read_text(errors="replace")
        for pattern in patterns:
            if pattern.search(text):
                shown = path.relative_to(relative_to) if relative_to is not None else path
                # The pattern is a canary: shown masked, never in full.
                found.append(f"candidate data ({mask(pattern.pattern)}) in {shown}")
                break
    return found


def candidate_data_in_texts(
    texts: Iterable[tuple[str, str]], patterns: Sequence[re.Pattern[str]]
) -> list[str]:
    """One finding per (label, text) that holds a match ("candidate data in LABEL")."""
    return [
        f"candidate data in {label}"
        for label, text in texts
        if any(pattern.search(text) for pattern in patterns)
    ]
