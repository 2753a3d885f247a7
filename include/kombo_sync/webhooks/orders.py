"""Order events: `assessment:order-received` (rejection rules, record, wake the intake) and the inline flow
(record in the event's transaction, then invite now on a small thread pool and answer `assessment_url`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kombo_sync.assets import ORDERS_TOPIC
from kombo_sync.kombo.models import (
    ORDER_STATUS_OPEN,
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED,
    KomboModel,
    OrderReceivedData,
)
from kombo_sync.serving import published_package_ids
from kombo_sync.settings import PipelineSettings
from kombo_sync.state._util import from_row
from kombo_sync.state.events import ANCHOR, Lookup
from kombo_sync.state.integrations import IntegrationRecord
from kombo_sync.state.orders import REJECTED, InvalidTransition, OrderRepository
from kombo_sync.state.schema import integrations, orders
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import request_wakeup
from kombo_sync.webhooks.responses import WebhookResponse, error_response, rejection
from kombo_sync.webhooks.rules import (
    PrefetchedDuplicate,
    RuleConfigurationError,
    RuleContext,
    duplicate_question,
    first_rejection,
    rules_for,
)
from kombo_sync.webhooks.transaction import EventWork, InlineInvitation

if TYPE_CHECKING:
    from kombo_sync.webhooks.deps import WebhookDeps

log = logging.getLogger(__name__)


def order_received(
    order: OrderReceivedData,
    deps: WebhookDeps,
    settings: PipelineSettings,
    work: EventWork,
    *,
    event_type: str = WEBHOOK_ASSESSMENT_ORDER_RECEIVED,
    inline: bool = False,
) -> WebhookResponse | InlineInvitation:
    """Reject (422), or record and wake the intake (200), or for the inline flow record it and leave the
    invitation to run after the commit."""
    store, conn = work.store, work.conn
    repo = OrderRepository(store)
    payload = order.model_dump(mode="json", by_alias=True)
    looked_up = work.looked_up
    prefetched = None
    if looked_up is not None and "order_id" in looked_up:
        # Read with the event (`order_lookup`): no round trip of its own.
        existing, integration = _known_from_row(looked_up)
        prefetched = PrefetchedDuplicate(looked_up.get("duplicate_of"))
    else:
        existing, integration = _known_order_and_integration(conn, order.id, order.integration_id)
    if existing is not None:
        # Seen before (the poll, or an earlier event for the same order): the first decision stands.
        if existing.state == REJECTED:
            return rejection(existing.last_error or "This order was rejected.")
        repo.record_order(payload, "webhook", conn=conn, json_safe=True)
        if inline:
            if existing.invitation_url:
                return WebhookResponse(200, {"assessment_url": existing.invitation_url})
            return InlineInvitation(order)
        return _accepted(order.id, known=True)
    if order.status != ORDER_STATUS_OPEN:
        log.info("order %s arrived with status %s: not recorded", order.id, order.status[:32])
        return WebhookResponse(200, {"status": "IGNORED", "message": "Order is not open."})

    context = RuleContext(
        store=store,
        settings=settings,
        integration=integration,
        published_package_ids=published_package_ids(integration),
        event_type=event_type,
        now=store.now(),
        conn=conn,
        email_hasher=deps.hasher(),
        prefetched_duplicate=prefetched,
    )
    try:
        decision = first_rejection(order, context, rules_for(settings, deps.extra_rules))
    except RuleConfigurationError as exc:
        # The team's rule is broken: not the sender's fault, and the order must not be rejected for it.
        log.error("order %s: rejection rules could not run (%s); answered 503", order.id, exc)
        return error_response(
            503, "RULES_UNAVAILABLE", "The order could not be checked right now; please retry later."
        )
    if decision is not None:
        rule, message = decision
        response = rejection(message)
        recorded = repo.record_order(payload, "webhook", conn=conn, json_safe=True)
        try:
            if recorded.state != REJECTED:
                repo.mark_rejected(order.id, response.body["message"], conn=conn)
        except InvalidTransition:
            # The poll recorded and claimed it between our read and our write: it is being invited.
            log.info("order %s: rule %s would reject it, but it is already being invited", order.id, rule)
            return _accepted(order.id, known=True)
        log.info("order %s (integration %s) rejected by rule %s", order.id, order.integration_id, rule)
        return response

    repo.record_order(payload, "webhook", conn=conn, json_safe=True)
    if inline:
        return InlineInvitation(order)
    work.wake(ORDERS_TOPIC)
    log.info("order %s (integration %s) accepted; intake woken", order.id, order.integration_id)
    return _accepted(order.id, known=False)


@dataclass(frozen=True)
class _KnownOrder:
    state: str
    last_error: str | None
    invitation_url: str | None


# The order's stored decision and the integration's registry row in one round trip: both outer-joined to a one-row
# anchor, so a missing order or integration reads as NULLs. Built once (every order webhook runs it).
_KNOWN_ORDER_AND_INTEGRATION = sa.select(
    orders.c.id.label("order_id"),
    orders.c.state.label("order_state"),
    orders.c.last_error.label("order_last_error"),
    orders.c.invitation_url.label("order_invitation_url"),
    *(column.label(f"integration_{column.name}") for column in integrations.c),
).select_from(
    ANCHOR.outerjoin(orders, orders.c.id == sa.bindparam("order_id_param")).outerjoin(
        integrations, integrations.c.id == sa.bindparam("integration_id_param")
    )
)
_INTEGRATION_LABELS = tuple((f"integration_{column.name}", column.name) for column in integrations.c)


def order_lookup(data: KomboModel | None, deps: WebhookDeps) -> Lookup | None:
    """For an order event: the order's stored decision, the integration's registry row and the duplicate rule's
    question (the candidate's other active order of the package), read with the event in one statement."""
    if not isinstance(data, OrderReceivedData):
        return None
    params = {"order_id_param": data.id, "integration_id_param": data.integration_id}
    duplicate = duplicate_question(data, deps.hasher())
    if duplicate is None:
        return Lookup(_KNOWN_ORDER_AND_INTEGRATION, params)
    query, duplicate_params = duplicate
    return Lookup(_with_duplicate(query), {**params, **duplicate_params})


@cache
def _with_duplicate(duplicate_query: sa.Select) -> sa.Select:
    return _KNOWN_ORDER_AND_INTEGRATION.add_columns(duplicate_query.scalar_subquery().label("duplicate_of"))


def _known_order_and_integration(
    conn: Connection, order_id: str, integration_id: str
) -> tuple[_KnownOrder | None, IntegrationRecord | None]:
    """The order's stored decision and the integration's registry row, read in the event's transaction."""
    row = (
        conn.execute(
            _KNOWN_ORDER_AND_INTEGRATION, {"order_id_param": order_id, "integration_id_param": integration_id}
        )
        .mappings()
        .one()
    )
    return _known_from_row(row)


def _known_from_row(row: Mapping[Any, Any]) -> tuple[_KnownOrder | None, IntegrationRecord | None]:
    known = None
    if row["order_id"] is not None:
        known = _KnownOrder(row["order_state"], row["order_last_error"], row["order_invitation_url"])
    registry = None
    if row["integration_id"] is not None:
        registry = from_row(IntegrationRecord, {name: row[label] for label, name in _INTEGRATION_LABELS})
    return known, registry


def _accepted(order_id: str, *, known: bool) -> WebhookResponse:
    return WebhookResponse(200, {"status": "ACCEPTED", "order_id": order_id, "already_known": known})


_invite_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kombo-inline-invite")


def inline_invite(
    order: OrderReceivedData, deps: WebhookDeps, settings: PipelineSettings, store: StateStore
) -> WebhookResponse:
    """Create the inline flow's invitation now (the order is committed); a failure leaves it to the intake."""
    timeout = settings.webhook.inline_timeout_seconds
    try:
        inviter = deps.inviter()
        future = _invite_pool.submit(deps.invite_now(), store, inviter, order, settings)
        url = future.result(timeout=timeout)
    except FutureTimeout:
        url, reason = None, f"the invitation channel did not answer within {timeout:g} s"
    except Exception as exc:  # any channel failure: Kombo must keep the order (not a 422)
        url, reason = None, f"{type(exc).__name__}: {exc}"[:300]
    else:
        reason = "the invitation channel returned no link"
    if url:
        log.info("inline order %s (integration %s) invited", order.id, order.integration_id)
        return WebhookResponse(200, {"assessment_url": url})
    # The order stays recorded; the intake invites it by e-mail or platform as soon as it can.
    log.warning("inline order %s: invitation not created now (%s); left to the intake", order.id, reason)
    request_wakeup(store, ORDERS_TOPIC)
    return error_response(
        503, "INVITATION_FAILED", "The assessment could not be started right now; it will be sent later."
    )


def default_invite_now(
    store: StateStore, inviter: Any, order: OrderReceivedData, settings: PipelineSettings
) -> str | None:
    """Create the invitation through the intake's `invite_order_now` and return the candidate's link."""
    from kombo_sync.intake import invite_order_now

    result = invite_order_now(store, inviter, order, settings)
    url = _url_of(result)
    if url:
        return url
    record = OrderRepository(store).get(order.id)
    return record.invitation_url if record is not None else None


def _url_of(result: Any) -> str | None:
    if result is None:
        return None
    if isinstance(result, str):
        return result or None
    if isinstance(result, Mapping):
        for key in ("assessment_url", "url", "invitation_url"):
            if result.get(key):
                return str(result[key])
        return None
    for key in ("assessment_url", "url", "invitation_url"):
        value = getattr(result, key, None)
        if value:
            return str(value)
    return None
