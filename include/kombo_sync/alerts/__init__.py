"""Alerts to the team: failed runs, dead letters, orders not invited in time, integrations failing run after run,
and quarantined rows, sent by e-mail and/or a chat webhook as set in `pipeline.yaml` (`alerts:`).

`KomboAlertNotifier` is the DAGs' `on_failure_callback`; `check_and_alert(store, settings, now=...)` (or
`run_alert_checks()`, which builds its own arguments) is called from the report tasks. No alert carries candidate data: only ids, counts, codes and Kombo log links.
Names are imported lazily so that DAG files importing the notifier stay cheap.
"""

from __future__ import annotations

from kombo_sync.lazy import lazy_exports

_EXPORTS = {
    "KomboAlertNotifier": "kombo_sync.alerts.notifier",
    "failed_run_alert": "kombo_sync.alerts.notifier",
    "check_and_alert": "kombo_sync.alerts.check",
    "run_alert_checks": "kombo_sync.alerts.check",
    "Alert": "kombo_sync.alerts.messages",
    "KINDS": "kombo_sync.alerts.messages",
    "AlertLedger": "kombo_sync.alerts.ledger",
    "EmailAlertChannel": "kombo_sync.alerts.channels",
    "WebhookAlertChannel": "kombo_sync.alerts.channels",
    "build_channels": "kombo_sync.alerts.channels",
    "deliver": "kombo_sync.alerts.channels",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
