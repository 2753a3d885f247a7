"""Kombo webhooks: framework-free handling (`handlers.handle_webhook`, which checks the request and dispatches by
event type to `orders` and `integrations`; `parsing` reads the body, `transaction` makes each event count once),
rejection rules (`rules`), secrets (`secrets`) and the thin FastAPI adapter (`app.create_app`) that the Airflow
plugin mounts.

Nothing is imported here, so that the plugin (loaded by every Airflow component) stays cheap to import.
"""
