"""IntegrationRepository on SQLite and PostgreSQL: the registry fed by webhooks, bootstrap and admins."""

from __future__ import annotations

from typing import Any

import pytest

from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.store import StateStore


@pytest.fixture
def registry(state_store: StateStore) -> IntegrationRepository:
    return IntegrationRepository(state_store)


def test_upsert_creates_then_refreshes_without_erasing(
    registry: IntegrationRepository, state_clock: Any
) -> None:
    created_at = state_clock()
    assert registry.upsert(
        "personio:CBNM", source="webhook", customer_key="36123", organization_name="Acme, Inc."
    )
    state_clock.advance(10)
    assert not registry.upsert(
        "personio:CBNM", source="bootstrap", setup_status="COMPLETED", qa_status="PASSED"
    )
    record = registry.get("personio:CBNM")
    assert record is not None
    assert (record.tool, record.category, record.customer_key, record.organization_name) == (
        "personio",
        "ASSESSMENT",
        "36123",
        "Acme, Inc.",
    )
    assert (record.status, record.setup_status, record.qa_status, record.source) == (
        "ACTIVE",
        "COMPLETED",
        "PASSED",
        "webhook",
    )
    assert (record.enabled, record.invitation_channel, record.settings) == (True, None, {})
    assert record.created_at == created_at and record.updated_at == state_clock()
    assert registry.get("missing:x") is None
    with pytest.raises(ValueError, match="source"):
        registry.upsert("personio:x", source="carrier-pigeon")


def test_admin_options_survive_webhook_refreshes(registry: IntegrationRepository) -> None:
    registry.upsert("lever:1", source="webhook")
    assert registry.set_enabled("lever:1", False)
    assert registry.set_invitation_channel("lever:1", "email")
    assert registry.set_settings("lever:1", {"duplicate_rule": False, "reminder_days": [3, 7]})
    registry.upsert("lever:1", source="webhook", status="ACTIVE", organization_name="Lever Co")
    record = registry.get("lever:1")
    assert record is not None
    assert (record.enabled, record.invitation_channel, record.settings, record.organization_name) == (
        False,
        "email",
        {"duplicate_rule": False, "reminder_days": [3, 7]},
        "Lever Co",
    )
    assert registry.set_enabled("missing:1", True) is False
    with pytest.raises(ValueError, match="channel"):
        registry.set_invitation_channel("lever:1", "fax")


def test_status_changes_and_sticky_deletion(registry: IntegrationRepository, state_clock: Any) -> None:
    registry.upsert("workday:1", source="webhook")
    assert registry.set_status("workday:1", "INVALID", setup_status="INCOMPLETE", qa_status="FAILED")
    record = registry.get("workday:1")
    assert record is not None and (record.status, record.setup_status, record.qa_status) == (
        "INVALID",
        "INCOMPLETE",
        "FAILED",
    )
    assert registry.set_status("unknown:1", "ACTIVE") is False
    deleted_at = state_clock()
    assert registry.mark_deleted("workday:1")
    assert registry.mark_deleted("workday:1") is False
    state_clock.advance(5)
    # A state-changed webhook delivered after the deletion does not bring the integration back.
    assert registry.set_status("workday:1", "ACTIVE") is False
    registry.upsert("workday:1", source="webhook", status="ACTIVE")
    record = registry.get("workday:1")
    assert record is not None and (record.status, record.deleted_at) == ("DELETED", deleted_at)
    assert [r.id for r in registry.list_all()] == []
    assert [r.id for r in registry.list_all(include_deleted=True)] == ["workday:1"]
    registry.upsert("greenhouse:1", source="webhook", status="DELETED")
    gone = registry.get("greenhouse:1")
    assert gone is not None and gone.deleted_at == state_clock()
    with pytest.raises(ValueError):
        registry.set_status("greenhouse:1", "DELETED")


def test_list_active_filters_category_status_enabled_and_deleted(registry: IntegrationRepository) -> None:
    registry.upsert("b:active", source="bootstrap")
    registry.upsert("a:active", source="bootstrap")
    registry.upsert("c:hris", source="webhook", category="HRIS")
    registry.upsert("d:inactive", source="webhook", status="INACTIVE")
    registry.upsert("e:disabled", source="admin")
    registry.set_enabled("e:disabled", False)
    registry.upsert("f:deleted", source="webhook")
    registry.mark_deleted("f:deleted")
    assert [r.id for r in registry.list_active()] == ["a:active", "b:active"]


def test_record_packages_publish(registry: IntegrationRepository, state_clock: Any) -> None:
    registry.upsert("lever:1", source="webhook")
    assert registry.record_packages_publish("lever:1", "sha256:abc")
    record = registry.get("lever:1")
    assert record is not None and (record.packages_hash, record.packages_published_at) == (
        "sha256:abc",
        state_clock(),
    )
    assert registry.record_packages_publish("missing:1", "sha256:abc") is False
    assert record.published_package_ids is None  # a hash alone says nothing about the ids


def test_record_packages_publish_keeps_the_package_ids(registry: IntegrationRepository) -> None:
    registry.upsert("lever:1", source="webhook")
    registry.set_settings("lever:1", {"duplicate_rule": False})
    assert registry.record_packages_publish("lever:1", "sha256:abc", package_ids=["sql", "ts", "sql"])
    record = registry.get("lever:1")
    assert record is not None and record.published_package_ids == ["sql", "ts"]
    # Their own column: the admin's settings are neither read nor overwritten by a publish, and the other way
    # round.
    assert record.settings == {"duplicate_rule": False}
    registry.set_settings("lever:1", {})
    assert registry.record_packages_publish("lever:1", "sha256:def", package_ids=[])
    record = registry.get("lever:1")
    assert record is not None and (record.packages_hash, record.published_package_ids) == ("sha256:def", [])
