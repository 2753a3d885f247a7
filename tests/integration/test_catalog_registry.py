"""The integration registry's bootstrap loader and admin command, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from kombo_sync.assets import INTEGRATIONS_TOPIC
from kombo_sync.kombo.client import KomboClient
from kombo_sync.registry import RegistryError, load_bootstrap, main
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.wakeups import pending_wakeups

BOOTSTRAP = """
integrations:
  - id: greenhouse:aaa
    customer_key: 36123
    organization_name: Initech
  - id: workday:bbb
    customer_key: acme
    invitation_channel: email
  - id: lever:ccc
    customer_key: globex
    enabled: false
"""


def write(tmp_path, text, name="integrations.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bootstrap_creates_then_refreshes_without_clobbering(state_store, tmp_path):
    repository = IntegrationRepository(state_store)
    summary = load_bootstrap(state_store, write(tmp_path, BOOTSTRAP))
    assert summary["created"] == ["greenhouse:aaa", "workday:bbb", "lever:ccc"]
    assert [record.id for record in repository.list_active()] == ["greenhouse:aaa", "workday:bbb"]
    assert repository.get("greenhouse:aaa").customer_key == "36123"
    assert repository.get("workday:bbb").invitation_channel == "email"
    assert repository.get("lever:ccc").enabled is False
    assert repository.get("greenhouse:aaa").source == "bootstrap"
    assert pending_wakeups(state_store, INTEGRATIONS_TOPIC) == 1

    # Kombo said one is inactive (webhook) and one was deleted: loading the file again changes neither
    repository.set_status("workday:bbb", "INACTIVE")
    repository.mark_deleted("greenhouse:aaa")
    again = load_bootstrap(state_store, write(tmp_path, BOOTSTRAP))
    assert again["created"] == [] and len(again["refreshed"]) == 3
    assert again["still_deleted"] == ["greenhouse:aaa"]
    assert repository.get("workday:bbb").status == "INACTIVE"
    assert repository.get("greenhouse:aaa").status == "DELETED"


def test_an_invalid_bootstrap_file_loads_nothing_and_names_each_entry(state_store, tmp_path):
    text = """
integrations:
  - id: greenhouse:ok
    customer_key: c1
  - id: no-colon
  - id: lever:x
    status: SLEEPING
  - id: greenhouse:ok
"""
    with pytest.raises(RegistryError) as error:
        load_bootstrap(state_store, write(tmp_path, text))
    message = str(error.value)
    assert (
        "entry 2: id" in message
        and "entry 3: status" in message
        and "entry 4: integration greenhouse:ok is listed twice" in message
    )
    assert IntegrationRepository(state_store).list_all() == []


def test_admin_command_add_disable_enable_remove_list(state_store, capsys):
    def run(*argv):
        return main(list(argv), store_factory=lambda url: state_store)

    repository = IntegrationRepository(state_store)
    assert run("add", "personio:abc", "--customer-key", "c9", "--channel", "platform") == 0
    assert "added personio:abc: customer c9, ASSESSMENT, ACTIVE, enabled" in capsys.readouterr().out
    assert repository.get("personio:abc").source == "admin"
    assert pending_wakeups(state_store, INTEGRATIONS_TOPIC) == 1

    assert run("disable", "personio:abc") == 0
    assert repository.list_active() == []
    assert run("enable", "personio:abc") == 0
    assert [record.id for record in repository.list_active()] == ["personio:abc"]

    capsys.readouterr()
    assert run("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(item["id"], item["customer_key"], item["enabled"]) for item in listed] == [
        ("personio:abc", "c9", True)
    ]

    assert run("remove", "personio:abc") == 0
    assert repository.get("personio:abc").status == "DELETED"
    assert run("list") == 0 and "no integrations registered" in capsys.readouterr().out
    assert run("remove", "personio:abc") == 1
    assert run("enable", "unknown:1") == 1


def test_admin_command_reports_a_bad_bootstrap_file_with_exit_code_2(state_store, tmp_path, capsys):
    path = write(tmp_path, "integrations: {not: a list}")
    assert main(["load-bootstrap", str(path)], store_factory=lambda url: state_store) == 2
    assert "expected `integrations:`" in capsys.readouterr().err


def test_add_from_kombo_takes_the_customer_key_from_end_user_origin_id(state_store, kombo_sandbox):
    integration_id = kombo_sandbox.admin.create_integration(
        "recruitee", origin_id="cust-42", organization_name="Hooli"
    )["id"]
    client = KomboClient(kombo_sandbox.api_url, kombo_sandbox.api_key)
    code = main(
        ["add", integration_id, "--from-kombo", "--no-wakeup"],
        store_factory=lambda url: state_store,
        client_factory=lambda: client,
    )
    assert code == 0
    record = IntegrationRepository(state_store).get(integration_id)
    assert (record.customer_key, record.organization_name, record.tool, record.category) == (
        "cust-42",
        "Hooli",
        "recruitee",
        "ASSESSMENT",
    )
    assert pending_wakeups(state_store, INTEGRATIONS_TOPIC) == 0
