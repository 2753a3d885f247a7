"""Airflow plugin: the api-server serves Kombo's webhooks at `POST {KOMBO_WEBHOOK_PREFIX}/webhooks`.

No business logic here: the app and its handlers live in `kombo_sync.webhooks`. Airflow does not authenticate
plugin endpoints; every request is verified by its `X-Kombo-Signature` instead (docs/webhook.md).
Changes to this file or to the handlers need an api-server restart.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

from kombo_sync.webhooks.app import create_app

URL_PREFIX = os.environ.get("KOMBO_WEBHOOK_PREFIX", "/kombo")


class KomboWebhookPlugin(AirflowPlugin):
    name = "kombo_webhook"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Kombo webhooks"}]
