"""Kombo's edge for `/v1` as ASGI middleware: request log, rate limit, concurrency cap, latency and injected faults."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp

from sandbox.common import (
    Receive,
    Scope,
    Send,
    drop_connection,
    json_bytes,
    send_raw,
    server_send,
    wait_for_disconnect,
)
from sandbox.kombo_runtime import BARE_503_BODY, KomboRuntime, bearer, error_payload

logger = logging.getLogger("sandbox.kombo")


def _scope_base_url(scope: Scope) -> str:
    headers = Headers(scope=scope)
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"


class KomboFrontDoor:
    """Kombo's edge for `/v1`: request log, rate limit, concurrency cap, latency and injected faults.

    Admin routes pass straight through: faults never touch them.
    """

    def __init__(self, app: ASGIApp, runtime: KomboRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            await self.app(scope, receive, send)  # type: ignore[arg-type]
            return
        runtime = self.runtime
        knobs = runtime.knobs
        started = time.monotonic()
        method, path = scope["method"], scope["path"]
        headers = Headers(scope=scope)
        integration_id = headers.get("x-integration-id")
        api_key = bearer(headers.get("authorization"))
        entry = runtime.log.start(
            method, path, scope.get("query_string", b"").decode("latin-1"), integration_id
        )
        scope.setdefault("state", {})["sandbox_log_id"] = entry["log_id"]
        log_url = runtime.log_url(_scope_base_url(scope), entry["log_id"])
        extra_headers: list[tuple[bytes, bytes]] = []
        outcome: dict[str, Any] = {"status": None}

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
            await send(message)

        async def send_error(status: int, code: str, message: str) -> None:
            body = json_bytes(error_payload(code, message, None, log_url))
            await send_raw(send_with_headers, status, body)

        is_assessment = path.startswith("/v1/assessment/")
        slot_integration = integration_id if is_assessment else None
        slot_taken = False
        try:
            if api_key in runtime.api_keys and knobs.rate_limit:
                allowed, remaining, reset = runtime.rate_limiter.hit(
                    api_key, knobs.rate_limit, knobs.rate_limit_window_seconds
                )
                extra_headers += [
                    (b"ratelimit-limit", str(knobs.rate_limit).encode()),
                    (b"ratelimit-remaining", str(remaining).encode()),
                    (b"ratelimit-reset", str(reset).encode()),
                ]
                if not allowed:
                    entry["fault"] = "rate_limit"
                    await send_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", "You have exceeded the rate limit.")
                    return
            limit = knobs.concurrency_limit if is_assessment else None
            in_flight = runtime.in_flight.try_acquire(slot_integration, limit)
            if in_flight is None:
                entry["fault"] = "concurrency_limit"
                extra_headers += [
                    (b"concurrency-limit", str(limit).encode()),
                    (b"concurrency-remaining", b"0"),
                ]
                await send_error(
                    429,
                    "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
                    f"Too many concurrent requests for this integration (limit {limit}).",
                )
                return
            slot_taken = True
            if is_assessment and limit is not None:
                extra_headers += [
                    (b"concurrency-limit", str(limit).encode()),
                    (b"concurrency-remaining", str(max(0, limit - in_flight)).encode()),
                ]
            delay_ms = runtime.dice.uniform(knobs.latency_min_ms, knobs.latency_max_ms)
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            fault = runtime.dice.kombo_fault(knobs, method, path)
            entry["fault"] = fault
            if fault == "error":
                await send_error(
                    503, "REMOTE.SERVICE_UNAVAILABLE", "The remote system is temporarily unavailable."
                )
            elif fault == "bare_503":
                await send_raw(send_with_headers, 503, BARE_503_BODY, content_type=b"text/html")
            elif fault == "throttle":
                await send_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", "You have exceeded the rate limit.")
            elif fault == "timeout":
                if await wait_for_disconnect(receive, knobs.timeout_hang_seconds):
                    outcome["status"] = "timeout"
                else:
                    await send_error(504, "PLATFORM.TASK_TIMED_OUT", "The request timed out.")
            elif fault == "lost_response":

                async def swallow(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        outcome["applied_status"] = message["status"]

                await self.app(scope, receive, swallow)  # type: ignore[arg-type]
                if knobs.lost_response_mode == "hang":
                    await wait_for_disconnect(receive, knobs.timeout_hang_seconds)
                await drop_connection(server_send(scope, send), receive, knobs.timeout_hang_seconds)
                outcome["status"] = "lost"
            else:
                await self.app(scope, receive, send_with_headers)  # type: ignore[arg-type]
        finally:
            if slot_taken:
                runtime.in_flight.release(slot_integration)
            runtime.log.finish(entry, outcome["status"], started, outcome.get("applied_status"))
            logger.debug(
                "%s %s integration=%s status=%s fault=%s %.1fms",
                method,
                path,
                integration_id,
                outcome["status"],
                entry["fault"],
                (time.monotonic() - started) * 1000,
            )
