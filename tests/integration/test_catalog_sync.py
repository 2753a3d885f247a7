"""Package catalog sync against the sandbox over HTTP, with the catalog in a real warehouse table and the
state in a real store (each test on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kombo_sync.catalog import (
    CatalogSyncFailed,
    SyncOptions,
    finish_catalog_sync,
    load_catalog,
    plan_catalog_sync,
    publish_catalog_shard,
)
from kombo_sync.catalog.source import read_catalog_sql
from kombo_sync.catalog.warehouse import create_catalog_tables, write_catalog_tables
from kombo_sync.kombo.client import KomboClient
from kombo_sync.settings import CatalogSettings, PipelineSettings
from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.webhooks.handlers import WebhookDeps, handle_webhook
from tests.support.webhooks import order_event, signed

CATALOG_SQL = Path(__file__).resolve().parents[2] / "include" / "sql" / "catalog.sql"


def pkg(package_id, type_="SKILLS_TEST", name=None, description="A test.", active=True):
    return {
        "package_id": package_id,
        "type": type_,
        "name": name or package_id.upper(),
        "description": description,
        "active": active,
    }


class Harness:
    """The DAG's three steps, run in-process on a real store, a real warehouse table and the sandbox."""

    def __init__(self, store, sandbox):
        self.store = store
        self.sandbox = sandbox
        self.engine = store.engine  # the state database doubles as the demo warehouse
        create_catalog_tables(self.engine)
        self.client = KomboClient(sandbox.api_url, sandbox.api_key, max_retries=1, backoff_base=0.01)
        self.registry = IntegrationRepository(store)
        self.settings = CatalogSettings(shard_size=2)

    def integration(self, customer_key, tool="workday", **kwargs):
        integration_id = self.sandbox.admin.create_integration(tool, origin_id=customer_key, **kwargs)["id"]
        self.registry.upsert(integration_id, source="webhook", customer_key=customer_key)
        return integration_id

    def catalog(self, packages, entitlements):
        write_catalog_tables(self.engine, packages, entitlements)

    def run(self, **options):
        planned = plan_catalog_sync(
            self.store,
            lambda: read_catalog_sql(self.engine, CATALOG_SQL),
            self.settings,
            SyncOptions(**options),
            run_id="test",
        )
        results = [
            publish_catalog_shard(self.store, self.client, shard, concurrency=4)
            for shard in planned["shards"]
        ]
        return finish_catalog_sync(self.store, planned["summary"], results)

    def kombo_ids(self, integration_id):
        return sorted(p["id"] for p in self.sandbox.admin.list_packages(integration_id))

    def puts(self, integration_id):
        return self.sandbox.admin.package_history(integration_id)["puts"]

    def package_requests(self):
        return len(self.sandbox.admin.requests(path_prefix="/v1/assessment/packages"))


@pytest.fixture
def harness(state_store, kombo_sandbox):
    h = Harness(state_store, kombo_sandbox)
    yield h
    h.client.close()


def test_first_publish_then_unchanged_catalog_sends_nothing(harness):
    one, two = harness.integration("c1"), harness.integration("c2", tool="lever")
    harness.catalog([pkg("ts"), pkg("big5", "BEHAVIORAL"), pkg("sql")], {"c1": ["ts", "big5"], "c2": ["sql"]})

    first = harness.run()
    assert first["counts"] == {"published": 2}
    assert harness.kombo_ids(one) == ["big5", "ts"] and harness.kombo_ids(two) == ["sql"]
    assert harness.sandbox.admin.list_packages(one)[0]["name"] in {"TS", "BIG5"}
    assert harness.registry.get(one).packages_hash is not None
    requests_after_first = harness.package_requests()
    assert requests_after_first == 2  # a first publish is one PUT each, no read

    second = harness.run()
    assert second["counts"] == {"unchanged": 2}
    assert harness.package_requests() == requests_after_first
    assert (harness.puts(one), harness.puts(two)) == (1, 1)
    assert RunAudit(harness.store).recent("catalog", limit=1)[0].status == "success"


def test_a_change_sends_the_full_new_list_and_a_removal_deletes(harness):
    one, two = harness.integration("c1"), harness.integration("c2")
    harness.catalog([pkg("a"), pkg("b"), pkg("c")], {"c1": ["a", "b", "c"], "c2": ["a"]})
    harness.run()

    harness.catalog(
        [pkg("a"), pkg("b", name="B renamed"), pkg("c"), pkg("d")], {"c1": ["a", "b", "c", "d"], "c2": ["a"]}
    )
    summary = harness.run()
    assert summary["counts"] == {"published": 1, "unchanged": 1} and summary["published"] == [one]
    packages = {p["id"]: p for p in harness.sandbox.admin.list_packages(one)}
    assert sorted(packages) == ["a", "b", "c", "d"] and packages["b"]["name"] == "B renamed"
    assert harness.puts(one) == 2 and harness.puts(two) == 1

    harness.catalog([pkg("a"), pkg("b"), pkg("c"), pkg("d")], {"c1": ["a", "b", "d"], "c2": ["a"]})
    harness.run()
    history = harness.sandbox.admin.package_history(one)
    assert sorted(p["id"] for p in history["packages"]) == ["a", "b", "d"]
    assert [p["id"] for p in history["deleted"]] == ["c"]


def test_wipe_guard_refuses_until_the_run_allows_shrink(harness):
    one, two = harness.integration("c1"), harness.integration("c2")
    harness.catalog([pkg("a"), pkg("b"), pkg("c")], {"c1": ["a", "b", "c"], "c2": ["a"]})
    harness.run()

    # c1's entitlements disappear (a broken join, an emptied table): the catalog yields nothing for it
    harness.catalog([pkg("a"), pkg("b"), pkg("c"), pkg("z")], {"c2": ["a", "z"]})
    with pytest.raises(CatalogSyncFailed) as failure:
        harness.run()
    assert f"{one}: REFUSED CATALOG.WIPE_GUARD" in str(failure.value)
    assert harness.kombo_ids(one) == ["a", "b", "c"] and harness.puts(one) == 1
    assert harness.kombo_ids(two) == ["a", "z"]  # the healthy integration went out anyway
    audit = RunAudit(harness.store).recent("catalog", limit=1)[0]
    assert audit.status == "failed"
    assert [(p["integration_id"], p["outcome"]) for p in audit.summary["problems"]] == [(one, "refused")]

    assert harness.run(allow_shrink=True)["counts"] == {"published": 1, "unchanged": 1}
    assert harness.kombo_ids(one) == []


def test_a_failing_integration_is_recorded_and_the_others_are_published(harness):
    healthy = [harness.integration("c1"), harness.integration("c2"), harness.integration("c3")]
    broken = harness.integration("c4", tool="lever", status="INACTIVE")
    harness.catalog([pkg("a")], {key: ["a"] for key in ("c1", "c2", "c3", "c4")})

    with pytest.raises(CatalogSyncFailed) as failure:
        harness.run()
    message = str(failure.value)
    assert "1 integration(s) were not brought up to date" in message
    assert f"{broken}: FAILED INTEGRATION.INACTIVE" in message and "/_sandbox/logs/" in message
    assert all(harness.kombo_ids(i) == ["a"] for i in healthy)
    assert harness.registry.get(broken).packages_hash is None
    problem = RunAudit(harness.store).recent("catalog", limit=1)[0].summary["problems"][0]
    assert problem["code"] == "INTEGRATION.INACTIVE" and problem["log_url"].startswith(harness.sandbox.url)

    # once Kombo has it active again, the next run publishes only that one
    harness.sandbox.admin.set_integration_state(broken, status="ACTIVE")
    assert harness.run()["counts"] == {"published": 1, "unchanged": 3}


def test_bad_rows_are_quarantined_and_their_customer_held_back(harness):
    one, two = harness.integration("c1"), harness.integration("c2")
    harness.catalog([pkg("a"), pkg("b"), pkg("c")], {"c1": ["a", "b"], "c2": ["c"]})
    harness.run()

    # b gets a type Kombo does not know; c1's list would lose b, so c1 is held back; c2 is updated
    harness.catalog(
        [pkg("a", name="A v2"), pkg("b", type_="SKILLZ"), pkg("c", name="C v2")],
        {"c1": ["a", "b"], "c2": ["c"]},
    )
    with pytest.raises(CatalogSyncFailed) as failure:
        harness.run()
    assert f"{one}: HELD_BACK CATALOG.BAD_ROWS" in str(failure.value)
    quarantined = Quarantine(harness.store).list_open("catalog")
    assert [(row.source_key, row.reason) for row in quarantined] == [
        (
            "c1/b",
            "row 2: type 'SKILLZ' is not one of Kombo's types "
            "BACKGROUND_CHECK, BEHAVIORAL, REFERENCE_CHECK, SKILLS_TEST, VIDEO_INTERVIEW",
        )
    ]
    assert quarantined[0].row_json["type"] == "SKILLZ"
    assert {p["id"]: p["name"] for p in harness.sandbox.admin.list_packages(one)} == {"a": "A", "b": "B"}
    assert {p["id"]: p["name"] for p in harness.sandbox.admin.list_packages(two)} == {"c": "C v2"}

    # the same bad row is not quarantined again every night
    with pytest.raises(CatalogSyncFailed):
        harness.run()
    assert len(Quarantine(harness.store).list_open("catalog")) == 1

    # fixed at the source: the quarantine entry is resolved and c1 gets its full list
    harness.catalog([pkg("a", name="A v2"), pkg("b"), pkg("c", name="C v2")], {"c1": ["a", "b"], "c2": ["c"]})
    summary = harness.run()
    assert summary["counts"] == {"published": 1, "unchanged": 1} and summary["catalog"]["resolved"] == 1
    assert Quarantine(harness.store).list_open("catalog") == []
    assert {p["id"]: p["name"] for p in harness.sandbox.admin.list_packages(one)} == {"a": "A v2", "b": "B"}


def test_dry_run_reports_the_diff_and_sends_nothing(harness):
    one = harness.integration("c1")
    harness.catalog([pkg("a"), pkg("b"), pkg("c")], {"c1": ["a", "b", "c"]})
    harness.run()
    stored = harness.registry.get(one).packages_hash

    harness.catalog([pkg("a", name="A v2"), pkg("b"), pkg("c"), pkg("d")], {"c1": ["a", "b", "d"]})
    summary = harness.run(dry_run=True)
    assert summary["counts"] == {"previewed": 1}
    preview = summary["previews"][0]
    assert (preview["added_ids"], preview["changed_ids"], preview["removed_ids"]) == (["d"], ["a"], ["c"])
    assert harness.puts(one) == 1 and harness.kombo_ids(one) == ["a", "b", "c"]
    assert harness.registry.get(one).packages_hash == stored


def test_chosen_integrations_only_and_unknown_ids_are_reported(harness):
    one, two = harness.integration("c1"), harness.integration("c2")
    harness.catalog([pkg("a")], {"c1": ["a"], "c2": ["a"]})
    with pytest.raises(CatalogSyncFailed, match="nope:1: FAILED CATALOG.INTEGRATION_UNKNOWN"):
        harness.run(integration_ids=(two, "nope:1"))
    assert harness.kombo_ids(two) == ["a"] and harness.kombo_ids(one) == []


def test_yaml_source_gives_the_same_contract(harness, tmp_path):
    one = harness.integration("36123")
    yaml_file = tmp_path / "catalog.yaml"
    yaml_file.write_text(
        "packages:\n"
        "  - {id: ts, type: SKILLS_TEST, name: TypeScript, description: Coding test}\n"
        "  - {id: old, type: BEHAVIORAL, name: Old, description: Retired, active: false}\n"
        "entitlements:\n"
        "  36123: ['*']\n"
    )
    settings = PipelineSettings(catalog=CatalogSettings(source="yaml", yaml_file=str(yaml_file)))
    planned = plan_catalog_sync(
        harness.store, lambda: load_catalog(settings), settings.catalog, SyncOptions()
    )
    results = [publish_catalog_shard(harness.store, harness.client, shard) for shard in planned["shards"]]
    assert finish_catalog_sync(harness.store, planned["summary"], results)["published"] == [one]
    assert harness.kombo_ids(one) == ["ts"]


def test_a_missing_column_stops_the_run_before_anything_is_sent(harness, tmp_path):
    harness.integration("c1")
    harness.catalog([pkg("a")], {"c1": ["a"]})
    query = tmp_path / "bad.sql"
    query.write_text("SELECT customer_key, package_id FROM catalog_entitlements")
    with pytest.raises(Exception, match="missing column\\(s\\) type, name, description, active"):
        plan_catalog_sync(
            harness.store, lambda: read_catalog_sql(harness.engine, query), harness.settings, SyncOptions()
        )
    assert harness.package_requests() == 0
    assert RunAudit(harness.store).recent("catalog", limit=1)[0].status == "failed"


def test_webhook_rejects_a_package_the_last_publish_did_not_give_the_customer(harness):
    secret = "whsec_catalog"
    deps = WebhookDeps(secrets=lambda: [secret], store=harness.store, settings=PipelineSettings())

    def order(integration_id, package_id):
        event = order_event(integration_id=integration_id, package_id=package_id)
        body, headers = signed(event, secret)
        return event["data"]["id"], handle_webhook(body, headers, deps)

    one = harness.integration("c1")
    # Before any publish nothing is known about the customer's packages: every package is accepted.
    assert order(one, "never-published")[1].status_code == 200
    harness.catalog([pkg("ts"), pkg("big5", "BEHAVIORAL"), pkg("sql")], {"c1": ["ts", "big5"]})
    assert harness.run()["counts"] == {"published": 1}
    assert harness.registry.get(one).published_package_ids == ["big5", "ts"]

    order_id, unlisted = order(one, "sql")  # in the catalog, but not this customer's
    assert unlisted.status_code == 422 and unlisted.body["status"] == "ORDER_REJECTED"
    assert set(unlisted.body) == {"status", "message"}
    assert (
        "'sql'" in unlisted.body["message"] and "not available for your account" in unlisted.body["message"]
    )
    assert OrderRepository(harness.store).get(order_id).state == "rejected"
    listed = order(one, "ts")[1]
    assert listed.status_code == 200 and listed.body["status"] == "ACCEPTED"

    # The next publish moves the line: sql given, ts taken away.
    harness.catalog([pkg("ts"), pkg("big5", "BEHAVIORAL"), pkg("sql")], {"c1": ["big5", "sql"]})
    assert harness.run()["counts"] == {"published": 1}
    assert order(one, "sql")[1].status_code == 200
    assert order(one, "ts")[1].status_code == 422
