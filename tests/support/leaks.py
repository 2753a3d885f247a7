"""Searching what a run left behind for planted canaries (secrets and candidate data): every file under the log
folders, texts such as alerts, and Airflow's metadata DB (every XCom value, decoded, and every rendered task
field). A finding names what leaked and where (file and line, XCom key), never the value in full.

Used by tests/integration/test_no_secret_leaks.py; `candidate_data.py` holds the older pattern-only helpers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Canary:
    """A value planted on purpose (an API key, a candidate's e-mail), searched for case-insensitively, also in
    the usual encodings an error message or a URL would give it."""

    label: str
    value: str = field(repr=False)

    def forms(self) -> list[str]:
        from urllib.parse import quote

        forms = {self.value, quote(self.value, safe=""), json.dumps(self.value)[1:-1]}
        return sorted(form for form in forms if form)

    def pattern(self) -> re.Pattern[str]:
        return re.compile("|".join(re.escape(form) for form in self.forms()), re.IGNORECASE)


def mask(value: str) -> str:
    """Enough of a value to recognise it, never all of it: the first 4 characters and the length."""
    return f"{value[:4]}... ({len(value)} chars)"


def _findings(text: str, where: str, canaries: Sequence[Canary]) -> list[str]:
    found = []
    for canary in canaries:
        match = canary.pattern().search(text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{canary.label} [{mask(canary.value)}] in {where} (line {line})")
    return found


def files_under(*roots: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every regular file under these folders (task logs, component logs, whatever their names end in)."""
    skip = [path.resolve() for path in exclude]
    return sorted(
        {
            path
            for root in roots
            if root.exists()
            for path in root.rglob("*")
            if path.is_file() and not any(path.resolve().is_relative_to(s) for s in skip)
        }
    )


def leaks_in_files(
    paths: Iterable[Path], canaries: Sequence[Canary], *, relative_to: Path | None = None
) -> list[str]:
    found: list[str] = []
    for path in paths:
        shown = path.relative_to(relative_to) if relative_to is not None else path
        found += _findings(path.read_bytes().decode(errors="replace"), str(shown), canaries)
    return found


def leaks_in_texts(texts: Iterable[tuple[str, str]], canaries: Sequence[Canary]) -> list[str]:
    """``texts`` are (where, text) pairs: an alert's body, a captured output."""
    found: list[str] = []
    for where, text in texts:
        found += _findings(text, where, canaries)
    return found


def _decoded(value: Any) -> str:
    """An XCom / rendered-field column as text: JSON decoded (strings unescaped) and dumped again unescaped."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode(errors="replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def xcom_texts(metadata_url: str) -> list[tuple[str, str]]:
    """(``xcom DAG/RUN/TASK[MAP] key=KEY``, decoded value) for every XCom in Airflow's metadata DB."""
    engine = sa.create_engine(metadata_url, poolclass=sa.pool.NullPool)
    query = sa.text("SELECT dag_id, run_id, task_id, map_index, key, value FROM xcom")
    try:
        with engine.connect() as conn:
            return [
                (f"xcom {r.dag_id}/{r.run_id}/{r.task_id}[{r.map_index}] key={r.key}", _decoded(r.value))
                for r in conn.execute(query)
            ]
    finally:
        engine.dispose()


def rendered_field_texts(metadata_url: str) -> list[tuple[str, str]]:
    """(``rendered fields DAG/RUN/TASK[MAP]``, decoded fields) for every task instance's rendered fields."""
    engine = sa.create_engine(metadata_url, poolclass=sa.pool.NullPool)
    query = sa.text(
        "SELECT dag_id, run_id, task_id, map_index, rendered_fields, k8s_pod_yaml"
        " FROM rendered_task_instance_fields"
    )
    try:
        with engine.connect() as conn:
            return [
                (
                    f"rendered fields {r.dag_id}/{r.run_id}/{r.task_id}[{r.map_index}]",
                    _decoded(r.rendered_fields) + "\n" + _decoded(r.k8s_pod_yaml or ""),
                )
                for r in conn.execute(query)
            ]
    finally:
        engine.dispose()
