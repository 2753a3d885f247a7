"""A faithful local Kombo: the ATS-Assessment API under `/v1` (API.md) plus an admin API under `/_sandbox`.

`create_kombo_app(settings)` returns a FastAPI app. Kombo's own paths live under `/v1`, so the pipeline and
the official SDK only swap the base URL (`http://127.0.0.1:8765/v1`). The admin API plays the ATS and the
Kombo dashboard: it creates integrations and orders, sends signed webhooks and turns the fault knobs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from sandbox.common import (
    IdFactory,
    Receive,
    SandboxFastAPI,
    Scope,
    Send,
    drop_connection,
    iso_ms,
    json_bytes,
    parse_kombo_date,
    send_raw,
    server_send,
    truncate_ms,
    utc_now,
    wait_for_disconnect,
)
from sandbox.knobs import Dice, KomboKnobs
from sandbox.kombo_state import (
    InFlight,
    Integration,
    KomboState,
    NotFound,
    Order,
    RateLimiter,
    RequestLog,
    WriteRejected,
)
from sandbox.kombo_validation import (
    InputInvalid,
    parse_ids,
    parse_page_size,
    parse_statuses,
    validate_packages,
    validate_result,
)
from sandbox.webhooks import EVENT_TYPES, deliver, envelope, is_order_rejection

logger = logging.getLogger("sandbox.kombo")

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
CURSOR_VERSION = 1


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


class KomboAPIError(Exception):
    def __init__(self, status_code: int, code: str | None, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.title = title or ERROR_TITLES.get(code or "", "Error")


def _input_invalid(message: str, status_code: int = 400) -> KomboAPIError:
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


def _scope_base_url(scope: Scope) -> str:
    headers = Headers(scope=scope)
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


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
        api_key = _bearer(headers.get("authorization"))
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


# Kombo API (/v1)


def _runtime(request: Request) -> KomboRuntime:
    runtime: KomboRuntime = request.app.state.runtime
    return runtime


def _authenticate(request: Request) -> None:
    if _bearer(request.headers.get("authorization")) not in _runtime(request).api_keys:
        raise KomboAPIError(
            401,
            "PLATFORM.AUTHENTICATION_INVALID",
            "The API key is missing or invalid. Send it as `Authorization: Bearer <API key>`.",
        )


def _integration(request: Request, *, writes_to_ats: bool = False) -> Integration:
    _authenticate(request)
    integration_id = request.headers.get("x-integration-id")
    if not integration_id:
        raise _input_invalid("The `X-Integration-Id` header is required for this endpoint.")
    integration = _runtime(request).state.get_integration(integration_id)
    if integration is None:
        raise KomboAPIError(
            404, "PLATFORM.INTEGRATION_NOT_FOUND", f"No integration with id {integration_id!r} was found."
        )
    if integration.status == "INACTIVE":
        raise KomboAPIError(
            403,
            "INTEGRATION.INACTIVE",
            "The integration is inactive. Enable it again in the Kombo dashboard.",
        )
    if writes_to_ats and integration.status == "INVALID":
        raise KomboAPIError(
            403,
            "INTEGRATION.AUTHENTICATION_INVALID",
            "The integration's credentials are invalid; ask the customer to reconnect it.",
        )
    return integration


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _input_invalid("The request body must be valid JSON.") from None


def _success(data: Any, warnings: list[str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings is not None:
        body["warnings"] = [{"message": message} for message in warnings]
    return JSONResponse(body)


def _cursor_fingerprint(integration_id: str, endpoint: str, filters: dict[str, Any]) -> str:
    canonical = json.dumps([integration_id, endpoint, filters], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _encode_cursor(runtime: KomboRuntime, key: tuple[int, str], fingerprint: str) -> str:
    payload = json.dumps([CURSOR_VERSION, key[0], key[1], fingerprint], separators=(",", ":")).encode()
    tag = hmac.new(runtime.cursor_key, payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(tag + payload).rstrip(b"=").decode("ascii")


def _decode_cursor(runtime: KomboRuntime, cursor: str, fingerprint: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(tag, hmac.new(runtime.cursor_key, payload, hashlib.sha256).digest()[:12]):
            raise ValueError("bad tag")
        version, created_ms, order_id, cursor_fingerprint = json.loads(payload)
        if version != CURSOR_VERSION or not isinstance(created_ms, int) or not isinstance(order_id, str):
            raise ValueError("bad payload")
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise _input_invalid("The `cursor` is invalid or has expired.") from None
    if cursor_fingerprint != fingerprint:
        raise _input_invalid(
            "The `cursor` was created with different filters; keep the filters while paginating."
        )
    return created_ms, order_id


v1 = APIRouter(prefix="/v1")


@v1.get("/check-api-key")
async def check_api_key(request: Request) -> JSONResponse:
    _authenticate(request)
    environment_id = _runtime(request).environment_id
    return _success({"environment_id": environment_id, "customer_id": environment_id})


@v1.get("/integrations/{integration_id}")
async def get_integration(request: Request, integration_id: str) -> JSONResponse:
    _authenticate(request)
    integration = _runtime(request).state.get_integration(integration_id)
    if integration is None:
        raise KomboAPIError(
            404, "PLATFORM.INTEGRATION_NOT_FOUND", f"No integration with id {integration_id!r} was found."
        )
    return _success(integration.details())


@v1.delete("/integrations/{integration_id}")
async def delete_integration(request: Request, integration_id: str) -> JSONResponse:
    _authenticate(request)
    try:
        _runtime(request).state.delete_integration(integration_id)
    except NotFound:
        raise KomboAPIError(
            404, "PLATFORM.INTEGRATION_NOT_FOUND", f"No integration with id {integration_id!r} was found."
        ) from None
    return _success({})


@v1.get("/assessment/packages")
async def get_packages(request: Request) -> JSONResponse:
    integration = _integration(request)
    return _success({"packages": _runtime(request).state.active_packages(integration.id)})


@v1.put("/assessment/packages")
async def put_packages(request: Request) -> JSONResponse:
    integration = _integration(request)
    body = await _json_body(request)
    try:
        packages = validate_packages(body)
    except InputInvalid as exc:
        raise _input_invalid(str(exc)) from None
    warnings = _runtime(request).state.set_packages(integration.id, packages)
    return _success({}, warnings)


@v1.get("/assessment/orders")
async def get_orders(request: Request) -> JSONResponse:
    integration = _integration(request)
    runtime = _runtime(request)
    query = request.query_params
    try:
        page_size = parse_page_size(query.get("page_size"))
        ids = parse_ids(query.get("ids"))
        statuses = parse_statuses(query.get("statuses"))
    except InputInvalid as exc:
        raise _input_invalid(str(exc)) from None
    created_after: datetime | None = None
    raw_created_after = query.get("created_after")
    if raw_created_after is not None and raw_created_after != "":
        created_after = parse_kombo_date(raw_created_after)
        if created_after is None:
            raise _input_invalid("`created_after` must be a date-time like `YYYY-MM-DDTHH:mm:ss.sssZ`.")
    fingerprint = _cursor_fingerprint(
        integration.id,
        "orders",
        {
            "ids": sorted(set(ids)) if ids is not None else None,
            "statuses": sorted(statuses) if statuses is not None else None,
            "created_after": iso_ms(created_after),
        },
    )
    cursor = query.get("cursor")
    after = _decode_cursor(runtime, cursor, fingerprint) if cursor else None
    results, last = runtime.state.page_orders(
        integration.id, after=after, limit=page_size, ids=ids, statuses=statuses, created_after=created_after
    )
    next_cursor = _encode_cursor(runtime, last, fingerprint) if last is not None else None
    return _success({"next": next_cursor, "results": results})


@v1.get("/assessment/orders/open")
async def get_open_orders(request: Request) -> JSONResponse:
    """Deprecated in the contract but still served: OPEN orders without their `status`."""
    integration = _integration(request)
    runtime = _runtime(request)
    try:
        page_size = parse_page_size(request.query_params.get("page_size"))
    except InputInvalid as exc:
        raise _input_invalid(str(exc)) from None
    fingerprint = _cursor_fingerprint(integration.id, "orders/open", {})
    cursor = request.query_params.get("cursor")
    after = _decode_cursor(runtime, cursor, fingerprint) if cursor else None
    results, last = runtime.state.page_orders(
        integration.id, after=after, limit=page_size, statuses={"OPEN"}, with_status=False
    )
    next_cursor = _encode_cursor(runtime, last, fingerprint) if last is not None else None
    return _success({"next": next_cursor, "results": results})


async def _fetch_attachments(runtime: KomboRuntime, body: dict[str, Any]) -> None:
    """Kombo downloads `data_url` attachments right away; a URL that does not resolve fails the write."""
    if runtime.http is None:
        return
    for index, attachment in enumerate(body.get("attachments") or []):
        url = attachment.get("data_url")
        if url is None:
            continue
        try:
            response = await runtime.http.get(url, timeout=10.0, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise _input_invalid(f"`attachments[{index}].data_url` could not be downloaded: {exc}") from None
        if response.status_code != 200:
            raise _input_invalid(
                f"`attachments[{index}].data_url` could not be downloaded (HTTP {response.status_code})."
            )


@v1.put("/assessment/orders/{assessment_order_id}/result")
async def put_result(request: Request, assessment_order_id: str) -> JSONResponse:
    integration = _integration(request, writes_to_ats=True)
    runtime = _runtime(request)
    body = await _json_body(request)
    try:
        warnings = validate_result(body)
    except InputInvalid as exc:
        raise _input_invalid(str(exc)) from None
    order = runtime.state.get_order(assessment_order_id)
    if order is None or order.integration_id != integration.id:
        raise _input_invalid(
            f"No assessment order with id {assessment_order_id!r} exists for this integration.", 404
        )
    if runtime.knobs.fetch_attachment_urls:
        await _fetch_attachments(runtime, body)
    try:
        outcome = runtime.state.record_result(
            integration.id, assessment_order_id, body, getattr(request.state, "sandbox_log_id", None)
        )
    except NotFound:
        raise _input_invalid(
            f"No assessment order with id {assessment_order_id!r} exists for this integration.", 404
        ) from None
    except WriteRejected as exc:
        raise _input_invalid(str(exc)) from None
    if outcome == "noop":
        warnings.append(f"The order is already {order.status} with this exact result; nothing was changed.")
    elif order.status != "OPEN":
        warnings.append(f"The order was already {order.status}; its result details were updated.")
    return _success({}, warnings)


# Admin API (/_sandbox)

IntegrationStatus = Literal["ACTIVE", "INVALID", "INACTIVE"]
SetupStatus = Literal["INCOMPLETE", "FINAL_SYNC_PENDING", "COMPLETED"]
QaStatus = Literal["PENDING", "FAILED", "PASSED"]
OrderStatus = Literal["OPEN", "COMPLETED", "CANCELLED", "REJECTED"]


class EndUserIn(BaseModel):
    organization_name: str = "Acme Inc."
    creator_email: str | None = "it-admin@acme.example.com"
    origin_id: str | None = None


class IntegrationIn(BaseModel):
    tool: str = "workday"
    id: str | None = Field(default=None, description="default: `<tool>:<random 24 chars>`")
    category: Literal["HRIS", "ATS", "ASSESSMENT", "LMS"] = "ASSESSMENT"
    end_user: EndUserIn = Field(default_factory=EndUserIn)
    status: IntegrationStatus = "ACTIVE"
    setup_status: SetupStatus = "COMPLETED"
    qa_status: QaStatus = "PASSED"
    created_at: datetime | None = None
    emit_webhook: bool | None = Field(default=None, description="default: when a webhook URL is configured")


class IntegrationPatch(BaseModel):
    status: IntegrationStatus | None = None
    setup_status: SetupStatus | None = None
    qa_status: QaStatus | None = None
    emit_webhook: bool | None = None


class OrderIn(BaseModel):
    integration_id: str
    package_id: str
    id: str | None = None
    candidate: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    application: dict[str, Any] | None = None
    created_at: datetime | None = None
    status: OrderStatus = "OPEN"
    deliver_webhook: bool | None = Field(
        default=None, description="default: when a webhook URL is configured"
    )


class BulkOrdersIn(BaseModel):
    integration_id: str | None = None
    integration_ids: list[str] | None = Field(default=None, description="orders are spread round-robin")
    count: int = Field(ge=1, le=2_000_000)
    package_id: str = "sandbox-package"
    package_ids: list[str] | None = None
    created_at_start: datetime | None = Field(default=None, description="default: now minus count x step")
    created_at_step_ms: int = Field(default=1, ge=0)
    status: OrderStatus = "OPEN"
    return_ids: bool = True


class WebhookIn(BaseModel):
    type: Literal[
        "assessment:order-received",
        "inline-assessment:order-received",
        "integration-created",
        "integration-deleted",
        "integration-state-changed",
    ]
    order_id: str | None = None
    integration_id: str | None = None
    package_id: str = "sandbox-package"
    data: dict[str, Any] | None = Field(default=None, description="send this `data` verbatim instead")
    event_id: str | None = Field(default=None, description="reuse an event id (a redelivery with a new body)")
    bad_signature: bool = False
    url: str | None = Field(default=None, description="default: the configured webhook URL")
    apply_rejection: bool = Field(default=True, description="a 422 ORDER_REJECTED answer rejects the order")


class RedeliverIn(BaseModel):
    bad_signature: bool = False
    url: str | None = None


class WebhookConfigIn(BaseModel):
    url: str | None = None
    secret: str | None = None


class ResetIn(BaseModel):
    keep_knobs: bool = False
    keep_webhook: bool = False


_FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Linus",
    "Margaret",
)
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Knuth", "Allen", "Torvalds")


def _default_order_parts(runtime: KomboRuntime, order_id: str) -> dict[str, dict[str, Any]]:
    index = sum(ord(ch) for ch in order_id)
    first, last = _FIRST_NAMES[index % len(_FIRST_NAMES)], _LAST_NAMES[index % len(_LAST_NAMES)]
    return {
        "candidate": {
            "remote_id": runtime.ids.new(),
            "email": f"{first.lower()}.{last.lower()}.{order_id[:6].lower()}@example.com",
            "first_name": first,
            "last_name": last,
            "phone": None,
        },
        "application": {"remote_id": runtime.ids.new()},
        "job": {
            "remote_id": runtime.ids.new(),
            "name": "Software Engineer",
            "job_code": "SE-2026-01",
            "description": "<p>Build and run data pipelines.</p>",
            "location": {"city": "Berlin", "country": "DE", "raw": "Berlin, Germany"},
            "hiring_team": [
                {
                    "remote_id": runtime.ids.new(),
                    "email": "recruiter@acme.example.com",
                    "first_name": "Rita",
                    "last_name": "Recruiter",
                    "hiring_team_roles": ["RECRUITER"],
                }
            ],
        },
    }


def _complete(
    default: dict[str, Any], given: dict[str, Any] | None, required: tuple[str, ...]
) -> dict[str, Any]:
    """Merge admin input onto the defaults; every key the contract requires is present (maybe null)."""
    if given is None:
        return default
    merged = {key: given.get(key) for key in required}
    merged.update(given)
    return merged


def _new_order(runtime: KomboRuntime, spec: OrderIn, created_at: datetime | None = None) -> Order:
    order_id = spec.id or runtime.ids.new()
    defaults = _default_order_parts(runtime, order_id)
    now = utc_now()
    created = truncate_ms(created_at or spec.created_at or now)
    if created.tzinfo is None:
        created = created.replace(tzinfo=now.tzinfo)
    candidate = _complete(
        defaults["candidate"], spec.candidate, ("remote_id", "email", "first_name", "last_name", "phone")
    )
    if candidate["email"] is None:
        # The contract says a candidate's e-mail is never null.
        candidate["email"] = defaults["candidate"]["email"]
    job = _complete(
        defaults["job"], spec.job, ("remote_id", "name", "job_code", "description", "location", "hiring_team")
    )
    if job["hiring_team"] is None:
        job["hiring_team"] = []
    return Order(
        id=order_id,
        integration_id=spec.integration_id,
        package_id=spec.package_id,
        status=spec.status,
        candidate=candidate,
        application=_complete(defaults["application"], spec.application, ("remote_id",)),
        job=job,
        created_at=created,
        updated_at=now,
    )


def _end_user(integration: Integration) -> dict[str, Any]:
    return dict(integration.end_user)


def _integration_event_data(event_type: str, integration: Integration) -> dict[str, Any]:
    if event_type == "integration-state-changed":
        return {
            "integration_tool": integration.tool,
            "integration_id": integration.id,
            "integration_category": integration.category,
            "end_user": _end_user(integration),
            "qa_status": integration.qa_status,
            "setup_status": integration.setup_status,
            "state": integration.status,
            "updated_at": iso_ms(integration.updated_at),
        }
    data: dict[str, Any] = {
        "id": integration.id,
        "tool": integration.tool,
        "category": integration.category,
        "end_user": _end_user(integration),
    }
    if event_type == "integration-deleted":
        data["deleted_at"] = iso_ms(utc_now())
    return data


async def _emit(
    runtime: KomboRuntime,
    event_type: str,
    data: dict[str, Any],
    *,
    subject: str | None,
    explicit: bool | None,
    url: str | None = None,
    event_id: str | None = None,
    bad_signature: bool = False,
) -> dict[str, Any] | None:
    """Sign and POST one event; None when not asked for and no webhook URL is configured."""
    target = url or runtime.webhook_url
    if explicit is False:
        return None
    if target is None:
        if explicit:
            raise HTTPException(400, "No webhook URL is configured (PUT /_sandbox/webhook or --webhook-url).")
        return None
    assert runtime.http is not None
    event_id = event_id or runtime.ids.new()
    body = envelope(event_id, event_type, data)
    runtime.state.remember_event(event_id, event_type, body, subject)
    delivery = await deliver(
        runtime.http,
        target,
        runtime.webhook_secret,
        event_id,
        event_type,
        body,
        bad_signature=bad_signature,
        timeout=runtime.settings.webhook_timeout_seconds,
    )
    runtime.state.add_delivery(event_id, delivery)
    return delivery


def _require_webhook_target(runtime: KomboRuntime, explicit: bool | None, url: str | None = None) -> None:
    """Refuse before changing anything when a webhook is demanded but has nowhere to go."""
    if explicit and (url or runtime.webhook_url) is None:
        raise HTTPException(400, "No webhook URL is configured (PUT /_sandbox/webhook or --webhook-url).")


def _apply_order_answer(
    runtime: KomboRuntime, event_type: str, order_id: str, delivery: dict[str, Any]
) -> None:
    """What Kombo does with the receiver's answer: a 422 ORDER_REJECTED rejects, an inline answer is kept."""
    if event_type == "assessment:order-received" and is_order_rejection(
        delivery["status_code"], delivery["json"]
    ):
        runtime.state.set_order_status(
            order_id, "REJECTED", only_if_open=True, message=delivery["json"]["message"]
        )
    if event_type == "inline-assessment:order-received" and isinstance(delivery["json"], dict):
        url = delivery["json"].get("assessment_url")
        if isinstance(url, str):
            runtime.state.set_inline_url(order_id, url)


def _admin_order(runtime: KomboRuntime, order_id: str) -> dict[str, Any]:
    listed = runtime.state.list_orders(ids=[order_id])
    if not listed:
        raise HTTPException(404, f"order {order_id} not found")
    return listed[0]


admin = APIRouter(prefix="/_sandbox", tags=["sandbox admin"])


@admin.get("/health")
async def admin_health() -> dict[str, Any]:
    return {"ok": True}


@admin.get("/config")
async def admin_config(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    return {
        "environment_id": runtime.environment_id,
        "webhook_url": runtime.webhook_url,
        "webhook_secret_set": bool(runtime.webhook_secret),
        "knobs": runtime.knobs.model_dump(),
    }


@admin.put("/webhook")
async def admin_set_webhook(request: Request, config: WebhookConfigIn) -> dict[str, Any]:
    runtime = _runtime(request)
    if "url" in config.model_fields_set:
        runtime.webhook_url = config.url
    if config.secret is not None:
        runtime.webhook_secret = config.secret
    return {"webhook_url": runtime.webhook_url, "webhook_secret_set": bool(runtime.webhook_secret)}


@admin.get("/knobs")
async def admin_get_knobs(request: Request) -> dict[str, Any]:
    return _runtime(request).knobs.model_dump()


@admin.patch("/knobs")
async def admin_set_knobs(request: Request, patch: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(request)
    try:
        knobs = runtime.knobs.merged(patch)
    except ValidationError as exc:
        raise HTTPException(422, json.loads(exc.json(include_url=False))) from None
    runtime.knobs = knobs
    if "seed" in patch:
        runtime.dice.reseed(knobs.seed)
    if {"rate_limit", "rate_limit_window_seconds"} & set(patch):
        runtime.rate_limiter.clear()
    return knobs.model_dump()


@admin.post("/reset")
async def admin_reset(request: Request, options: ResetIn | None = None) -> dict[str, Any]:
    options = options or ResetIn()
    _runtime(request).reset(keep_knobs=options.keep_knobs, keep_webhook=options.keep_webhook)
    return {"ok": True}


@admin.post("/integrations", status_code=201)
async def admin_create_integration(request: Request, spec: IntegrationIn) -> dict[str, Any]:
    runtime = _runtime(request)
    _require_webhook_target(runtime, spec.emit_webhook)
    try:
        integration = runtime.add_integration(
            spec.tool,
            spec.id,
            category=spec.category,
            status=spec.status,
            setup_status=spec.setup_status,
            qa_status=spec.qa_status,
            end_user=spec.end_user.model_dump(),
            created_at=spec.created_at,
        )
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    delivery = await _emit(
        runtime,
        "integration-created",
        _integration_event_data("integration-created", integration),
        subject=integration.id,
        explicit=spec.emit_webhook,
    )
    return {**integration.admin_view(), "webhook": delivery}


@admin.get("/integrations")
async def admin_list_integrations(request: Request) -> list[dict[str, Any]]:
    return [integration.admin_view() for integration in _runtime(request).state.list_integrations()]


@admin.get("/integrations/{integration_id}")
async def admin_get_integration(request: Request, integration_id: str) -> dict[str, Any]:
    integration = _runtime(request).state.get_integration(integration_id)
    if integration is None:
        raise HTTPException(404, f"integration {integration_id} not found")
    return integration.admin_view()


@admin.patch("/integrations/{integration_id}")
async def admin_update_integration(
    request: Request, integration_id: str, patch: IntegrationPatch
) -> dict[str, Any]:
    runtime = _runtime(request)
    _require_webhook_target(runtime, patch.emit_webhook)
    try:
        integration = runtime.state.update_integration(
            integration_id, status=patch.status, setup_status=patch.setup_status, qa_status=patch.qa_status
        )
    except NotFound:
        raise HTTPException(404, f"integration {integration_id} not found") from None
    delivery = await _emit(
        runtime,
        "integration-state-changed",
        _integration_event_data("integration-state-changed", integration),
        subject=integration.id,
        explicit=patch.emit_webhook,
    )
    return {**integration.admin_view(), "webhook": delivery}


@admin.delete("/integrations/{integration_id}")
async def admin_delete_integration(
    request: Request, integration_id: str, emit_webhook: bool | None = None
) -> dict[str, Any]:
    runtime = _runtime(request)
    _require_webhook_target(runtime, emit_webhook)
    try:
        integration = runtime.state.delete_integration(integration_id)
    except NotFound:
        raise HTTPException(404, f"integration {integration_id} not found") from None
    delivery = await _emit(
        runtime,
        "integration-deleted",
        _integration_event_data("integration-deleted", integration),
        subject=integration.id,
        explicit=emit_webhook,
    )
    return {**integration.admin_view(), "webhook": delivery}


@admin.get("/integrations/{integration_id}/packages")
async def admin_packages(request: Request, integration_id: str) -> dict[str, Any]:
    return _runtime(request).state.packages_admin_view(integration_id)


def _require_integration(runtime: KomboRuntime, integration_id: str) -> None:
    if runtime.state.get_integration(integration_id) is None:
        raise HTTPException(404, f"integration {integration_id} not found")


@admin.post("/orders", status_code=201)
async def admin_create_order(request: Request, spec: OrderIn) -> dict[str, Any]:
    runtime = _runtime(request)
    _require_integration(runtime, spec.integration_id)
    _require_webhook_target(runtime, spec.deliver_webhook)
    order = _new_order(runtime, spec)
    try:
        runtime.state.add_orders([order])
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    delivery = await _emit(
        runtime,
        "assessment:order-received",
        order.webhook_data(),
        subject=order.id,
        explicit=spec.deliver_webhook,
    )
    if delivery is not None:
        _apply_order_answer(runtime, "assessment:order-received", order.id, delivery)
    return {**_admin_order(runtime, order.id), "webhook": delivery}


@admin.post("/orders/bulk", status_code=201)
async def admin_bulk_orders(request: Request, spec: BulkOrdersIn) -> dict[str, Any]:
    runtime = _runtime(request)
    integration_ids = spec.integration_ids or ([spec.integration_id] if spec.integration_id else [])
    if not integration_ids:
        raise HTTPException(422, "integration_id or integration_ids is required")
    for integration_id in integration_ids:
        _require_integration(runtime, integration_id)
    package_ids = spec.package_ids or [spec.package_id]
    step = timedelta(milliseconds=spec.created_at_step_ms)
    start = spec.created_at_start or (utc_now() - step * spec.count)
    orders = [
        _new_order(
            runtime,
            OrderIn(
                integration_id=integration_ids[index % len(integration_ids)],
                package_id=package_ids[index % len(package_ids)],
                status=spec.status,
            ),
            created_at=start + step * index,
        )
        for index in range(spec.count)
    ]
    runtime.state.add_orders(orders)
    return {"count": len(orders), "ids": [order.id for order in orders] if spec.return_ids else None}


@admin.get("/orders")
async def admin_list_orders(
    request: Request,
    integration_id: str | None = None,
    statuses: str | None = None,
    ids: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    try:
        wanted_statuses = parse_statuses(statuses)
    except InputInvalid as exc:
        raise HTTPException(422, str(exc)) from None
    return _runtime(request).state.list_orders(
        integration_id=integration_id,
        statuses=wanted_statuses,
        ids=parse_ids(ids),
        offset=offset,
        limit=limit,
    )


@admin.get("/orders/{order_id}")
async def admin_get_order(request: Request, order_id: str) -> dict[str, Any]:
    return _admin_order(_runtime(request), order_id)


@admin.post("/orders/{order_id}/cancel")
async def admin_cancel_order(request: Request, order_id: str) -> dict[str, Any]:
    """The customer cancels the order in the ATS."""
    runtime = _runtime(request)
    try:
        runtime.state.set_order_status(order_id, "CANCELLED")
    except NotFound:
        raise HTTPException(404, f"order {order_id} not found") from None
    return _admin_order(runtime, order_id)


@admin.post("/webhooks")
async def admin_send_webhook(request: Request, spec: WebhookIn) -> dict[str, Any]:
    runtime = _runtime(request)
    _require_webhook_target(runtime, True, spec.url)
    subject: str | None = None
    order_id: str | None = None
    if spec.data is not None:
        data = spec.data
        order_id = subject = spec.order_id
    elif spec.type in ("assessment:order-received", "inline-assessment:order-received"):
        if spec.order_id:
            found = runtime.state.get_order(spec.order_id)
            if found is None:
                raise HTTPException(404, f"order {spec.order_id} not found")
            order = found
        elif spec.integration_id:
            _require_integration(runtime, spec.integration_id)
            order = _new_order(
                runtime, OrderIn(integration_id=spec.integration_id, package_id=spec.package_id)
            )
            runtime.state.add_orders([order])
        else:
            raise HTTPException(422, "order_id, integration_id or data is required")
        order_id = subject = order.id
        data = order.webhook_data()
    else:
        if not spec.integration_id:
            raise HTTPException(422, "integration_id or data is required")
        integration = runtime.state.get_integration(spec.integration_id)
        if integration is None:
            raise HTTPException(404, f"integration {spec.integration_id} not found")
        subject = integration.id
        data = _integration_event_data(spec.type, integration)
    delivery = await _emit(
        runtime,
        spec.type,
        data,
        subject=subject,
        explicit=True,
        url=spec.url,
        event_id=spec.event_id,
        bad_signature=spec.bad_signature,
    )
    assert delivery is not None
    if order_id is not None and spec.apply_rejection:
        _apply_order_answer(runtime, spec.type, order_id, delivery)
    if order_id is not None:
        delivery["order"] = _admin_order(runtime, order_id)
    return delivery


@admin.post("/webhooks/{event_id}/redeliver")
async def admin_redeliver(
    request: Request, event_id: str, options: RedeliverIn | None = None
) -> dict[str, Any]:
    """Send an earlier event again, byte for byte (same id, same body)."""
    runtime = _runtime(request)
    options = options or RedeliverIn()
    try:
        event = runtime.state.get_event(event_id)
    except NotFound:
        raise HTTPException(404, f"event {event_id} not found") from None
    target = options.url or runtime.webhook_url
    if target is None:
        raise HTTPException(400, "No webhook URL is configured.")
    assert runtime.http is not None
    delivery = await deliver(
        runtime.http,
        target,
        runtime.webhook_secret,
        event_id,
        event["type"],
        event["body"],
        bad_signature=options.bad_signature,
        timeout=runtime.settings.webhook_timeout_seconds,
    )
    delivery["redelivery"] = True
    runtime.state.add_delivery(event_id, delivery)
    if event["subject"] and event["type"].endswith("order-received"):
        if runtime.state.get_order(event["subject"]) is not None:
            _apply_order_answer(runtime, event["type"], event["subject"], delivery)
    return delivery


@admin.get("/webhooks")
async def admin_list_webhooks(request: Request) -> list[dict[str, Any]]:
    return _runtime(request).state.list_events()


@admin.get("/requests")
async def admin_requests(
    request: Request, since: int = 0, path_prefix: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    return _runtime(request).log.entries(since_seq=since, path_prefix=path_prefix, limit=limit)


@admin.delete("/requests")
async def admin_clear_requests(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    runtime.log.clear()
    runtime.in_flight.clear_maxima()
    return {"ok": True}


@admin.get("/logs/{log_id}")
async def admin_log_entry(request: Request, log_id: str) -> dict[str, Any]:
    """Where every error's `log_url` points."""
    try:
        return _runtime(request).log.get(log_id)
    except NotFound:
        raise HTTPException(404, f"log {log_id} not found") from None


@admin.get("/stats")
async def admin_stats(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    return {
        **runtime.log.stats(),
        **runtime.in_flight.snapshot(),
        "integrations": len(runtime.state.integrations),
        "orders": len(runtime.state.orders),
        "webhook_events": len(runtime.state.events),
    }


def _is_api_path(request: Request) -> bool:
    return request.url.path == "/v1" or request.url.path.startswith("/v1/")


def _install_error_handlers(app: FastAPI) -> None:
    def envelope_response(
        request: Request, status: int, code: str | None, message: str, title: str | None = None
    ):
        runtime = _runtime(request)
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
