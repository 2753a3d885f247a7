"""Kombo's ATS-Assessment API under `/v1` (API.md): integrations, packages, orders, results."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sandbox.common import (
    iso_ms,
    parse_kombo_date,
)
from sandbox.kombo_runtime import KomboAPIError, KomboRuntime, bearer, input_invalid, runtime_of
from sandbox.kombo_state import (
    Integration,
    NotFound,
    WriteRejected,
)
from sandbox.kombo_validation import (
    InputInvalid,
    parse_ids,
    parse_page_size,
    parse_statuses,
    validate_against_openapi,
    validate_packages,
    validate_result,
)

CURSOR_VERSION = 1


def _authenticate(request: Request) -> None:
    if bearer(request.headers.get("authorization")) not in runtime_of(request).api_keys:
        raise KomboAPIError(
            401,
            "PLATFORM.AUTHENTICATION_INVALID",
            "The API key is missing or invalid. Send it as `Authorization: Bearer <API key>`.",
        )


def _integration(request: Request, *, writes_to_ats: bool = False) -> Integration:
    _authenticate(request)
    integration_id = request.headers.get("x-integration-id")
    if not integration_id:
        raise input_invalid("The `X-Integration-Id` header is required for this endpoint.")
    integration = runtime_of(request).state.get_integration(integration_id)
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
        raise input_invalid("The request body must be valid JSON.") from None


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
        raise input_invalid("The `cursor` is invalid or has expired.") from None
    if cursor_fingerprint != fingerprint:
        raise input_invalid(
            "The `cursor` was created with different filters; keep the filters while paginating."
        )
    return created_ms, order_id


v1 = APIRouter(prefix="/v1")


@v1.get("/check-api-key")
async def check_api_key(request: Request) -> JSONResponse:
    _authenticate(request)
    environment_id = runtime_of(request).environment_id
    return _success({"environment_id": environment_id, "customer_id": environment_id})


@v1.get("/integrations/{integration_id}")
async def get_integration(request: Request, integration_id: str) -> JSONResponse:
    _authenticate(request)
    integration = runtime_of(request).state.get_integration(integration_id)
    if integration is None:
        raise KomboAPIError(
            404, "PLATFORM.INTEGRATION_NOT_FOUND", f"No integration with id {integration_id!r} was found."
        )
    return _success(integration.details())


@v1.delete("/integrations/{integration_id}")
async def delete_integration(request: Request, integration_id: str) -> JSONResponse:
    _authenticate(request)
    if await request.body():  # optional; when sent, it is checked like any other body
        try:
            validate_against_openapi(await _json_body(request), "DELETE", "/integrations/{integration_id}")
        except InputInvalid as exc:
            raise input_invalid(str(exc)) from None
    try:
        runtime_of(request).state.delete_integration(integration_id)
    except NotFound:
        raise KomboAPIError(
            404, "PLATFORM.INTEGRATION_NOT_FOUND", f"No integration with id {integration_id!r} was found."
        ) from None
    return _success({})


@v1.get("/assessment/packages")
async def get_packages(request: Request) -> JSONResponse:
    integration = _integration(request)
    return _success({"packages": runtime_of(request).state.active_packages(integration.id)})


@v1.put("/assessment/packages")
async def put_packages(request: Request) -> JSONResponse:
    integration = _integration(request)
    body = await _json_body(request)
    try:
        packages = validate_packages(body)
    except InputInvalid as exc:
        raise input_invalid(str(exc)) from None
    warnings = runtime_of(request).state.set_packages(integration.id, packages)
    return _success({}, warnings)


@v1.get("/assessment/orders")
async def get_orders(request: Request) -> JSONResponse:
    integration = _integration(request)
    runtime = runtime_of(request)
    query = request.query_params
    try:
        page_size = parse_page_size(query.get("page_size"))
        ids = parse_ids(query.get("ids"))
        statuses = parse_statuses(query.get("statuses"))
    except InputInvalid as exc:
        raise input_invalid(str(exc)) from None
    created_after: datetime | None = None
    raw_created_after = query.get("created_after")
    if raw_created_after is not None and raw_created_after != "":
        created_after = parse_kombo_date(raw_created_after)
        if created_after is None:
            raise input_invalid("`created_after` must be a date-time like `YYYY-MM-DDTHH:mm:ss.sssZ`.")
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
    runtime = runtime_of(request)
    try:
        page_size = parse_page_size(request.query_params.get("page_size"))
    except InputInvalid as exc:
        raise input_invalid(str(exc)) from None
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
            raise input_invalid(f"`attachments[{index}].data_url` could not be downloaded: {exc}") from None
        if response.status_code != 200:
            raise input_invalid(
                f"`attachments[{index}].data_url` could not be downloaded (HTTP {response.status_code})."
            )


@v1.put("/assessment/orders/{assessment_order_id}/result")
async def put_result(request: Request, assessment_order_id: str) -> JSONResponse:
    integration = _integration(request, writes_to_ats=True)
    runtime = runtime_of(request)
    body = await _json_body(request)
    try:
        warnings = validate_result(body)
    except InputInvalid as exc:
        raise input_invalid(str(exc)) from None
    order = runtime.state.get_order(assessment_order_id)
    if order is None or order.integration_id != integration.id:
        raise input_invalid(
            f"No assessment order with id {assessment_order_id!r} exists for this integration.", 404
        )
    if runtime.knobs.fetch_attachment_urls:
        await _fetch_attachments(runtime, body)
    try:
        outcome = runtime.state.record_result(
            integration.id, assessment_order_id, body, getattr(request.state, "sandbox_log_id", None)
        )
    except NotFound:
        raise input_invalid(
            f"No assessment order with id {assessment_order_id!r} exists for this integration.", 404
        ) from None
    except WriteRejected as exc:
        raise input_invalid(str(exc)) from None
    if outcome == "noop":
        warnings.append(f"The order is already {order.status} with this exact result; nothing was changed.")
    elif order.status != "OPEN":
        warnings.append(f"The order was already {order.status}; its result details were updated.")
    return _success({}, warnings)
