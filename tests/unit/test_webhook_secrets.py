"""Where the webhook secrets come from, rotation, caching, and the clear log line when there is none."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from kombo_sync.webhooks.secrets import SecretProvider, WebhookSecrets, read_webhook_secrets


def conn(password=None, extra=None):
    return SimpleNamespace(password=password, extra=json.dumps(extra) if extra is not None else None)


def getter(connection):
    return lambda conn_id: connection


def test_connection_password_and_previous_secrets():
    secrets = read_webhook_secrets(
        connection_getter=getter(conn("new", {"previous_secrets": ["old", "older", "new"]})), environ={}
    )
    assert secrets.secrets == ("new", "old", "older")
    assert "kombo_webhook" in secrets.source


def test_previous_secrets_as_comma_separated_text():
    secrets = read_webhook_secrets(
        connection_getter=getter(conn("new", {"previous_secrets": "a, b ,"})), environ={}
    )
    assert secrets.secrets == ("new", "a", "b")


def test_connection_wins_over_environment():
    secrets = read_webhook_secrets(
        connection_getter=getter(conn("from-conn")), environ={"KOMBO_WEBHOOK_SECRET": "from-env"}
    )
    assert secrets.secrets == ("from-conn",)


def test_environment_when_no_connection():
    secrets = read_webhook_secrets(
        connection_getter=getter(None),
        environ={"KOMBO_WEBHOOK_SECRET": "current", "KOMBO_WEBHOOK_SECRETS": "current,previous"},
    )
    assert secrets.secrets == ("current", "previous")
    assert "environment" in secrets.source


def test_connection_without_password_falls_back_to_environment():
    secrets = read_webhook_secrets(
        connection_getter=getter(conn(None)), environ={"KOMBO_WEBHOOK_SECRETS": "x"}
    )
    assert secrets.secrets == ("x",)


def test_broken_secrets_backend_falls_back_to_environment():
    def broken(conn_id):
        raise RuntimeError("vault unreachable")

    assert read_webhook_secrets(connection_getter=broken, environ={"KOMBO_WEBHOOK_SECRET": "e"}).secrets == (
        "e",
    )


def test_nothing_configured():
    secrets = read_webhook_secrets(connection_getter=getter(None), environ={"KOMBO_WEBHOOK_SECRET": "  "})
    assert not secrets and secrets.secrets == ()


def test_secrets_never_appear_in_repr_or_description():
    secrets = WebhookSecrets(("hunter2-secret",), "environment")
    assert "hunter2" not in repr(secrets) and "hunter2" not in secrets.describe()


def test_airflow_connection_from_environment(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_WEBHOOK",
        json.dumps(
            {"conn_type": "generic", "password": "conn-secret", "extra": {"previous_secrets": ["prev"]}}
        ),
    )
    assert read_webhook_secrets("kombo_webhook", environ={}).secrets == ("conn-secret", "prev")


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_provider_caches_until_the_ttl_then_sees_a_rotation():
    values = [WebhookSecrets(("one",), "env")]
    reads = []

    def reader():
        reads.append(1)
        return values[-1]

    clock = FakeTime()
    provider = SecretProvider(ttl_seconds=30, reader=reader, monotonic=clock)
    assert provider() == ("one",)
    values.append(WebhookSecrets(("two", "one"), "env"))
    clock.now = 29
    assert provider() == ("one",) and len(reads) == 1
    clock.now = 31
    assert provider() == ("two", "one") and len(reads) == 2
    provider.invalidate()
    provider()
    assert len(reads) == 3


def test_provider_logs_why_the_webhook_is_disabled(caplog):
    provider = SecretProvider("kombo_webhook", reader=lambda: WebhookSecrets((), "nowhere"))
    with caplog.at_level(logging.ERROR, logger="kombo_sync.webhooks.secrets"):
        assert provider() == ()
    messages = [record.getMessage() for record in caplog.records]
    assert any("no webhook secret configured" in m and "kombo_webhook" in m and "503" in m for m in messages)


@pytest.mark.parametrize("value", ["s3cr3t-value"])
def test_provider_never_logs_the_secret(caplog, value):
    provider = SecretProvider(reader=lambda: WebhookSecrets((value,), "env"))
    with caplog.at_level(logging.DEBUG):
        provider()
    assert all(value not in record.getMessage() for record in caplog.records)
