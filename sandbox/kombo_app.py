"""A faithful local Kombo: the ATS-Assessment API under `/v1` (API.md) plus an admin API under `/_sandbox`.

`create_kombo_app(settings)` returns a FastAPI app. Kombo's own paths live under `/v1`, so the pipeline and
the official SDK only swap the base URL (`http://127.0.0.1:8765/v1`). The admin API plays the ATS and the
Kombo dashboard: it creates integrations and orders, sends signed webhooks and turns the fault knobs.

This module holds the settings and the app's assembly; the rest lives by router beside it: `kombo_api` (`/v1`),
`kombo_admin` (`/_sandbox`) with `kombo_admin_models` (its request models and what they build),
`kombo_front_door` (the `/v1` edge: log, limits, faults) and `kombo_runtime` (the running state, the errors).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.common import SandboxFastAPI
from sandbox.knobs import KomboKnobs
from sandbox.kombo_admin import admin
from sandbox.kombo_api import v1
from sandbox.kombo_front_door import KomboFrontDoor
from sandbox.kombo_runtime import KomboAPIError, KomboRuntime, error_payload, runtime_of
from sandbox.webhooks import EVENT_TYPES

logger = logging.getLogger("sandbox.kombo")


@dataclass
class KomboSandboxSettings:
    """Start-up configuration; `reset` returns the sandbox to exactly this."""

    api_key: str = "sandbox-key"
    extra_api_keys: tuple[str, ...] = ()
    environment_id: str | None = None
    webhook_url: str | None = None
    webhook_secret: str = "sandbox-webhook-secret"
    webhook_timeout_seconds: float = 10.0
    knobs: KomboKnobs = field(default_factory=KomboKnobs)
    request_log_size: int = 50_000  # entries kept; counters cover every request
    log_url_base: str | None = None  # default: this server's own `/_sandbox/logs/{id}`
    integrations: tuple[str, ...] = ()  # "tool" or "tool:id": ACTIVE integrations present from the start
    # Freeze what is alive after a bulk order creation out of the garbage collector's full collections (the
    # sandbox as its own process, `python -m sandbox`; not when it runs inside a test's process).
    gc_freeze_bulk: bool = False


def _is_api_path(request: Request) -> bool:
    return request.url.path == "/v1" or request.url.path.startswith("/v1/")


def _install_error_handlers(app: FastAPI) -> None:
    def envelope_response(
        request: Request, status: int, code: str | None, message: str, title: str | None = None
    ):
        runtime = runtime_of(request)
        log_url = runtime.log_url(str(request.base_url), getattr(request.state, "sandbox_log_id", None))
        return JSONResponse(error_payload(code, message, title, log_url), status_code=status)

    @app.exception_handler(KomboAPIError)
    async def kombo_error(request: Request, exc: KomboAPIError) -> Response:
        return envelope_response(request, exc.status_code, exc.code, exc.message, exc.title)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if not _is_api_path(request):
            return await request_validation_exception_handler(request, exc)
        return envelope_response(request, 400, "PLATFORM.INPUT_INVALID", f"Invalid request: {exc.errors()}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not _is_api_path(request):
            return await http_exception_handler(request, exc)
        title = "Not found" if exc.status_code == 404 else "Error"
        return envelope_response(request, exc.status_code, None, str(exc.detail), title)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return envelope_response(request, 500, "PLATFORM.UNKNOWN_ERROR", "An unexpected error occurred.")


def create_kombo_app(settings: KomboSandboxSettings | None = None) -> FastAPI:
    """The sandbox app: Kombo's API under `/v1`, the admin API under `/_sandbox`."""
    settings = settings or KomboSandboxSettings()
    runtime = KomboRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.http = httpx.AsyncClient()
        try:
            yield
        finally:
            await runtime.http.aclose()
            runtime.http = None

    app = SandboxFastAPI(
        title="Kombo sandbox",
        description="A local stand-in for Kombo's ATS-Assessment API (see sandbox/README.md).",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.include_router(v1)
    app.include_router(admin)
    _install_error_handlers(app)
    app.add_middleware(KomboFrontDoor, runtime=runtime)
    return app


__all__ = ["EVENT_TYPES", "KomboSandboxSettings", "create_kombo_app"]
