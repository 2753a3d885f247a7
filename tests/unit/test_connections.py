"""How the pipeline reads Airflow connections (`kombo_sync.connections`), and the readers that must agree."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kombo_sync.alerts.channels import WebhookAlertChannel
from kombo_sync.connections import connection_extras, http_base_url
from kombo_sync.invites.platform import PlatformInviter
from kombo_sync.kombo.hook import base_url_from_connection
from kombo_sync.settings import PipelineSettings


def test_connection_extras_prefers_airflows_parsed_extras() -> None:
    assert connection_extras(SimpleNamespace(extra_dejson={"timeout": "5"}, extra='{"timeout": "9"}')) == {
        "timeout": "5"
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('{"path": "/x"}', {"path": "/x"}),
        ("", {}),
        (None, {}),
        ("not json", {}),
        ('["a", "list"]', {}),
    ],
)
def test_connection_extras_reads_the_json_text_of_a_stand_in(extra, expected) -> None:
    assert connection_extras(SimpleNamespace(extra=extra)) == expected


def test_connection_extras_of_an_object_without_extras_is_empty() -> None:
    assert connection_extras(SimpleNamespace(host="h")) == {}


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        (None, None, None, ""),
        ("  ", "https", 443, ""),
        ("https://hooks.example/services/T/", None, 8080, "https://hooks.example/services/T/"),
        ("platform.example.com", None, None, "https://platform.example.com"),
        ("platform.example.com", "HTTP", None, "http://platform.example.com"),
        ("platform.example.com", "https", 8443, "https://platform.example.com:8443"),
        ("127.0.0.1/hook/a", "http", 8099, "http://127.0.0.1:8099/hook/a"),
        ("127.0.0.1:8765/v1", "http", 9999, "http://127.0.0.1:8765/v1"),
        ("api.kombo.dev", "v1", None, "https://api.kombo.dev/v1"),  # the URI form puts the path into schema
    ],
)
def test_http_base_url(host, schema, port, expected) -> None:
    assert http_base_url(host, schema, port) == expected


@pytest.mark.parametrize(
    ("host", "schema", "port"),
    [
        ("https://platform.example.com/api", None, None),
        ("platform.example.com", "https", 8443),
        ("127.0.0.1", "http", 8766),
        ("127.0.0.1:8766", "http", None),
    ],
)
def test_the_http_connection_readers_agree(host, schema, port) -> None:
    conn = SimpleNamespace(host=host, schema=schema, port=port, password="tok", extra_dejson={})
    alerts = PipelineSettings.model_validate({"alerts": {"channels": {"webhook": {"conn_id": "x"}}}}).alerts
    urls = {
        base_url_from_connection(host, schema, port),
        PlatformInviter.from_connection(conn).base_url,
        WebhookAlertChannel.from_connection(conn, alerts).url,
    }
    assert urls == {http_base_url(host, schema, port)}
