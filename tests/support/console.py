"""A state store seeded with one of everything the Kombo console shows, for its tests (and manual checks):
a healthy integration, an unhealthy one (dead letters, a failed invitation, a quarantined row), a disabled one,
orders in several states today and earlier this week, an invitation, webhook events with their answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.coverage import PollCoverage
from kombo_sync.state.erasures import CandidateErasure
from kombo_sync.state.events import WebhookEventLog
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.mapping import payload_hash
from tests.support.webhooks import order_event

HEALTHY = "greenhouse:healthy0001"
UNHEALTHY = "workday:unhealthy0002"
DISABLED = "lever:disabled0003"
CANDIDATE_EMAIL = "ada.lovelace@example.com"
LOG_URL = "https://app.kombo.dev/logs/req_dead_1"


@dataclass(frozen=True)
class SeededConsole:
    now: datetime
    invited_order: str
    invitation_id: str
    application_id: str
    failed_order: str
    dead_orders: tuple[str, ...]
    sent_order: str
    quarantine_id: int
    rejected_event: str
    erased_order: str


def _order(order_id: str, integration_id: str, email: str = CANDIDATE_EMAIL) -> dict[str, Any]:
    data: dict[str, Any] = order_event(order_id=order_id, integration_id=integration_id, email=email)["data"]
    data["candidate"]["first_name"], data["candidate"]["last_name"] = "Ada", "Lovelace"
    return data


def _result(order_id: str, integration_id: str, score: float) -> OutboxEntry:
    payload = {
        "status": "COMPLETED",
        "score": score,
        "max_score": 100,
        "result_url": f"https://r.test/{order_id}",
    }
    return OutboxEntry(order_id, integration_id, payload_hash(payload), payload, None)


def seed_console_state(store: StateStore, now: datetime) -> SeededConsole:
    """Write the example state through the repositories (the only writers of their tables)."""
    store.ensure_migrated()
    registry = IntegrationRepository(store)
    for integration_id, customer in (
        (HEALTHY, "Healthy GmbH"),
        (UNHEALTHY, "Troubled Inc"),
        (DISABLED, "Paused Ltd"),
    ):
        registry.upsert(
            integration_id,
            source="bootstrap",
            customer_key=customer.split()[0].lower(),
            organization_name=customer,
        )
        registry.record_packages_publish(
            integration_id, "hash", now - timedelta(hours=2), package_ids=["p1", "p2"]
        )
    registry.set_enabled(DISABLED, False)
    coverage = PollCoverage(store)
    coverage.record(HEALTHY, now - timedelta(days=1), now - timedelta(minutes=3))
    coverage.record(UNHEALTHY, now - timedelta(days=1), now - timedelta(minutes=3))

    orders = OrderRepository(store)
    invited, failed, rejected = "ord-invited-1", "ord-failed-1", "ord-rejected-1"
    orders.record_order(_order(invited, HEALTHY), "webhook", now=now - timedelta(minutes=30))
    orders.record_order(_order("ord-received-1", HEALTHY), "poll", integration_id=HEALTHY, now=now)
    orders.record_order(
        _order("ord-old-1", HEALTHY), "poll", integration_id=HEALTHY, now=now - timedelta(days=3)
    )
    orders.record_order(_order(failed, UNHEALTHY), "webhook", now=now - timedelta(minutes=20))
    orders.record_order(_order(rejected, UNHEALTHY), "webhook", now=now - timedelta(minutes=10))
    claimed = orders.claim_order(invited, "seed", 60, now=now - timedelta(minutes=29))
    assert claimed is not None
    invitation_id = "inv-platform-42"
    assert orders.mark_invited(
        invited, "seed", invitation_id, "https://assess.test/i/42", "platform", invitation_id
    )
    assert orders.mark_failed(failed, "platform answered 400 (invalid package)")
    assert orders.mark_rejected(rejected, "package not entitled")

    outbox = ResultOutbox(store)
    dead_orders = ("ord-dead-1", "ord-dead-2")
    sent = _result(invited, HEALTHY, 88)
    outbox.enqueue([sent, *(_result(order_id, UNHEALTHY, 70) for order_id in dead_orders)])
    outbox.claim_batch("seed", 10, 60)
    outbox.mark_sent(invited, sent.payload_hash)
    for order_id in dead_orders:
        outbox.mark_dead(
            order_id,
            _result(order_id, UNHEALTHY, 70).payload_hash,
            "INTEGRATION.INACTIVE",
            "The integration is inactive.",
            LOG_URL,
        )
    quarantine_id = Quarantine(store).add(
        "writeback",
        failed,
        f"score 101 above max_score 100 for {CANDIDATE_EMAIL}",
        {"order_id": failed, "email": CANDIDATE_EMAIL},
        run_id="manual__seed",
    )

    events = WebhookEventLog(store)
    accepted_event, rejected_event = "evt-accepted-1", "evt-rejected-1"
    events.record_or_get(
        accepted_event, "assessment:order-received", HEALTHY, invited, now=now - timedelta(minutes=30)
    )
    events.store_response(
        accepted_event, 200, {"status": "ACCEPTED", "order_id": invited, "already_known": False}
    )
    events.record_or_get(
        rejected_event, "assessment:order-received", UNHEALTHY, rejected, now=now - timedelta(minutes=10)
    )
    events.store_response(
        rejected_event,
        422,
        {"status": "ORDER_REJECTED", "message": "The assessment package 'x' is not available."},
    )
    audit = RunAudit(store)
    intake_run = audit.start("intake", "scheduled__2026-01-05T08:00:00+00:00")
    audit.finish(intake_run, "success", {"orders_recorded": 3, "invited": 1})
    writeback_run = audit.start("writeback", "manual__seed")
    audit.finish(writeback_run, "failed", {"sent": 1, "dead": 2})

    erased = "ord-erased-1"
    orders.record_order(_order(erased, HEALTHY, "grace.hopper@example.com"), "poll", integration_id=HEALTHY,
                        now=now - timedelta(days=40))  # fmt: skip
    CandidateErasure(store, None).erase_orders(
        [erased],
        kind="request",
        reason="candidate asked (ticket 7)",
        requested_by="admin",
        run_id="manual__erase",
    )
    return SeededConsole(
        now=now,
        invited_order=invited,
        invitation_id=invitation_id,
        application_id=f"app-{invited}",
        failed_order=failed,
        dead_orders=dead_orders,
        sent_order=invited,
        quarantine_id=quarantine_id,
        rejected_event=rejected_event,
        erased_order=erased,
    )
