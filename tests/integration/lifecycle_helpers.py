"""Helpers of the lifecycle integration tests (no tests here): settings, a run of the DAG's two steps, and reads
of what the state store and the channels hold."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kombo_sync.invites import Inviters
from kombo_sync.lifecycle import expire_orders, send_reminders
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.schema import orders, reminders
from kombo_sync.state.store import StateStore
from tests.integration.intake_helpers import make_settings


def lifecycle_settings(**lifecycle: Any) -> PipelineSettings:
    """The intake tests' settings plus small lifecycle pages (several per test) and no retry delay."""
    settings = make_settings()
    values = {"page_size": 2, "send_concurrency": 2, "retry_backoff_seconds": 0, **lifecycle}
    return settings.model_copy(update={"lifecycle": settings.lifecycle.model_validate(values)})


def run_lifecycle(
    store: StateStore, invite_with: Inviters, settings: PipelineSettings, owner: str = "lifecycle:test"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run of the DAG: expire, then remind."""
    expired = expire_orders(store, invite_with, settings)
    reminded = send_reminders(store, invite_with, settings, owner=owner)
    return expired, reminded


def reminder_rows(store: StateStore) -> list[dict[str, Any]]:
    with store.transaction(readonly=True) as conn:
        query = sa.select(reminders).order_by(reminders.c.order_id, reminders.c.number)
        return [dict(row) for row in conn.execute(query).mappings()]


def sent_reminders(store: StateStore) -> dict[str, list[int]]:
    """Order id -> the numbers of its reminders recorded sent."""
    found: dict[str, list[int]] = {}
    for row in reminder_rows(store):
        if row["state"] == "sent":
            found.setdefault(row["order_id"], []).append(row["number"])
    return found


def expiry_of(store: StateStore, order_id: str) -> dict[str, Any]:
    with store.transaction(readonly=True) as conn:
        query = sa.select(
            orders.c.state, orders.c.expired_at, orders.c.expiry_payload_hash, orders.c.last_error
        )
        return dict(conn.execute(query.where(orders.c.id == order_id)).mappings().one())


def platform_reminders(platform: Any) -> dict[str, list[int]]:
    """Order id -> the numbers of the reminders the platform created for it."""
    found: dict[str, list[int]] = {}
    for reminder in platform.admin.invitations()["reminders"]:
        found.setdefault(reminder["order_id"], []).append(reminder["number"])
    return {order_id: sorted(numbers) for order_id, numbers in found.items()}
