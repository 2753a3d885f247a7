"""Planning: which integrations are sent, skipped, held back; shards that are compact and bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from kombo_sync.catalog.contract import PackageDef, package_list_hash, validate_catalog
from kombo_sync.catalog.plan import (
    BAD_ROWS,
    CUSTOMER_KEY_MISSING,
    INTEGRATION_UNKNOWN,
    PlannedIntegration,
    SyncOptions,
    make_shards,
    plan_integrations,
    shard_count,
    shard_members,
)
from kombo_sync.catalog.source import CONTRACT_COLUMNS
from kombo_sync.state.integrations import IntegrationRecord

NOW = datetime(2026, 1, 5, tzinfo=UTC)
A = PackageDef("a", "SKILLS_TEST", "A", "d")
B = PackageDef("b", "BEHAVIORAL", "B", "d")


def record(
    integration_id,
    customer_key="c1",
    *,
    packages_hash=None,
    status="ACTIVE",
    enabled=True,
    category="ASSESSMENT",
):
    return IntegrationRecord(
        id=integration_id,
        tool=integration_id.split(":")[0],
        category=category,
        customer_key=customer_key,
        organization_name=None,
        status=status,
        setup_status=None,
        qa_status=None,
        source="admin",
        enabled=enabled,
        invitation_channel=None,
        settings={},
        packages_hash=packages_hash,
        packages_published_at=None,
        created_at=NOW,
        updated_at=NOW,
        deleted_at=NOW if status == "DELETED" else None,
    )


def catalog(*rows):
    full = [
        {
            "customer_key": c,
            "package_id": p.id if isinstance(p, PackageDef) else p,
            "type": t,
            "name": n,
            "description": "d",
            "active": True,
        }
        for c, p, t, n in rows
    ]
    return validate_catalog(pd.DataFrame(full, columns=list(CONTRACT_COLUMNS), dtype=object))


GOOD = catalog(
    ("c1", "a", "SKILLS_TEST", "A"), ("c1", "b", "BEHAVIORAL", "B"), ("c2", "a", "SKILLS_TEST", "A")
)


def by_id(plan):
    return {item["integration_id"]: item for item in plan.settled}


def test_changed_and_new_integrations_are_sent_unchanged_are_not():
    stored = package_list_hash([A, B])
    plan = plan_integrations(
        GOOD,
        [record("x:1", packages_hash=stored), record("x:2", "c2", packages_hash=stored), record("x:3", "c3")],
        SyncOptions(),
    )
    assert [item.integration_id for item in plan.to_send] == ["x:2", "x:3"]
    assert plan.to_send[0].packages == (A,)
    # a customer without entitlement rows is planned with an empty list (the wipe guard judges it later)
    assert plan.to_send[1].packages == ()
    assert by_id(plan)["x:1"]["outcome"] == "unchanged"


def test_force_sends_unchanged_integrations():
    plan = plan_integrations(
        GOOD, [record("x:1", packages_hash=package_list_hash([A, B]))], SyncOptions(force=True)
    )
    assert [item.integration_id for item in plan.to_send] == ["x:1"]


def test_inactive_disabled_deleted_and_other_categories_are_skipped():
    records = [
        record("x:1", status="INACTIVE"),
        record("x:2", enabled=False),
        record("x:3", status="DELETED"),
        record("x:4", category="HRIS"),
    ]
    plan = plan_integrations(GOOD, records, SyncOptions())
    assert plan.to_send == []
    assert {item["outcome"] for item in plan.settled} == {"skipped"}
    assert "disabled" in by_id(plan)["x:2"]["message"]


def test_missing_customer_key_and_unknown_ids_fail_with_a_code():
    plan = plan_integrations(GOOD, [record("x:1", customer_key=None)], SyncOptions(), unknown_ids=["nope:1"])
    assert by_id(plan)["x:1"]["code"] == CUSTOMER_KEY_MISSING
    assert by_id(plan)["nope:1"]["code"] == INTEGRATION_UNKNOWN
    assert {item["outcome"] for item in plan.settled} == {"failed"}


def test_customer_with_bad_row_is_held_back_only_when_its_list_would_change():
    tainted = catalog(("c1", "a", "SKILLS_TEST", "A"), ("c1", "b", "NOT_A_TYPE", "B"))
    # published before with both packages: dropping "b" because of its bad row would change the list
    held = plan_integrations(
        tainted, [record("x:1", packages_hash=package_list_hash([A, B]))], SyncOptions(force=True)
    )
    assert held.to_send == []
    item = by_id(held)["x:1"]
    assert item["outcome"] == "held_back" and item["code"] == BAD_ROWS
    assert "row 2: type 'NOT_A_TYPE'" in item["message"] and item["bad_rows"] == [2]
    # the good rows give exactly what Kombo already has: nothing changes, nothing is held back
    same = plan_integrations(tainted, [record("x:1", packages_hash=package_list_hash([A]))], SyncOptions())
    assert by_id(same)["x:1"]["outcome"] == "unchanged"


def test_options_from_params_accept_lists_and_text():
    assert SyncOptions.from_params(None) == SyncOptions()
    options = SyncOptions.from_params({"integration_ids": ["a:1", " a:1 ", "", "b:2"], "dry_run": True})
    assert options.integration_ids == ("a:1", "b:2") and options.dry_run and not options.force
    assert SyncOptions.from_params({"integration_ids": "a:1, b:2\nc:3"}).integration_ids == (
        "a:1",
        "b:2",
        "c:3",
    )


def planned(n, packages=(A, B)):
    return [
        PlannedIntegration(f"t:{i:04d}", f"c{i}", tuple(packages), package_list_hash(packages))
        for i in range(n)
    ]


def test_shards_share_package_definitions_and_round_trip():
    shards = make_shards(planned(120), shard_size=50, options={"dry_run": True})
    # at most 50 each, and even: three shards of 40 rather than 50, 50, 20
    assert [len(shard["integrations"]) for shard in shards] == [40, 40, 40]
    # each distinct definition is stored once per shard, whatever the number of integrations
    assert all(len(shard["definitions"]) == 2 for shard in shards)
    assert shards[0]["label"] == "shard 1/3: t:0000 .. t:0039 (40 integrations)"
    assert shards[1]["options"] == {"dry_run": True}
    rebuilt = shard_members(json.loads(json.dumps(shards[2])))
    assert rebuilt == planned(120)[80:]
    # small enough for XCom: 50 integrations x 2 shared packages
    assert len(json.dumps(shards[0])) < 8_000


def test_shard_count_never_exceeds_max_map_length():
    shards = make_shards(planned(2_100, packages=(A,)), shard_size=1, max_shards=1024)
    assert len(shards) <= 1024
    assert sum(len(shard["integrations"]) for shard in shards) == 2_100


def test_single_integration_shard_is_labelled_by_the_integration():
    assert make_shards(planned(1), shard_size=50)[0]["label"] == "t:0000"
    assert make_shards([], shard_size=50) == []


@pytest.mark.parametrize("size", [1, 7, 50])
def test_every_integration_lands_in_exactly_one_shard(size):
    items = planned(33)
    shards = make_shards(items, shard_size=size)
    ids = [member.integration_id for shard in shards for member in shard_members(shard)]
    assert sorted(ids) == sorted(item.integration_id for item in items)
    assert [shard["index"] for shard in shards] == list(range(len(shards)))


@pytest.mark.parametrize(
    ("integrations", "expected"),
    [
        (0, 0),
        (1, 1),  # one new integration: one task
        (200, 1),  # 200 do not earn back a second task start
        (499, 1),
        (500, 2),  # two shards of 250
        (1_000, 4),
        (1_999, 4),  # four at once, never more while each stays within shard_size
        (2_500, 5),  # beyond 4 x 500, more shards of at most 500 (four run at a time)
    ],
)
def test_shard_count_follows_the_work(integrations, expected):
    assert shard_count(integrations, shard_size=500, min_shard_size=250) == expected
    shards = make_shards(planned(integrations, packages=(A,)), shard_size=500, min_shard_size=250)
    assert len(shards) == expected
    assert all(len(shard["integrations"]) <= 500 for shard in shards)
    assert sum(len(shard["integrations"]) for shard in shards) == integrations


def test_shard_count_respects_max_map_length_over_shard_size():
    assert shard_count(10_000, shard_size=1, max_shards=1024) == 1024
