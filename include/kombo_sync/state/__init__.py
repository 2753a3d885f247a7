"""The pipeline's own state store (never Airflow's metadata DB): schema, migrations, store and repositories.

Names are imported lazily so that `import kombo_sync.state` stays cheap for DAG files.
"""

from __future__ import annotations

from kombo_sync.lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
