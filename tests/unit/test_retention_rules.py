"""The pieces of retention and erasure that need no database: the salted hash, the erased order's JSON, the
e-mail check of an erasure request, the settings, and "when did an order end" on an in-memory clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kombo_sync.candidate_hash import (
    SALT_ENV,
    CandidateHasher,
    SaltTooShort,
    candidate_hasher,
    matching_hasher,
    normalize_email,
    read_salt,
)
from kombo_sync.housekeeping.retention import InvalidEmail, checked_email, purge
from kombo_sync.settings import PipelineSettings, RetentionSettings, load_settings
from kombo_sync.state.orders import OrderRepository, scrub_order_json
from kombo_sync.state.store import StateStore

SALT = "unit-test-salt-0123456789"


def test_a_short_salt_stops_housekeeping_but_not_the_intake(monkeypatch: pytest.MonkeyPatch) -> None:
    """`generate-me` left in place: the webhook and the intake go on without matching erased orders, and say why."""
    import kombo_sync.candidate_hash as candidate_hash

    errors: list[str] = []
    monkeypatch.setattr(candidate_hash.log, "error", lambda msg, *args: errors.append(msg % args))
    monkeypatch.delenv("AIRFLOW_CONN_KOMBO_ERASURE_SALT", raising=False)
    monkeypatch.setenv(SALT_ENV, "generate-me")
    with pytest.raises(SaltTooShort):
        candidate_hasher(cached=False)
    assert matching_hasher() is None
    assert len(errors) == 1 and "shorter than 16 characters" in errors[0] and "generate-me" not in errors[0]
    monkeypatch.setenv(SALT_ENV, SALT)
    hasher = matching_hasher()
    assert hasher is not None and hasher.email_hash("a@b.c") == CandidateHasher(SALT).email_hash("a@b.c")


def test_the_hash_is_salted_normalised_and_hides_the_salt() -> None:
    hasher = CandidateHasher(SALT)
    digest = hasher.email_hash("  Ada@Example.COM ")
    assert digest == hasher.email_hash("ada@example.com")
    assert digest is not None and len(digest) == 64
    assert digest != CandidateHasher(SALT + "x").email_hash("ada@example.com")
    assert hasher.email_hash("") is None and hasher.email_hash(None) is None
    assert SALT not in repr(hasher) and SALT not in str(hasher)
    assert normalize_email(" A@B.c ") == "a@b.c"
    with pytest.raises(SaltTooShort):
        CandidateHasher("short")


def test_the_salt_comes_from_the_connection_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_KOMBO_ERASURE_SALT", raising=False)
    assert read_salt() is None
    assert candidate_hasher(cached=False) is None
    monkeypatch.setenv(SALT_ENV, SALT)
    assert read_salt() == SALT
    hasher = candidate_hasher(cached=False)
    assert hasher is not None and hasher.email_hash("a@b.c") == CandidateHasher(SALT).email_hash("a@b.c")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_ERASURE_SALT", '{"conn_type": "generic", "password": "from-the-connection-1"}'
    )
    assert read_salt() == "from-the-connection-1"
    monkeypatch.setenv(SALT_ENV, "short")
    monkeypatch.delenv("AIRFLOW_CONN_KOMBO_ERASURE_SALT")
    with pytest.raises(SaltTooShort) as short:
        read_salt()
    assert "short" not in str(short.value).replace("shorter", "")


def test_an_erased_order_json_keeps_ids_only() -> None:
    order = {
        "id": "o1",
        "package_id": "p1",
        "status": "OPEN",
        "candidate": {"remote_id": "c1", "email": "a@b.c", "first_name": "Ada", "phone": "+1", "x": "y"},
        "application": {"remote_id": "app-1", "notes": "free text"},
        "job": {
            "remote_id": "j1",
            "name": "Engineer",
            "hiring_team": [{"email": "r@x.y"}],
            "location": {"city": "X"},
        },
        "some_new_field": {"email": "someone@x.y"},
    }
    assert scrub_order_json(order) == {
        "id": "o1",
        "package_id": "p1",
        "status": "OPEN",
        "candidate": {"remote_id": "c1"},
        "application": {"remote_id": "app-1"},
        "job": {"remote_id": "j1", "name": "Engineer"},
        "erased": True,
    }
    assert scrub_order_json(None) == {"erased": True}


@pytest.mark.parametrize(
    ("given", "problem"),
    [("", "no e-mail"), ("   ", "no e-mail"), ("grace.example.com", "not an e-mail"), ("a b@c.d", "not an e-mail"),
     ("a@b@c", "not an e-mail")],
)  # fmt: skip
def test_an_erasure_request_names_the_problem_not_the_address(given: str, problem: str) -> None:
    with pytest.raises(InvalidEmail) as invalid:
        checked_email(given)
    assert problem in str(invalid.value)
    if given.strip():
        assert given.strip() not in str(invalid.value)
    assert checked_email("  grace@hopper.example ") == "grace@hopper.example"


def test_retention_settings_defaults_and_the_shipped_file() -> None:
    defaults = RetentionSettings()
    assert (defaults.candidate_data_days, defaults.integration_deleted_days) == (90, 30)
    assert defaults.salt_conn_id == "kombo_erasure_salt"
    shipped = load_settings()
    assert shipped.retention == defaults  # pipeline.yaml documents the defaults
    with pytest.raises(ValidationError):
        PipelineSettings.model_validate({"retention": {"candidate_data_days": -1}})
    with pytest.raises(ValidationError):
        PipelineSettings.model_validate({"retention": {"unknown_knob": 1}})


def test_the_yaml_knobs_are_read(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"retention": {"candidate_data_days": 30, "integration_deleted_days": 7}}))
    settings = load_settings(path)
    assert (settings.retention.candidate_data_days, settings.retention.integration_deleted_days) == (30, 7)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_retention_clock_is_the_stores(tmp_path: Path) -> None:
    """The rules read time from the store's injectable clock: moving it is how the time passes."""
    clock = Clock()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    store.migrate()
    repo = OrderRepository(store)
    order = {"id": "o1", "integration_id": "i", "package_id": "p", "candidate": {"email": "a@b.c"}}
    repo.record_order(order, "webhook")
    repo.mark_cancelled("o1")
    settings = RetentionSettings(candidate_data_days=10)
    clock.now += timedelta(days=10) - timedelta(seconds=1)
    assert purge(store, settings, None)["retention"]["orders_erased"] == 0
    clock.now += timedelta(seconds=1)
    assert purge(store, settings, None)["retention"]["orders_erased"] == 1
    erased = repo.get("o1")
    assert erased is not None and erased.erased_at == clock.now and erased.candidate_email is None
    store.dispose()


def test_the_housekeeping_report_fails_finally_naming_the_step() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from kombo_sync.housekeeping.tasks import report_task

    purged = {
        "retention": {"orders_erased": 3},
        "integration_deleted": {"orders_erased": 2},
        "integrations_erased": ["x"],
    }
    with pytest.raises(AirflowFailException, match="^purge: the task failed"):
        report_task(None, {"orders_erased": 0})
    with pytest.raises(AirflowFailException, match="^erase: the task failed"):
        report_task(purged, None)
    report = report_task(purged, {"orders_erased": 1})
    assert report.pop("alerts") == {"enabled": False, "kinds": {}}
    assert report == {
        "retention_orders_erased": 3,
        "integration_orders_erased": 2,
        "integrations_erased": 1,
        "requested_orders_erased": 1,
    }


def test_the_housekeeping_params() -> None:
    from kombo_sync.housekeeping.tasks import DEFAULT_REASON, _params
    from kombo_sync.runs import ParamError, RunInfo

    def read(**params: object) -> tuple[list[str], str, bool]:
        return _params(RunInfo("kombo_housekeeping", "manual__1", "manual", "erase", 1, None, None, params))

    assert read() == ([], DEFAULT_REASON, False)
    assert read(
        erase_emails="a@b.example, c@d.example\na@b.example", erase_reason=" ticket 1 ", dry_run="true"
    ) == (
        ["a@b.example", "c@d.example"],
        "ticket 1",
        True,
    )
    for bad in (
        {"erase_emails": 5},
        {"erase_reason": ["x"]},
        {"erase_reason": "a\x00b"},
        {"dry_run": "maybe"},
    ):
        with pytest.raises(ParamError) as error:
            read(**bad)
        assert str(error.value).startswith(next(iter(bad)))
