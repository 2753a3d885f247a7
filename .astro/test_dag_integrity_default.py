"""Test the validity of all DAGs: Astro's DAG integrity test (`astro dev parse`, `astro dev pytest`).

This is the Astro CLI's Airflow 3 scaffold of `.astro/test_dag_integrity_default.py`, adapted so that it also runs
under this project's pytest (`pytest .astro/test_dag_integrity_default.py`, with the root conftest's private
AIRFLOW_HOME) and inside the image:

- `DagBag` comes from `airflow.dag_processing.dagbag` (its Airflow 3 home) and reads `[core] dags_folder`.
- The scaffold's stand-ins for parse-time lookups (connections, variables, unset environment variables) are kept,
  but applied only while the DagBag is filled, instead of being monkeypatched for the whole pytest session.
  The project's own rule is stricter (no lookups at parse time; tests/dags/test_dag_integrity.py), this test
  only answers Astro's question: does every file import?
- No `initdb()`: parsing needs no metadata database, and the project's tests must not write to one at import.
- Files listed in `.astro/dag_integrity_exceptions.txt` (one path relative to AIRFLOW_HOME per line) may fail.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

EXCEPTIONS_FILE = Path(__file__).resolve().parent / "dag_integrity_exceptions.txt"
_NO_DEFAULT = object()


class _MockedJson(dict):  # type: ignore[type-arg]
    """What a JSON Variable looks like while parsing: any key gives a placeholder."""

    def __getitem__(self, key: Any) -> Any:
        return "MOCKED_KEY_VALUE"


def _getenv(key: str, default: Any = None) -> Any:
    value = os.environ.get(key)
    if value:
        return value
    if default is not None or key == "JENKINS_HOME":
        return default
    return f"MOCKED_{key.upper()}_VALUE"


def _variable_get(key: str, default: Any = _NO_DEFAULT, deserialize_json: bool = False, **_: Any) -> Any:
    if default is not _NO_DEFAULT:
        return default
    return _MockedJson() if deserialize_json else "NON_DEFAULT_MOCKED_VARIABLE_VALUE"


def _get_connection(cls: Any, conn_id: str, *args: Any, **kwargs: Any) -> Any:
    from airflow.sdk import Connection

    return Connection(conn_id=conn_id, conn_type="generic")


@contextlib.contextmanager
def _parse_time_stand_ins() -> Iterator[None]:
    """Connections, Variables and unset environment variables answer with placeholders while parsing."""
    from airflow.sdk import BaseHook, Variable

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(os, "getenv", _getenv))
        stack.enter_context(mock.patch.object(Variable, "get", staticmethod(_variable_get)))
        stack.enter_context(mock.patch.object(BaseHook, "get_connection", classmethod(_get_connection)))
        logger = logging.getLogger("airflow")
        disabled, logger.disabled = logger.disabled, True
        try:
            yield
        finally:
            logger.disabled = disabled


def _relative(path: str) -> str:
    return os.path.relpath(path, os.environ.get("AIRFLOW_HOME", os.getcwd()))


def get_import_errors() -> list[tuple[str, str]]:
    """(file relative to AIRFLOW_HOME, error or "No import errors") for every DAG file."""
    from airflow.dag_processing.dagbag import DagBag

    with _parse_time_stand_ins():
        dag_bag = DagBag()  # Airflow 3.3: examples come from their own bundle, never from this folder
    result = [(_relative(path), str(error).strip()) for path, error in dag_bag.import_errors.items()]
    for dag in dag_bag.dags.values():
        if dag.fileloc not in dag_bag.import_errors:
            result.append((_relative(dag.fileloc), "No import errors"))
    return sorted(set(result))


def _exceptions() -> set[str]:
    if not EXCEPTIONS_FILE.exists():
        return set()
    return {line.strip() for line in EXCEPTIONS_FILE.read_text().splitlines() if line.strip()}


_RESULTS = get_import_errors()


@pytest.mark.parametrize("rel_path, rv", _RESULTS, ids=[path for path, _ in _RESULTS])
def test_file_imports(rel_path: str, rv: str) -> None:
    """Test for import errors on a file."""
    if rv != "No import errors" and rel_path not in _exceptions():
        raise Exception(f"{rel_path} failed to import with message \n {rv}")


def test_some_dag_was_found() -> None:
    """An empty or misconfigured dags folder would make the parametrized test vanish: fail instead."""
    assert _RESULTS, "no DAG file found in [core] dags_folder"
