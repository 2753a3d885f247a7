"""The Kombo sandbox's running state (`KomboRuntime`, one per app) and its error vocabulary (`KomboAPIError`,
the error envelope), shared by the front door, the `/v1` API and the admin API.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import Request

from sandbox.common import (
    IdFactory,
    truncate_ms,
    utc_now,
)
from sandbox.knobs import Dice
from sandbox.kombo_state import (
    InFlight,
    Integration,
    KomboState,
    RateLimiter,
    RequestLog,
)

if TYPE_CHECKING:
    from sandbox.kombo_app import KomboSandboxSettings

ERROR_TITLES = {
    "PLATFORM.RATE_LIMIT_EXCEEDED": "Rate limit exceeded",
    "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED": "Concurrency limit exceeded",
    "PLATFORM.INTEGRATION_NOT_FOUND": "Integration not found",
    "PLATFORM.INPUT_INVALID": "Input invalid",
    "PLATFORM.UNKNOWN_ERROR": "Unknown error",
    "PLATFORM.AUTHENTICATION_INVALID": "Authentication invalid",
    "PLATFORM.TASK_TIMED_OUT": "Task timed out",
    "INTEGRATION.INACTIVE": "Integration inactive",
    "INTEGRATION.AUTHENTICATION_INVALID": "Integration authentication invalid",
    "REMOTE.SERVICE_UNAVAILABLE": "Remote service unavailable",
}
BARE_503_BODY = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)


class KomboAPIError(Exception):
    def __init__(self, status_code: int, code: str | None, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.title = title or ERROR_TITLES.get(code or "", "Error")


def input_invalid(message: str, status_code: int = 400) -> KomboAPIError:
    return KomboAPIError(status_code, "PLATFORM.INPUT_INVALID", message)


class KomboRuntime:
    """Everything that changes while the sandbox runs; one per app."""

    def __init__(self, settings: KomboSandboxSettings) -> None:
        self.settings = settings
        self.api_keys = {settings.api_key, *settings.extra_api_keys}
        self.rate_limiter = RateLimiter()
        self.in_flight = InFlight()
        self.http: httpx.AsyncClient | None = None
        self.reset()

    def reset(self, keep_knobs: bool = False, keep_webhook: bool = False) -> None:
        settings = self.settings
        if not keep_knobs:
            self.knobs = settings.knobs.model_copy(deep=True)
            self.dice = Dice(self.knobs.seed)
        seed = self.knobs.seed
        self.ids = IdFactory(None if seed is None else f"{seed}:ids")
        self.environment_id = (
            settings.environment_id or IdFactory(None if seed is None else f"{seed}:env").new()
        )
        self.cursor_key = self.ids.new(32).encode()
        if not keep_webhook:
            self.webhook_url = settings.webhook_url
            self.webhook_secret = settings.webhook_secret
        self.state = KomboState(self.ids)
        self.log = RequestLog(settings.request_log_size, self.ids)
        self.rate_limiter.clear()
        self.in_flight.clear_maxima()
        for spec in settings.integrations:
            tool, _, suffix = spec.partition(":")
            self.add_integration(tool, spec if suffix else None)

    def add_integration(
        self,
        tool: str,
        integration_id: str | None = None,
        *,
        category: str = "ASSESSMENT",
        status: str = "ACTIVE",
        setup_status: str = "COMPLETED",
        qa_status: str = "PASSED",
        end_user: dict[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> Integration:
        now = utc_now()
        integration = Integration(
            id=integration_id or f"{tool}:{self.ids.new()}",
            tool=tool,
            category=category,
            status=status,
            setup_status=setup_status,
            qa_status=qa_status,
            end_user=end_user
            or {
                "organization_name": "Acme Inc.",
                "creator_email": "it-admin@acme.example.com",
                "origin_id": None,
            },
            created_at=truncate_ms(created_at) if created_at else now,
            updated_at=now,
            scope_config_id=self.ids.new(),
        )
        return self.state.add_integration(integration)

    def log_url(self, base_url: str, log_id: str | None) -> str | None:
        if log_id is None:
            return None
        base = (self.settings.log_url_base or base_url).rstrip("/")
        return f"{base}/_sandbox/logs/{log_id}"


def error_payload(code: str | None, message: str, title: str | None, log_url: str | None) -> dict[str, Any]:
    return {
        "status": "error",
        "error": {
            "code": code,
            "title": title if title is not None else ERROR_TITLES.get(code or "", "Error"),
            "message": message,
            "log_url": log_url,
        },
    }


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def runtime_of(request: Request) -> KomboRuntime:
    runtime: KomboRuntime = request.app.state.runtime
    return runtime
