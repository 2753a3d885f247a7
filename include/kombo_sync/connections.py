"""Airflow connections as the pipeline reads them: looked up lazily, turned into SQLAlchemy URLs."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from kombo_sync.settings import PROJECT_ROOT

log = logging.getLogger(__name__)


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


def sqlalchemy_url(conn: Any) -> str:
    """A SQLAlchemy URL for an Airflow database connection (sqlite, postgres, mysql, or a full URI in extra)."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
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
