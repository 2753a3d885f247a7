"""Airflow connections as the pipeline reads them: looked up lazily, their extras read, turned into HTTP base URLs
and SQLAlchemy URLs. Every hook, channel and store reads its connection through these."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from kombo_sync.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

_URL_SCHEMES = ("http", "https")


def get_connection(conn_id: str) -> Any | None:
    """The Airflow connection `conn_id`, or None when it is not defined anywhere Airflow looks."""
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # Airflow not installed: the caller falls back to the environment
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def connection_extras(conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict: Airflow's ``extra_dejson``, else the JSON text in ``extra`` (a stand-in
    object), else none."""
    extra = getattr(conn, "extra_dejson", None)
    if isinstance(extra, dict):
        return extra
    raw = getattr(conn, "extra", None)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def http_base_url(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The base URL an HTTP connection names ("" without a host): the host as given when it has a scheme;
    otherwise ``schema`` (http or https; https by default) and the host, with the port before the host's path.

    A ``schema`` that is not http or https is the path of the URI form: ``http://:token@api.kombo.dev/v1``
    parses ``v1`` into ``schema``.
    """
    host = (host or "").strip()
    if not host or "://" in host:
        return host
    scheme = (schema or "").strip().lower()
    path = ""
    if scheme and scheme not in _URL_SCHEMES:
        path = "/" + scheme.strip("/")
        scheme = ""
    netloc, _, rest = host.partition("/")
    if port and ":" not in netloc:
        netloc = f"{netloc}:{port}"
    return f"{scheme or 'https'}://{netloc}" + (f"/{rest}" if rest else path)


def sqlalchemy_url(conn: Any) -> str:
    """A SQLAlchemy URL for an Airflow database connection (sqlite, postgres, mysql, or a full URI in extra)."""
    extra = connection_extras(conn)
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema or ""
        if not path or path == ":memory:":
            return "sqlite://"
        if not path.startswith("/"):
            path = str(PROJECT_ROOT / path)
        return f"sqlite:///{path}"
    if conn_type in {"postgres", "postgresql"}:
        auth = ""
        if conn.login:
            auth = quote(conn.login, safe="")
            if conn.password:
                auth += ":" + quote(conn.password, safe="")
            auth += "@"
        port = f":{conn.port}" if conn.port else ""
        database = conn.schema or "postgres"
        return f"postgresql+psycopg://{auth}{conn.host or '127.0.0.1'}{port}/{database}"
    return normalize_url(conn.get_uri())


def normalize_url(url: str) -> str:
    """Map the URL schemes Airflow and users write to the drivers this project installs."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
