import json

import httpx
import pytest

from kombo_sync.kombo.client import DEFAULT_BASE_URL, KomboClient
from kombo_sync.kombo.hook import KomboHook, base_url_from_connection, client_options_from_extras

API_KEY = "sk_test_hook_key_123"


def set_connection(monkeypatch, conn_id="kombo_default", **fields):
    fields.setdefault("conn_type", "http")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def recording_transport(response: httpx.Response):
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return response

    return httpx.MockTransport(handler), requests


def test_hook_attributes():
    assert KomboHook.conn_name_attr == "kombo_conn_id"
    assert KomboHook.default_conn_name == "kombo_default"
    assert (KomboHook.conn_type, KomboHook.hook_name) == ("http", "Kombo")


def test_client_is_built_from_the_connection(monkeypatch):
    set_connection(
        monkeypatch,
        host="http://127.0.0.1:8765/v1",
        password=API_KEY,
        extra={
            "timeout": "5",
            "max_retries": "2",
            "backoff_base": "0.1",
            "backoff_cap": 3,
            "rate_limit_per_second": "",
            "max_in_flight_per_integration": "7",
        },
    )
    transport, requests = recording_transport(
        httpx.Response(200, json={"status": "success", "data": {"environment_id": "env_9"}})
    )
    hook = KomboHook(transport=transport)
    client = hook.get_client()
    assert isinstance(client, KomboClient)
    assert client.base_url == "http://127.0.0.1:8765/v1"
    assert (client.timeout, client.max_retries, client.backoff_base, client.backoff_cap) == (5.0, 2, 0.1, 3.0)
    assert client.rate_budget.rate_per_second is None
    assert client.in_flight.max_in_flight == 7
    assert hook.get_client() is client and hook.get_conn() is client  # cached per hook
    assert client.check_api_key().environment_id == "env_9"
    assert str(requests[0].url) == "http://127.0.0.1:8765/v1/check-api-key"
    assert requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_other_connection_id_and_defaults(monkeypatch):
    set_connection(monkeypatch, conn_id="kombo_us", password=API_KEY, extra={"rate_limit_per_second": "12.5"})
    client = KomboHook("kombo_us").get_client()
    assert client.base_url == DEFAULT_BASE_URL
    assert (client.timeout, client.max_retries, client.backoff_cap) == (30.0, 6, 30.0)
    assert client.rate_budget.rate_per_second == 12.5
    assert client.in_flight.max_in_flight == 30


def test_connection_without_api_key_is_refused(monkeypatch):
    set_connection(monkeypatch, host="https://api.kombo.dev/v1")
    with pytest.raises(ValueError, match="API key"):
        KomboHook().get_client()


def test_bad_extra_is_reported_by_name():
    with pytest.raises(ValueError, match="'timeout'"):
        client_options_from_extras({"timeout": "thirty"})
    assert client_options_from_extras({"max_retries": "6.0", "unknown": "x", "rate_limit_burst": "none"}) == {
        "max_retries": 6,
        "rate_limit_burst": None,
    }


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        (None, None, None, "https://api.kombo.dev/v1"),
        ("", "https", None, "https://api.kombo.dev/v1"),
        ("https://api.us.kombo.dev/v1/", None, None, "https://api.us.kombo.dev/v1"),
        ("api.kombo.dev/v1", None, None, "https://api.kombo.dev/v1"),
        ("127.0.0.1/v1", "http", 8765, "http://127.0.0.1:8765/v1"),
        ("127.0.0.1:8765/v1", "http", None, "http://127.0.0.1:8765/v1"),
        ("api.kombo.dev", "v1", None, "https://api.kombo.dev/v1"),  # URI form puts the path into schema
    ],
)
def test_base_url_from_connection(host, schema, port, expected):
    assert base_url_from_connection(host, schema, port) == expected


def test_uri_form_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_DEFAULT", f"http://:{API_KEY}@api.kombo.dev/v1?max_retries=1")
    client = KomboHook().get_client()
    assert client.base_url == "https://api.kombo.dev/v1"
    assert client.max_retries == 1


def test_test_connection_true(monkeypatch):
    set_connection(monkeypatch, host="https://api.kombo.dev/v1", password=API_KEY)
    transport, requests = recording_transport(
        httpx.Response(200, json={"status": "success", "data": {"environment_id": "env_ok"}})
    )
    ok, message = KomboHook(transport=transport).test_connection()
    assert ok is True and "env_ok" in message
    assert requests[0].url.path == "/v1/check-api-key"


def test_test_connection_false_on_bad_key_without_leaking_it(monkeypatch):
    set_connection(monkeypatch, host="https://api.kombo.dev/v1", password=API_KEY)
    body = {
        "status": "error",
        "error": {
            "code": "PLATFORM.AUTHENTICATION_INVALID",
            "title": "Invalid key",
            "message": "The API key is invalid.",
            "log_url": None,
        },
    }
    transport, requests = recording_transport(httpx.Response(401, json=body))
    ok, message = KomboHook(transport=transport).test_connection()
    assert ok is False
    assert "PLATFORM.AUTHENTICATION_INVALID" in message and API_KEY not in message
    assert len(requests) == 1  # a UI check does not retry


def test_test_connection_false_on_server_error_and_missing_connection(monkeypatch):
    set_connection(monkeypatch, host="https://api.kombo.dev/v1", password=API_KEY)
    transport, requests = recording_transport(httpx.Response(503, text="unavailable"))
    ok, message = KomboHook(transport=transport, sleep=lambda s: None).test_connection()
    assert ok is False and "503" in message and len(requests) == 1
    monkeypatch.delenv("AIRFLOW_CONN_KOMBO_DEFAULT")
    ok, message = KomboHook("kombo_missing").test_connection()
    assert ok is False and "kombo_missing" in message
