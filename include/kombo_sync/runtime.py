"""Task-time factories: the state store, the Kombo client and the warehouse engine, built from connections.

Only task code calls these (never DAG files at parse time). Tests pass their own objects to job functions.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from kombo_sync.connections import get_connection, normalize_url, sqlalchemy_url
from kombo_sync.settings import PipelineSettings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from kombo_sync.kombo.client import KomboClient
    from kombo_sync.state.store import StateStore

_lock = threading.Lock()
_stores: dict[str, StateStore] = {}
_engines: dict[str, Engine] = {}


def state_store(settings: PipelineSettings | None = None) -> StateStore:
    """The pipeline's state store (migrated on first use), one per URL and process."""
    from kombo_sync.state.store import StateStore, resolve_state_url

    settings = settings or load_settings()
    url = resolve_state_url(settings.state_conn_id)
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = StateStore(url)
    store.ensure_migrated()
    return store


def kombo_client(settings: PipelineSettings | None = None) -> KomboClient:
    """A Kombo client built from the `kombo_default` connection (or the one the settings name), whose rate
    budget is the API key's, shared with the other task processes (`KOMBO_RATE_BUDGET`, kombo_sync.kombo.budgets)."""
    from kombo_sync.kombo.budgets import shared_rate_budget
    from kombo_sync.kombo.client import KomboClient
    from kombo_sync.kombo.hook import KomboHook

    resolved = settings or load_settings()
    config = KomboHook(kombo_conn_id=resolved.kombo_conn_id).client_config()
    config["rate_budget"] = shared_rate_budget(
        config["api_key"],
        rate_per_second=config.pop("rate_limit_per_second", None),
        burst=config.pop("rate_limit_burst", None),
        store=lambda: state_store(resolved),
    )
    return KomboClient(**config)


def warehouse_url(settings: PipelineSettings | None = None) -> str:
    settings = settings or load_settings()
    conn = get_connection(settings.warehouse_conn_id)
    if conn is not None:
        return sqlalchemy_url(conn)
    env = os.environ.get("KOMBO_WAREHOUSE_URL")
    if env:
        return normalize_url(env)
    raise RuntimeError(
        f"No warehouse configured: define the Airflow connection '{settings.warehouse_conn_id}' "
        "or set KOMBO_WAREHOUSE_URL"
    )


def warehouse_engine(settings: PipelineSettings | None = None) -> Engine:
    """A SQLAlchemy engine on the provider's warehouse (read-only use), one per URL and process."""
    from sqlalchemy import create_engine

    url = warehouse_url(settings)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_engine(url, pool_pre_ping=True)
    return engine
