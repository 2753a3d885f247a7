"""The integration events: created, deleted (its open orders cancelled), state changed (registry)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kombo_sync.assets import INTEGRATIONS_TOPIC
from kombo_sync.kombo.models import (
    IntegrationCreatedData,
    IntegrationDeletedData,
    IntegrationStateChangedData,
    WebhookEndUser,
)
from kombo_sync.state.integrations import (
    ACTIVE,
    ASSESSMENT,
    DELETED,
    IntegrationRecord,
    IntegrationRepository,
)
from kombo_sync.state.orders import InvalidTransition, OrderRepository
from kombo_sync.state.schema import INTEGRATION_STATUSES, orders
from kombo_sync.state.store import StateStore
from kombo_sync.webhooks.responses import WebhookResponse
from kombo_sync.webhooks.transaction import EventWork

log = logging.getLogger(__name__)


def _is_served(record: IntegrationRecord | None) -> bool:
    return (
        record is not None
        and record.category == ASSESSMENT
        and record.status == ACTIVE
        and record.enabled
        and record.deleted_at is None
    )


def _wake_if_newly_served(work: EventWork, before: IntegrationRecord | None, integration_id: str) -> bool:
    after = IntegrationRepository(work.store).get(integration_id, conn=work.conn)
    if _is_served(after) and not _is_served(before):
        work.wake(INTEGRATIONS_TOPIC)
        log.info("integration %s is now served: package sync woken", integration_id)
        return True
    return False


def _record_integration(
    work: EventWork,
    integration_id: str,
    category: str | None,
    tool: str | None,
    end_user: WebhookEndUser,
    *,
    status: str | None = None,
    setup_status: str | None = None,
    qa_status: str | None = None,
) -> bool:
    """Create or refresh the integration as the event describes it, in the event's transaction (None leaves a
    stored value alone); True if it was created."""
    return IntegrationRepository(work.store).upsert(
        integration_id,
        source="webhook",
        category=category,
        tool=tool,
        customer_key=end_user.origin_id,
        organization_name=end_user.organization_name,
        status=status,
        setup_status=setup_status,
        qa_status=qa_status,
        conn=work.conn,
    )


def integration_created(data: IntegrationCreatedData, work: EventWork) -> WebhookResponse:
    """Register the integration; a new assessment integration gets its packages published at once."""
    repo = IntegrationRepository(work.store)
    before = repo.get(data.id, conn=work.conn)
    created = _record_integration(work, data.id, data.category, data.tool, data.end_user)
    woken = _wake_if_newly_served(work, before, data.id)
    return WebhookResponse(
        200, {"status": "OK", "integration_id": data.id, "created": created, "packages_sync_requested": woken}
    )


def integration_deleted(data: IntegrationDeletedData, work: EventWork) -> WebhookResponse:
    """Mark the integration deleted and cancel its orders not yet invited: all work for it stops."""
    repo = IntegrationRepository(work.store)
    if repo.get(data.id, conn=work.conn) is None:
        _record_integration(work, data.id, data.category, data.tool, data.end_user, status=DELETED)
    else:
        repo.mark_deleted(data.id, data.deleted_at, conn=work.conn)
    cancelled = cancel_open_orders(work.store, data.id, conn=work.conn)
    log.info("integration %s deleted; %d open order(s) cancelled", data.id, cancelled)
    return WebhookResponse(200, {"status": "OK", "integration_id": data.id, "orders_cancelled": cancelled})


def cancel_open_orders(store: StateStore, integration_id: str, *, conn: Connection | None = None) -> int:
    """Cancel the integration's orders still waiting for (or in the middle of) their invitation (in `conn`'s
    transaction when given, else one transaction per order)."""
    from kombo_sync.state.orders import INVITING, RECEIVED

    repo = OrderRepository(store)
    with store.transaction(readonly=True, conn=conn) as tx:
        order_ids = list(
            tx.execute(
                sa.select(orders.c.id).where(
                    orders.c.integration_id == integration_id, orders.c.state.in_((RECEIVED, INVITING))
                )
            ).scalars()
        )
    cancelled = 0
    for order_id in order_ids:
        try:
            cancelled += bool(repo.mark_cancelled(order_id, conn=conn))
        except InvalidTransition:
            continue  # invited meanwhile: nothing left to stop
    return cancelled


def integration_state_changed(data: IntegrationStateChangedData, work: EventWork) -> WebhookResponse:
    """Record Kombo's state; an assessment integration that becomes active gets its packages published."""
    repo = IntegrationRepository(work.store)
    before = repo.get(data.integration_id, conn=work.conn)
    known_state = data.state if data.state in INTEGRATION_STATUSES and data.state != DELETED else None
    if known_state is None:
        log.warning("integration %s: unknown state %r kept as it was", data.integration_id, data.state[:32])
    _record_integration(
        work,
        data.integration_id,
        data.integration_category,
        data.integration_tool,
        data.end_user,
        status=known_state,
        setup_status=data.setup_status,
        qa_status=data.qa_status,
    )
    woken = _wake_if_newly_served(work, before, data.integration_id)
    return WebhookResponse(
        200, {"status": "OK", "integration_id": data.integration_id, "packages_sync_requested": woken}
    )
