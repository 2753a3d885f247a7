"""Where the webhook secret(s) come from, and the cache that lets a rotation take effect without a restart.

First source that yields a secret wins:

1. the Airflow connection `kombo_webhook` (`settings.webhook.secret_conn_id`): password = current secret,
   extra `{"previous_secrets": ["..."]}` (a list, or a comma-separated string) = secrets still accepted;
2. the environment: `KOMBO_WEBHOOK_SECRET` (one secret) and `KOMBO_WEBHOOK_SECRETS` (comma-separated).

No secret anywhere means no service: every request is answered 503 and the log says why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kombo_sync.connections import connection_extras, get_connection

log = logging.getLogger(__name__)

SECRET_ENV = "KOMBO_WEBHOOK_SECRET"
SECRETS_ENV = "KOMBO_WEBHOOK_SECRETS"
# Long enough to keep connection lookups off the hot path, short enough that a rotation lands within it.
DEFAULT_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class WebhookSecrets:
    """The secrets accepted now and where they came from (never the values in `describe`)."""

    secrets: tuple[str, ...] = field(repr=False)
    source: str = "nowhere"

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def describe(self) -> str:
        return f"{len(self.secrets)} secret(s) from {self.source}"


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if part is not None and str(part).strip()]
    return []


def _dedupe(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def read_webhook_secrets(
    conn_id: str = "kombo_webhook",
    *,
    environ: Mapping[str, str] | None = None,
    connection_getter: Callable[[str], Any | None] = get_connection,
) -> WebhookSecrets:
    """Read the secrets now (no cache): the connection first, then the environment."""
    environ = os.environ if environ is None else environ
    try:
        conn = connection_getter(conn_id)
    except Exception as exc:  # a broken secrets backend must not hide the environment fallback
        log.warning(
            "could not read Airflow connection %s (%s); trying the environment", conn_id, type(exc).__name__
        )
        conn = None
    if conn is not None:
        values = _split(getattr(conn, "password", None)) + _split(
            connection_extras(conn).get("previous_secrets")
        )
        if values:
            return WebhookSecrets(_dedupe(values), f"Airflow connection {conn_id}")
    values = _split(environ.get(SECRET_ENV)) + _split(environ.get(SECRETS_ENV))
    if values:
        return WebhookSecrets(_dedupe(values), f"environment {SECRET_ENV}/{SECRETS_ENV}")
    return WebhookSecrets((), "nowhere")


class SecretProvider:
    """Thread-safe cache over `read_webhook_secrets`; logs clearly (once per refresh) when none is configured."""

    def __init__(
        self,
        conn_id: str = "kombo_webhook",
        *,
        ttl_seconds: float = DEFAULT_CACHE_SECONDS,
        reader: Callable[[], WebhookSecrets] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn_id = conn_id
        self.ttl_seconds = ttl_seconds
        self._reader = reader or (lambda: read_webhook_secrets(self.conn_id))
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: WebhookSecrets | None = None
        self._expires = 0.0

    def __call__(self) -> tuple[str, ...]:
        return self.current().secrets

    def current(self) -> WebhookSecrets:
        now = self._monotonic()
        with self._lock:
            if self._value is not None and now < self._expires:
                return self._value
            value = self._reader()
            changed = self._value is None or value.describe() != self._value.describe()
            self._value, self._expires = value, now + self.ttl_seconds
        if not value:
            log.error(
                "Kombo webhook DISABLED: no webhook secret configured, so every request is answered 503. "
                "Set the password of the Airflow connection '%s' or the environment variable %s "
                "(see docs/webhook.md).",
                self.conn_id,
                SECRET_ENV,
            )
        elif changed:
            log.info("Kombo webhook secrets loaded: %s", value.describe())
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._value, self._expires = None, 0.0
