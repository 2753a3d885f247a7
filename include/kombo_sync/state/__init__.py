"""The pipeline's own state store (never Airflow's metadata DB): schema, migrations, store and repositories.

Names are imported lazily so that `import kombo_sync.state` stays cheap for DAG files.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "StateStore": "kombo_sync.state.store",
    "resolve_state_url": "kombo_sync.state.store",
    "OrderRepository": "kombo_sync.state.orders",
    "IntegrationRepository": "kombo_sync.state.integrations",
    "ResultOutbox": "kombo_sync.state.outbox",
    "WebhookEventLog": "kombo_sync.state.events",
    "RunAudit": "kombo_sync.state.audit",
    "Quarantine": "kombo_sync.state.audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
