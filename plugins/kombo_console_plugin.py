"""Airflow plugin: the data team's Kombo console, served by the api-server at `{KOMBO_CONSOLE_PREFIX}/`
(default `/kombo-console/`) and shown as "Kombo" in the Airflow UI's navigation.

No logic here: the app, its queries and its permission checks live in `kombo_sync.console` (docs/console.md).
Unlike the webhook, every console route checks Airflow's own login and permissions. Changes need an api-server
restart.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from kombo_sync.console.app import create_console_app, url_prefix

URL_PREFIX = url_prefix()


class KomboConsolePlugin(AirflowPlugin):
    name = "kombo_console"
    fastapi_apps = [{"app": create_console_app(), "url_prefix": URL_PREFIX, "name": "Kombo console"}]
    # Embedded in the UI at /plugin/kombo. The href is relative (no leading slash): the UI resolves it against
    # its own base URL, so it follows `[api] base_url` and a reverse proxy's prefix.
    external_views = [
        {
            "name": "Kombo",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": "kombo",
        }
    ]
