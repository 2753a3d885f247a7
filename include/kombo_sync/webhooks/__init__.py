"""Kombo webhooks: framework-free handlers (`handlers.handle_webhook`), rejection rules (`rules`), secrets
(`secrets`) and the thin FastAPI adapter (`app.create_app`) that the Airflow plugin mounts.

Nothing is imported here, so that the plugin (loaded by every Airflow component) stays cheap to import.
"""
