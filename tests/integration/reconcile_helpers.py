"""Helpers of the reconcile integration tests (no tests here): orders invited through the real intake, settings,
and a result enqueued for an order, as the write-back would."""

from __future__ import annotations

from typing import Any

from kombo_sync.invites import Inviters
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.store import StateStore
from tests.integration.intake_helpers import (
    email_inviter,
    intake_kombo_client,
    inviters,
    make_settings,
    platform_inviter,
    register,
    run_cycle,
)
from tests.integration.writeback_helpers import expected_payload, result_row


def reconcile_settings(**reconcile: Any) -> PipelineSettings:
    """Intake settings for tests plus a small reconcile page (several pages per test)."""
    settings = make_settings()
    values = {"page_size": 2, "read_concurrency": 2, **reconcile}
    return settings.model_copy(update={"reconcile": settings.reconcile.model_validate(values)})


def channels(settings: PipelineSettings, platform: Any = None, smtp: Any = None) -> Inviters:
    prebuilt = {}
    if platform is not None:
        prebuilt["platform"] = platform_inviter(platform)
    if smtp is not None:
        prebuilt["email"] = email_inviter(smtp, settings)
    return inviters(settings, **prebuilt)


def invited_orders(
    store: StateStore,
    sandbox: Any,
    settings: PipelineSettings,
    invite_with: Inviters,
    count: int,
    *,
    channel: str = "platform",
) -> tuple[str, list[str]]:
    """`count` OPEN orders in the ATS, polled and invited by the intake through `channel`: (integration, ids)."""
    (integration,) = register(store, sandbox, channel=channel)
    ids = sandbox.admin.bulk_create_orders(integration, count)
    _, dispatched = run_cycle(store, intake_kombo_client(sandbox), invite_with, settings)
    assert dispatched["invited"] == count, dispatched
    return integration, sorted(ids)


def enqueue_result(store: StateStore, integration_id: str, order_id: str, seed: int = 0) -> tuple[str, dict]:
    """A completed result for the order in the outbox (pending): (payload hash, payload)."""
    payload = expected_payload(result_row(order_id, seed=seed))
    payload_hash = f"hash-{order_id}-{seed}"
    ResultOutbox(store).enqueue([OutboxEntry(order_id, integration_id, payload_hash, payload, None)])
    return payload_hash, payload
