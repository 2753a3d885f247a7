"""The admin API's request models, and the orders, integrations and webhook events it builds from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, Field

from sandbox.common import (
    iso_ms,
    truncate_ms,
    utc_now,
)
from sandbox.kombo_runtime import KomboRuntime
from sandbox.kombo_state import (
    Integration,
    Order,
)
from sandbox.webhooks import deliver, envelope, is_order_rejection

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


def new_order(runtime: KomboRuntime, spec: OrderIn, created_at: datetime | None = None) -> Order:
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


def integration_event_data(event_type: str, integration: Integration) -> dict[str, Any]:
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


async def emit(
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


def require_webhook_target(runtime: KomboRuntime, explicit: bool | None, url: str | None = None) -> None:
    """Refuse before changing anything when a webhook is demanded but has nowhere to go."""
    if explicit and (url or runtime.webhook_url) is None:
        raise HTTPException(400, "No webhook URL is configured (PUT /_sandbox/webhook or --webhook-url).")


def apply_order_answer(
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


def admin_order(runtime: KomboRuntime, order_id: str) -> dict[str, Any]:
    listed = runtime.state.list_orders(ids=[order_id])
    if not listed:
        raise HTTPException(404, f"order {order_id} not found")
    return listed[0]
