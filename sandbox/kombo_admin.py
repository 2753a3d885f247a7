"""The admin API under `/_sandbox`: it plays the ATS and the Kombo dashboard (integrations, orders, signed
webhooks, fault knobs, the request log).
"""

from __future__ import annotations

import gc
import json
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError

from sandbox.common import utc_now
from sandbox.kombo_admin_models import (
    BulkOrdersIn,
    IntegrationIn,
    IntegrationPatch,
    OrderIn,
    RedeliverIn,
    ResetIn,
    WebhookConfigIn,
    WebhookIn,
    admin_order,
    apply_order_answer,
    emit,
    integration_event_data,
    new_order,
    require_webhook_target,
)
from sandbox.kombo_runtime import KomboRuntime, runtime_of
from sandbox.kombo_state import Integration, NotFound
from sandbox.kombo_validation import (
    InputInvalid,
    parse_ids,
    parse_statuses,
)
from sandbox.webhooks import deliver

admin = APIRouter(prefix="/_sandbox", tags=["sandbox admin"])


@admin.get("/health")
async def admin_health() -> dict[str, Any]:
    return {"ok": True}


@admin.get("/config")
async def admin_config(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    return {
        "environment_id": runtime.environment_id,
        "webhook_url": runtime.webhook_url,
        "webhook_secret_set": bool(runtime.webhook_secret),
        "knobs": runtime.knobs.model_dump(),
    }


@admin.put("/webhook")
async def admin_set_webhook(request: Request, config: WebhookConfigIn) -> dict[str, Any]:
    runtime = runtime_of(request)
    if "url" in config.model_fields_set:
        runtime.webhook_url = config.url
    if config.secret is not None:
        runtime.webhook_secret = config.secret
    return {"webhook_url": runtime.webhook_url, "webhook_secret_set": bool(runtime.webhook_secret)}


@admin.get("/knobs")
async def admin_get_knobs(request: Request) -> dict[str, Any]:
    return runtime_of(request).knobs.model_dump()


@admin.patch("/knobs")
async def admin_set_knobs(request: Request, patch: dict[str, Any]) -> dict[str, Any]:
    runtime = runtime_of(request)
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
    runtime_of(request).reset(keep_knobs=options.keep_knobs, keep_webhook=options.keep_webhook)
    return {"ok": True}


async def _with_integration_webhook(
    runtime: KomboRuntime, event_type: str, integration: Integration, explicit: bool | None
) -> dict[str, Any]:
    """The integration's admin view, with the outcome of its `event_type` webhook (see `emit`)."""
    delivery = await emit(
        runtime,
        event_type,
        integration_event_data(event_type, integration),
        subject=integration.id,
        explicit=explicit,
    )
    return {**integration.admin_view(), "webhook": delivery}


@admin.post("/integrations", status_code=201)
async def admin_create_integration(request: Request, spec: IntegrationIn) -> dict[str, Any]:
    runtime = runtime_of(request)
    require_webhook_target(runtime, spec.emit_webhook)
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
    return await _with_integration_webhook(runtime, "integration-created", integration, spec.emit_webhook)


@admin.get("/integrations")
async def admin_list_integrations(request: Request) -> list[dict[str, Any]]:
    return [integration.admin_view() for integration in runtime_of(request).state.list_integrations()]


@admin.get("/integrations/{integration_id}")
async def admin_get_integration(request: Request, integration_id: str) -> dict[str, Any]:
    integration = runtime_of(request).state.get_integration(integration_id)
    if integration is None:
        raise HTTPException(404, f"integration {integration_id} not found")
    return integration.admin_view()


@admin.patch("/integrations/{integration_id}")
async def admin_update_integration(
    request: Request, integration_id: str, patch: IntegrationPatch
) -> dict[str, Any]:
    runtime = runtime_of(request)
    require_webhook_target(runtime, patch.emit_webhook)
    try:
        integration = runtime.state.update_integration(
            integration_id, status=patch.status, setup_status=patch.setup_status, qa_status=patch.qa_status
        )
    except NotFound:
        raise HTTPException(404, f"integration {integration_id} not found") from None
    return await _with_integration_webhook(
        runtime, "integration-state-changed", integration, patch.emit_webhook
    )


@admin.delete("/integrations/{integration_id}")
async def admin_delete_integration(
    request: Request, integration_id: str, emit_webhook: bool | None = None
) -> dict[str, Any]:
    runtime = runtime_of(request)
    require_webhook_target(runtime, emit_webhook)
    try:
        integration = runtime.state.delete_integration(integration_id)
    except NotFound:
        raise HTTPException(404, f"integration {integration_id} not found") from None
    return await _with_integration_webhook(runtime, "integration-deleted", integration, emit_webhook)


@admin.get("/integrations/{integration_id}/packages")
async def admin_packages(request: Request, integration_id: str) -> dict[str, Any]:
    return runtime_of(request).state.packages_admin_view(integration_id)


def _require_integration(runtime: KomboRuntime, integration_id: str) -> None:
    if runtime.state.get_integration(integration_id) is None:
        raise HTTPException(404, f"integration {integration_id} not found")


@admin.post("/orders", status_code=201)
async def admin_create_order(request: Request, spec: OrderIn) -> dict[str, Any]:
    runtime = runtime_of(request)
    _require_integration(runtime, spec.integration_id)
    require_webhook_target(runtime, spec.deliver_webhook)
    order = new_order(runtime, spec)
    try:
        runtime.state.add_orders([order])
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    delivery = await emit(
        runtime,
        "assessment:order-received",
        order.webhook_data(),
        subject=order.id,
        explicit=spec.deliver_webhook,
    )
    if delivery is not None:
        apply_order_answer(runtime, "assessment:order-received", order.id, delivery)
    return {**admin_order(runtime, order.id), "webhook": delivery}


@admin.post("/orders/bulk", status_code=201)
async def admin_bulk_orders(request: Request, spec: BulkOrdersIn) -> dict[str, Any]:
    runtime = runtime_of(request)
    integration_ids = spec.integration_ids or ([spec.integration_id] if spec.integration_id else [])
    if not integration_ids:
        raise HTTPException(422, "integration_id or integration_ids is required")
    for integration_id in integration_ids:
        _require_integration(runtime, integration_id)
    package_ids = spec.package_ids or [spec.package_id]
    step = timedelta(milliseconds=spec.created_at_step_ms)
    start = spec.created_at_start or (utc_now() - step * spec.count)
    orders = [
        new_order(
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
    if runtime.settings.gc_freeze_bulk:
        # Bulk orders are what a benchmark's requests then work on: kept out of the collector's full
        # collections, which would otherwise look at all of them every few seconds and stop the sandbox for
        # 100-150 ms each time, a latency spike the `latency_ms` knob did not ask for.
        gc.freeze()
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
    return runtime_of(request).state.list_orders(
        integration_id=integration_id,
        statuses=wanted_statuses,
        ids=parse_ids(ids),
        offset=offset,
        limit=limit,
    )


@admin.get("/orders/{order_id}")
async def admin_get_order(request: Request, order_id: str) -> dict[str, Any]:
    return admin_order(runtime_of(request), order_id)


@admin.post("/orders/{order_id}/cancel")
async def admin_cancel_order(request: Request, order_id: str) -> dict[str, Any]:
    """The customer cancels the order in the ATS."""
    runtime = runtime_of(request)
    try:
        runtime.state.set_order_status(order_id, "CANCELLED")
    except NotFound:
        raise HTTPException(404, f"order {order_id} not found") from None
    return admin_order(runtime, order_id)


@admin.post("/webhooks")
async def admin_send_webhook(request: Request, spec: WebhookIn) -> dict[str, Any]:
    runtime = runtime_of(request)
    require_webhook_target(runtime, True, spec.url)
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
            order = new_order(
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
        data = integration_event_data(spec.type, integration)
    delivery = await emit(
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
        apply_order_answer(runtime, spec.type, order_id, delivery)
    if order_id is not None:
        delivery["order"] = admin_order(runtime, order_id)
    return delivery


@admin.post("/webhooks/{event_id}/redeliver")
async def admin_redeliver(
    request: Request, event_id: str, options: RedeliverIn | None = None
) -> dict[str, Any]:
    """Send an earlier event again, byte for byte (same id, same body)."""
    runtime = runtime_of(request)
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
            apply_order_answer(runtime, event["type"], event["subject"], delivery)
    return delivery


@admin.get("/webhooks")
async def admin_list_webhooks(request: Request) -> list[dict[str, Any]]:
    return runtime_of(request).state.list_events()


@admin.get("/requests")
async def admin_requests(
    request: Request, since: int = 0, path_prefix: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    return runtime_of(request).log.entries(since_seq=since, path_prefix=path_prefix, limit=limit)


@admin.delete("/requests")
async def admin_clear_requests(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    runtime.log.clear()
    runtime.in_flight.clear_maxima()
    return {"ok": True}


@admin.get("/logs/{log_id}")
async def admin_log_entry(request: Request, log_id: str) -> dict[str, Any]:
    """Where every error's `log_url` points."""
    try:
        return runtime_of(request).log.get(log_id)
    except NotFound:
        raise HTTPException(404, f"log {log_id} not found") from None


@admin.get("/stats")
async def admin_stats(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    return {
        **runtime.log.stats(),
        **runtime.in_flight.snapshot(),
        "integrations": len(runtime.state.integrations),
        "orders": len(runtime.state.orders),
        "webhook_events": len(runtime.state.events),
    }
