"""The FastAPI adapter the Airflow plugin mounts: `POST /webhooks` -> `handle_webhook`.

It only reads the raw body (never more than the size cap plus one byte), hands it to the framework-free handler
in a worker thread and writes the answer. Nothing a sender can send produces a 5xx. The one catch-all turns
an unexpected exception into a bare JSON error without a stack trace:

* 503 (with `Retry-After`) for faults of the server's own dependencies: the state database unreachable or
  failing (SQLAlchemy/driver errors), the network, a timeout. Kombo retries the delivery later, and an order
  answered 503 is never rejected: it stays available to the poll.
* 500 for anything else, which can only be a bug: it is logged with its traceback in the api-server log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

if TYPE_CHECKING:
    from kombo_sync.webhooks.handlers import WebhookDeps, WebhookResponse

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks"


def default_deps() -> WebhookDeps:
    """Production wiring: secrets from the connection/environment, the state store and the platform channel
    from their Airflow connections, all resolved on first use (creating the app does no I/O)."""
    from kombo_sync.settings import load_settings
    from kombo_sync.webhooks.handlers import WebhookDeps
    from kombo_sync.webhooks.secrets import SecretProvider

    settings = load_settings()
    return WebhookDeps(
        secrets=SecretProvider(settings.webhook.secret_conn_id),
        settings=recent_settings,
        store_factory=_state_store,
        inviter_factory=_platform_inviter,
        hasher=_candidate_hasher,
        wakeup_window=wakeup_window_seconds(),
    )


DEFAULT_WAKEUP_WINDOW_MS = 200


def wakeup_window_seconds() -> float:
    """`KOMBO_WEBHOOK_WAKEUP_WINDOW_MS` (default 200; 0 = a wake-up per webhook) in seconds: each api-server
    worker writes at most one wake-up per topic per window, the first of a quiet period at once."""
    raw = os.environ.get("KOMBO_WEBHOOK_WAKEUP_WINDOW_MS", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WAKEUP_WINDOW_MS
    except ValueError:
        log.error(
            "KOMBO_WEBHOOK_WAKEUP_WINDOW_MS=%r is not a number; using %s", raw[:20], DEFAULT_WAKEUP_WINDOW_MS
        )
        value = DEFAULT_WAKEUP_WINDOW_MS
    return max(0.0, min(value, 2000.0)) / 1000


SETTINGS_RECHECK_SECONDS = 1.0
_recent: tuple[float, Any] | None = None


def recent_settings() -> Any:
    """`load_settings()`, looked at again at most once a second: it stats the settings file on every call, which
    at hundreds of webhooks a second was a tenth of the handler's time. An edit lands within the second."""
    global _recent
    from kombo_sync.settings import load_settings

    now = time.monotonic()
    current = _recent
    if current is None or now - current[0] >= SETTINGS_RECHECK_SECONDS:
        current = _recent = (now, load_settings())
    return current[1]


def _candidate_hasher() -> Any:
    from kombo_sync.candidate_hash import matching_hasher

    return matching_hasher(recent_settings().retention.salt_conn_id)  # cached a minute


def _state_store() -> Any:
    from kombo_sync.runtime import state_store

    return state_store()


def _platform_inviter() -> Any:
    from kombo_sync.connections import get_connection
    from kombo_sync.invites.platform import PlatformInviter
    from kombo_sync.settings import load_settings

    conn_id = load_settings().intake.platform_conn_id
    conn = get_connection(conn_id)
    if conn is None:
        raise RuntimeError(f"the platform connection {conn_id!r} is not defined")
    return PlatformInviter.from_connection(conn)


def is_dependency_fault(exc: BaseException) -> bool:
    """Whether `exc` is a failure of something the server depends on (database, network), not a bug."""
    import sqlalchemy.exc as sa_exc

    from kombo_sync.state.store import StateStoreError

    if isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | sa_exc.DisconnectionError
    ):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, StateStoreError | ConnectionError | TimeoutError)


def _respond(result: WebhookResponse) -> JSONResponse:
    return JSONResponse(result.body, status_code=result.status_code, headers=dict(result.headers))


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The raw body, but never more than `limit + 1` bytes: enough for the handler to answer 413, and a
    sender announcing (or streaming) 1 GB costs us one megabyte."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


_limiter: anyio.CapacityLimiter | None = None


def _handler_limiter() -> anyio.CapacityLimiter:
    """At most `KOMBO_WEBHOOK_THREADS` (default 8) webhooks are handled at once per api-server worker; the
    rest wait their turn on the event loop. Handling is short and mostly database round trips: a few threads
    keep the database busy, while dozens would only fight over the GIL and stretch every answer."""
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(max(1, int(os.environ.get("KOMBO_WEBHOOK_THREADS", "8"))))
    return _limiter


def create_app(deps_factory: Callable[[], WebhookDeps] | None = None) -> FastAPI:
    """The webhook app; `deps_factory` (default `default_deps`) is called on the first request."""
    app = FastAPI(
        title="Kombo webhooks",
        description="Receives Kombo's signed webhooks (see docs/webhook.md).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    factory = deps_factory or default_deps
    holder: dict[str, WebhookDeps] = {}

    def deps() -> WebhookDeps:
        current = holder.get("deps")
        if current is None:
            current = holder.setdefault("deps", factory())
            # The handler's modules are imported by now (receive_webhook imports them first): frozen with the rest.
            from kombo_sync.webhooks.tuning import tune_webhook_process

            tune_webhook_process()
        return current

    @app.post(WEBHOOK_PATH)
    async def receive_webhook(request: Request) -> JSONResponse:
        # Imported on the first request: Airflow imports plugins in every component, and only the api-server
        # answers webhooks.
        from kombo_sync.webhooks.handlers import handle_webhook
        from kombo_sync.webhooks.tuning import freezer

        freezer.maybe_freeze()
        try:
            webhook_deps = holder.get("deps")
            if webhook_deps is None:
                webhook_deps = await run_in_threadpool(deps)
            # Settings are cached (one stat() of the file per call): cheap enough for the event loop.
            limit = webhook_deps.settings().webhook.max_body_bytes
            body = await read_capped_body(request, limit)
            result = await anyio.to_thread.run_sync(
                handle_webhook, body, request.headers, webhook_deps, limiter=_handler_limiter()
            )
        except ClientDisconnect:
            return JSONResponse(
                {
                    "status": "error",
                    "error": "INCOMPLETE_BODY",
                    "message": "The body was not received in full.",
                },
                status_code=400,
            )
        except Exception as exc:
            return server_fault(exc)
        return _respond(result)

    return app


def server_fault(exc: BaseException) -> JSONResponse:
    """The answer to an unexpected exception: 503 for a dependency fault, 500 for a bug; never a traceback."""
    if is_dependency_fault(exc):
        log.error("Kombo webhook: dependency unavailable (%s); answered 503", type(exc).__name__)
        return JSONResponse(
            {"status": "error", "error": "UNAVAILABLE", "message": "Temporarily unavailable; please retry."},
            status_code=503,
            headers={"Retry-After": "30"},
        )
    import sqlalchemy.exc as sa_exc

    if isinstance(exc, sa_exc.StatementError):
        # Its text carries the statement's parameters, which may be a candidate's data: name the error only.
        log.error(
            "Kombo webhook: database error %s (%s); answered 500",
            type(exc).__name__,
            type(getattr(exc, "orig", None)).__name__,
        )
    else:
        log.exception("Kombo webhook: unexpected error; answered 500")
    return JSONResponse(
        {"status": "error", "error": "INTERNAL", "message": "Internal error; please retry later."},
        status_code=500,
    )
