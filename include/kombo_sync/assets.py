"""Assets that wake the pipeline's DAGs as soon as something happens (event-driven scheduling).

Importing this module is cheap and does no I/O: the watchers' triggers run in Airflow's triggerer.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetWatcher

from kombo_sync.triggers import WakeupTrigger

ORDERS_TOPIC = "orders"
INTEGRATIONS_TOPIC = "integrations"

# A webhook accepted a new order: the intake runs at once instead of at its next poll.
ORDERS_RECEIVED = Asset(
    name="kombo_orders_received",
    uri="kombo://orders/received",
    watchers=[AssetWatcher(name="kombo_orders_wakeup", trigger=WakeupTrigger(topic=ORDERS_TOPIC))],
)

# An integration was created or re-activated: its packages are published at once.
INTEGRATIONS_CHANGED = Asset(
    name="kombo_integrations_changed",
    uri="kombo://integrations/changed",
    watchers=[
        AssetWatcher(name="kombo_integrations_wakeup", trigger=WakeupTrigger(topic=INTEGRATIONS_TOPIC))
    ],
)
