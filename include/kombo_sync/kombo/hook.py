"""Airflow hook that builds a ``KomboClient`` from an HTTP connection (``kombo_default``).

Connection fields follow ``apache-airflow-providers-http``: host = base URL (``https://api.kombo.dev/v1``),
password = API key, extras = tunables (``timeout``, ``max_retries``, ``backoff_base``, ``backoff_cap``,
``rate_limit_per_second``, ``rate_limit_burst``, ``max_in_flight_per_integration``). Extras typed in the UI
arrive as strings and are converted here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import BaseHook

from kombo_sync.connections import connection_extras, http_base_url
from kombo_sync.kombo.client import DEFAULT_BASE_URL, KomboClient

_FLOAT_EXTRAS = ("timeout", "backoff_base", "backoff_cap", "max_retry_after")
_INT_EXTRAS = ("max_retries", "max_in_flight_per_integration", "rate_limit_burst")
_OPTIONAL_EXTRAS = ("rate_limit_per_second", "rate_limit_burst")  # empty / "none" means "not set"


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def _convert(name: str, value: Any, kind: Callable[[Any], Any]) -> Any:
    try:
        if kind is int and isinstance(value, str):
            return int(float(value.strip()))  # "6" and "6.0" from the UI both mean 6
        return kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Kombo connection extra {name!r} must be a number, got {value!r}") from exc


def client_options_from_extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    """KomboClient keyword arguments from connection extras (strings converted, unknown keys ignored)."""
    options: dict[str, Any] = {}
    for name in (*_FLOAT_EXTRAS, "rate_limit_per_second", *_INT_EXTRAS):
        if name not in extras:
            continue
        value = extras[name]
        if _is_unset(value):
            if name in _OPTIONAL_EXTRAS:
                options[name] = None
            continue
        options[name] = _convert(name, value, int if name in _INT_EXTRAS else float)
    return options


def base_url_from_connection(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """Kombo base URL from the connection (`kombo_sync.connections.http_base_url`), Kombo's own without a host."""
    return (http_base_url(host, schema, port) or DEFAULT_BASE_URL).rstrip("/")


class KomboHook(BaseHook):
    """Gives tasks a configured, thread-safe ``KomboClient`` for the ``kombo_default`` connection."""

    conn_name_attr = "kombo_conn_id"
    default_conn_name = "kombo_default"
    conn_type = "http"
    hook_name = "Kombo"

    def __init__(self, kombo_conn_id: str = default_conn_name, **client_overrides: Any) -> None:
        """``client_overrides`` are passed to KomboClient over the connection's values (e.g. a test transport)."""
        super().__init__()
        self.kombo_conn_id = kombo_conn_id
        self._client_overrides = client_overrides
        self._client: KomboClient | None = None

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """KomboClient keyword arguments for the connection (looks the connection up; no network)."""
        conn = self.get_connection(self.kombo_conn_id)
        if not conn.password:
            raise ValueError(f"Kombo connection {self.kombo_conn_id!r} has no API key in its password field")
        config: dict[str, Any] = {
            "base_url": base_url_from_connection(conn.host, conn.schema, conn.port),
            "api_key": conn.password,
        }
        config.update(client_options_from_extras(connection_extras(conn)))
        config.update(self._client_overrides)
        config.update(overrides)
        return config

    def get_client(self) -> KomboClient:
        """The hook's client, built on first use and then reused (its pool and limits are shared)."""
        if self._client is None:
            self._client = KomboClient(**self.client_config())
        return self._client

    def get_conn(self) -> KomboClient:
        return self.get_client()

    def test_connection(self) -> tuple[bool, str]:
        """Check the API key with ``GET /check-api-key``; never raises."""
        try:
            # A UI check should answer quickly, so no retries and a short timeout.
            config = self.client_config(max_retries=0)
            config["timeout"] = min(float(config.get("timeout", 10.0)), 10.0)
            with KomboClient(**config) as client:
                data = client.check_api_key()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Kombo API key is valid for environment {data.environment_id}"
