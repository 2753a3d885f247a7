"""Hostile settings and bootstrap files: `load_settings` either returns settings every job can use or raises
`SettingsError` naming the file, the key and the problem; the bootstrap steps raise a ValueError naming the
file. Never a UnicodeDecodeError, RecursionError, TypeError or an OverflowError later, in a job."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from kombo_sync.deploy.bootstrap import init_env, write_passwords
from kombo_sync.settings import DEFAULT_CONFIG_PATH, PipelineSettings, SettingsError, load_settings
from tests.support.fuzz import assert_enough, fuzz_settings, hostile_text, json_values, tried

pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisWarning"
)  # long reprs, on purpose
PROJECT_DOCUMENT: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
_files = itertools.count()
NOW = datetime(2026, 1, 5, tzinfo=UTC)


def _leaf_paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        return [path for key, item in value.items() for path in _leaf_paths(item, (*prefix, str(key)))]
    return [prefix] if prefix else []


LEAVES = _leaf_paths(PROJECT_DOCUMENT)


def _file(tmp_path_factory: pytest.TempPathFactory, body: bytes) -> Path:
    path = tmp_path_factory.getbasetemp() / f"pipeline-{next(_files)}.yaml"  # new path: load_settings caches
    path.write_bytes(body)
    return path


def _usable(settings: PipelineSettings) -> None:
    """What the jobs compute from the durations does not overflow."""
    intake, writeback, alerts = settings.intake, settings.writeback, settings.alerts
    (
        NOW
        - timedelta(minutes=intake.overlap_minutes + intake.lookback_minutes)
        - timedelta(hours=intake.max_gap_hours)
    )
    NOW + timedelta(seconds=intake.lease_seconds + intake.retry_backoff_max_seconds + writeback.lease_seconds)
    NOW - timedelta(hours=writeback.max_gap_hours + writeback.manual_lookback_hours)
    NOW - timedelta(minutes=writeback.overlap_minutes + alerts.repeat_minutes)
    NOW - timedelta(minutes=alerts.thresholds.order_not_invited_minutes)
    NOW + timedelta(seconds=writeback.max_send_seconds or 0)


def _load(path: Path) -> None:
    try:
        settings = load_settings(path)
    except SettingsError as exc:
        assert str(path) in str(exc)
        return
    _usable(settings)


@fuzz_settings(max_examples=150)
@given(
    leaf=st.sampled_from(LEAVES),
    value=json_values
    | st.sampled_from([".inf", "-.inf", ".nan", "1e400", "9" * 5000, "[" * 3000, "!!binary AAAA"]),
    raw=st.booleans(),
)
@example(leaf=("writeback", "max_gap_hours"), value=".inf", raw=True)  # OverflowError in the window
@example(leaf=("intake", "lease_seconds"), value=10**30, raw=False)  # OverflowError in a claim
@example(leaf=("intake", "page_size"), value="9" * 5000, raw=True)  # ValueError: 4300 digits
@example(leaf=("catalog",), value="[" * 3000, raw=True)  # RecursionError
def test_one_key_of_the_project_file_replaced(tmp_path_factory, leaf, value, raw):
    tried("settings: one key of pipeline.yaml replaced by a hostile value")
    document = json.loads(json.dumps(PROJECT_DOCUMENT))
    parent = document
    for part in leaf[:-1]:
        parent = parent[part]
    parent[leaf[-1]] = "__HOSTILE__"
    text = yaml.safe_dump(document)
    if raw and isinstance(value, str):
        body = text.replace("__HOSTILE__", value)
    else:
        try:
            body = text.replace("__HOSTILE__", json.dumps(value, default=str))  # JSON is YAML
        except ValueError:
            body = text.replace("__HOSTILE__", "null")
    _load(_file(tmp_path_factory, body.encode("utf-8", "surrogatepass")))


@fuzz_settings(max_examples=100)
@given(
    body=st.binary(max_size=120)
    | hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass"))
    | st.sampled_from(
        [
            b"\xff\xfeintake: {}",
            b"- 1\n- 2",
            b"intake:\n  integrations:\n    x: {channel: fax}",
            b"a: &a [*a]",
        ]
    )
)
def test_arbitrary_settings_files(tmp_path_factory, body):
    tried("settings: arbitrary bytes as pipeline.yaml")
    _load(_file(tmp_path_factory, body))


@fuzz_settings(max_examples=80)
@given(body=st.binary(max_size=200) | hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass")))
@example(body=b"POSTGRES_PASSWORD=generate-me\n\xff")  # UnicodeDecodeError
def test_bootstrap_env_example(tmp_path_factory, body):
    tried("bootstrap: arbitrary .env.example")
    folder = tmp_path_factory.mktemp("env")
    (folder / ".env.example").write_bytes(body + b"\nAIRFLOW_FERNET_KEY=generate-me\n")
    try:
        generated = init_env(folder / ".env.example", folder / ".env")
    except ValueError as exc:
        assert ".env.example" in str(exc)
        return
    assert "AIRFLOW_FERNET_KEY" in generated
    assert (
        "generate-me"
        not in (folder / ".env")
        .read_text(encoding="utf-8", errors="replace")
        .split("AIRFLOW_FERNET_KEY=", 1)[1]
    )


@fuzz_settings(max_examples=80)
@given(
    existing=st.binary(max_size=80)
    | json_values.map(lambda value: json.dumps(value, default=str).encode())
    | st.sampled_from([b'["admin"]', b"null", b'{"admin": 1}', b"\xff", b"[" * 3000]),
    password=hostile_text.filter(lambda text: text.strip() != ""),
)
@example(existing=b'["admin"]', password="pw")  # TypeError: list indices
def test_bootstrap_password_file(tmp_path_factory, existing, password):
    tried("bootstrap: arbitrary password file")
    path = tmp_path_factory.mktemp("auth") / "passwords.json"
    path.write_bytes(existing)
    try:
        write_passwords(
            path, user="admin", password=password.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        )
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert "admin" in json.loads(path.read_text())


@pytest.fixture(scope="module", autouse=True)
def _enough_examples():
    yield
    assert_enough("settings: one key of pipeline.yaml replaced by a hostile value", 150)
    assert_enough("settings: arbitrary bytes as pipeline.yaml", 100)
    assert_enough("bootstrap: arbitrary .env.example", 80)
    assert_enough("bootstrap: arbitrary password file", 80)
