"""Publishing with a fake Kombo and a fake registry: wipe guard, dry run, isolation, hash after success."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from kombo_sync.catalog.contract import PackageDef, package_list_hash
from kombo_sync.catalog.plan import PlannedIntegration, make_shards
from kombo_sync.catalog.publish import diff_packages, publish_integration, publish_shard, wipe_guard_refusal
from kombo_sync.kombo.errors import KomboFatalError
from kombo_sync.kombo.models import RemotePackage
from kombo_sync.state.integrations import IntegrationRecord

NOW = datetime(2026, 1, 5, tzinfo=UTC)
PACKAGES = tuple(PackageDef(f"p{i}", "SKILLS_TEST", f"P{i}", "d") for i in range(10))


def remote(packages):
    return [RemotePackage(id=p.id, name=p.name, description=p.description, type=p.type) for p in packages]


class FakeKombo:
    def __init__(self):
        self.lists: dict[str, list[RemotePackage]] = {}
        self.puts: list[str] = []
        self.gets: list[str] = []
        self.failing: dict[str, Exception] = {}
        self.lock = threading.Lock()

    def get_packages(self, integration_id):
        with self.lock:
            self.gets.append(integration_id)
        if integration_id in self.failing:
            raise self.failing[integration_id]
        return list(self.lists.get(integration_id, []))

    def set_packages(self, integration_id, packages):
        if integration_id in self.failing:
            raise self.failing[integration_id]
        with self.lock:
            self.puts.append(integration_id)
            self.lists[integration_id] = [RemotePackage.model_validate(p) for p in packages]
        return []


@dataclass
class FakeRegistry:
    records: dict[str, IntegrationRecord]

    def get(self, integration_id):
        return self.records.get(integration_id)

    def list_all(self, include_deleted=False):
        return sorted(self.records.values(), key=lambda record: record.id)

    def record_packages_publish(self, integration_id, packages_hash, published_at=None, *, package_ids=None):
        self.records[integration_id] = replace(
            self.records[integration_id],
            packages_hash=packages_hash,
            published_package_ids=None if package_ids is None else sorted(set(package_ids)),
        )
        return True


def record(integration_id, packages_hash=None, status="ACTIVE"):
    return IntegrationRecord(
        integration_id,
        "t",
        "ASSESSMENT",
        "c1",
        None,
        status,
        None,
        None,
        "admin",
        True,
        None,
        {},
        packages_hash,
        None,
        NOW,
        NOW,
        None,
    )


def plan(integration_id, packages):
    return PlannedIntegration(integration_id, "c1", tuple(packages), package_list_hash(packages))


@pytest.fixture
def kombo():
    return FakeKombo()


def registry(*records):
    return FakeRegistry({item.id: item for item in records})


def test_first_publish_sends_once_without_reading_and_stores_the_hash(kombo):
    reg = registry(record("t:1"))
    result = publish_integration(plan("t:1", PACKAGES), client=kombo, integrations=reg)
    assert result["outcome"] == "published" and result["packages"] == 10
    assert kombo.puts == ["t:1"] and kombo.gets == []
    assert reg.records["t:1"].packages_hash == package_list_hash(PACKAGES)
    # The ids go with the hash: the webhook rejects orders for any other package.
    assert reg.records["t:1"].published_package_ids == sorted(p.id for p in PACKAGES)


def test_failed_publish_records_no_package_ids(kombo):
    kombo.failing["t:1"] = KomboFatalError("nope", code="INTEGRATION.INACTIVE", http_status=403)
    reg = registry(record("t:1"))
    assert publish_integration(plan("t:1", PACKAGES), client=kombo, integrations=reg)["outcome"] == "failed"
    assert reg.records["t:1"].published_package_ids is None


def test_unchanged_list_published_before_ids_were_kept_gets_its_ids_without_a_request(kombo):
    reg = registry(record("t:1", packages_hash=package_list_hash(PACKAGES[:4])))
    result = publish_integration(plan("t:1", PACKAGES[:4]), client=kombo, integrations=reg)
    assert result["outcome"] == "unchanged" and kombo.puts == [] and kombo.gets == []
    assert reg.records["t:1"].published_package_ids == ["p0", "p1", "p2", "p3"]


def test_republish_reads_kombo_and_reports_the_diff(kombo):
    kombo.lists["t:1"] = remote(PACKAGES[:6])
    new = (*PACKAGES[1:6], PACKAGES[6]._replace(name="x"), PACKAGES[0]._replace(description="new"))
    reg = registry(record("t:1", packages_hash="old"))
    result = publish_integration(plan("t:1", new), client=kombo, integrations=reg)
    assert result["outcome"] == "published"
    assert result["diff"]["added"] == 1 and result["diff"]["changed"] == 1 and result["diff"]["removed"] == 0
    assert [p.id for p in kombo.lists["t:1"]] == [p.id for p in new]


def test_wipe_guard_refuses_an_empty_list_for_an_integration_that_had_packages(kombo):
    kombo.lists["t:1"] = remote(PACKAGES)
    reg = registry(record("t:1", packages_hash="old"))
    result = publish_integration(plan("t:1", []), client=kombo, integrations=reg)
    assert result["outcome"] == "refused" and result["code"] == "CATALOG.WIPE_GUARD"
    assert "yields no packages" in result["message"]
    assert kombo.puts == [] and reg.records["t:1"].packages_hash == "old"
    allowed = publish_integration(plan("t:1", []), client=kombo, integrations=reg, allow_shrink=True)
    assert allowed["outcome"] == "published" and kombo.lists["t:1"] == []


def test_empty_list_is_checked_against_kombo_even_without_a_stored_hash(kombo):
    kombo.lists["t:1"] = remote(PACKAGES[:2])  # published by someone else before the registry knew it
    result = publish_integration(plan("t:1", []), client=kombo, integrations=registry(record("t:1")))
    assert result["outcome"] == "refused" and kombo.puts == []


def test_wipe_guard_refuses_losing_more_than_the_allowed_share(kombo):
    kombo.lists["t:1"] = remote(PACKAGES)
    reg = registry(record("t:1", packages_hash="old"))
    refused = publish_integration(
        plan("t:1", PACKAGES[:4]), client=kombo, integrations=reg, max_shrink_share=0.5
    )
    assert refused["outcome"] == "refused" and "6 of its 10 packages" in refused["message"]
    fine = publish_integration(
        plan("t:1", PACKAGES[:5]), client=kombo, integrations=reg, max_shrink_share=0.5
    )
    assert fine["outcome"] == "published" and fine["diff"]["removed"] == 5


def test_wipe_guard_rule_directly():
    diff = diff_packages(remote(PACKAGES[:4]), PACKAGES[:1])
    assert wipe_guard_refusal(diff, 1, 0.5) is not None
    assert wipe_guard_refusal(diff, 1, 0.75) is None
    assert wipe_guard_refusal(diff_packages([], []), 0, 0.0) is None  # never had any: nothing to protect


def test_dry_run_reads_and_diffs_but_never_writes(kombo):
    kombo.lists["t:1"] = remote(PACKAGES[:3])
    reg = registry(record("t:1", packages_hash="old"))
    result = publish_integration(plan("t:1", PACKAGES[1:5]), client=kombo, integrations=reg, dry_run=True)
    assert result["outcome"] == "previewed"
    assert result["diff"]["added_ids"] == ["p3", "p4"] and result["diff"]["removed_ids"] == ["p0"]
    assert kombo.puts == [] and reg.records["t:1"].packages_hash == "old"


def test_stored_hash_equal_means_already_done_on_retry(kombo):
    reg = registry(record("t:1", packages_hash=package_list_hash(PACKAGES)))
    result = publish_integration(plan("t:1", PACKAGES), client=kombo, integrations=reg)
    assert result["outcome"] == "unchanged" and kombo.puts == [] and kombo.gets == []
    forced = publish_integration(plan("t:1", PACKAGES), client=kombo, integrations=reg, force=True)
    assert forced["outcome"] == "published" and kombo.puts == ["t:1"]


def test_integration_deactivated_since_planning_is_skipped(kombo):
    reg = registry(record("t:1", status="INACTIVE"))
    assert publish_integration(plan("t:1", PACKAGES), client=kombo, integrations=reg)["outcome"] == "skipped"
    assert publish_integration(plan("t:2", PACKAGES), client=kombo, integrations=reg)["outcome"] == "skipped"
    assert kombo.puts == []


def test_one_failing_integration_does_not_stop_the_shard(kombo):
    kombo.failing["t:0003"] = KomboFatalError(
        "The integration is inactive.",
        code="INTEGRATION.INACTIVE",
        log_url="https://kombo/logs/1",
        http_status=403,
    )
    kombo.failing["t:0007"] = RuntimeError("database went away")
    ids = [f"t:{i:04d}" for i in range(12)]
    reg = registry(*(record(i) for i in ids))
    shard = make_shards([plan(i, PACKAGES[:3]) for i in ids], shard_size=50)[0]
    result = publish_shard(shard, client=kombo, integrations=reg, concurrency=4)
    assert result["counts"] == {"published": 10, "failed": 2}
    failed = {item["integration_id"]: item for item in result["outcomes"] if item["outcome"] == "failed"}
    assert failed["t:0003"]["code"] == "INTEGRATION.INACTIVE"
    assert failed["t:0003"]["log_url"] == "https://kombo/logs/1"
    assert failed["t:0003"]["retriable"] is False
    assert failed["t:0007"]["code"] == "RuntimeError"
    assert sorted(kombo.puts) == [i for i in ids if i not in failed]
    # the failed ones keep no hash, so the next run tries them again
    assert reg.records["t:0003"].packages_hash is None
