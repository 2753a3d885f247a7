"""The lifecycle job: reminders to candidates who have not finished, and expiry of orders without a result.

Both walk the invited orders that are not finished (no version of a result in the outbox, whatever its state),
in keyset pages, and apply each order's schedule (``schedule.plan_for``).

**Expiry** (``expire_orders``): an order past its expiry time has its invitation revoked through its channel
(the platform's idempotent revoke; e-mail answers ``not_revocable``), **then**, in one transaction, becomes
``cancelled`` with ``expired_at`` (only if still invited and still without a result) and its CANCELLED result
with a TEXT attribute saying it expired and when is enqueued in the result outbox, which the write-back sends
exactly once. Revoking first makes a kill in between harmless: the order is still invited, the next run revokes
again (``already_revoked``) and records it. A candidate who finished meanwhile (the platform answers
``finished``) is not expired: the result is on its way. Before expiring, the due orders of a page are looked up
in Kombo (``GET /assessment/orders?ids=``, per integration): one that left OPEN without us (the recruiter
cancelled it in the ATS since the last reconcile) gets no expiry result; it is handled as the reconcile handles
it (invitation revoked, order ``cancelled``). When Kombo cannot be read, the expiry goes ahead as before.

**Reminders** (``send_reminders``): the due reminder of an order (the latest one due, before the expiry) is
claimed with a lease (``ReminderLog.claim``: only an invited, unfinished order whose candidate data was not
erased), sent through the order's channel with the idempotency key ``<order id>:reminder:<number>``, and
recorded ``sent`` only while the lease is still ours. A dead worker's claim is taken over when its lease runs
out and re-sent with the same key: the platform answers with the same reminder; SMTP sends a second e-mail with
the same ``Message-ID`` (the window of docs/intake.md, one commit wide).

Nothing here reads or logs candidate data except to hand the e-mail channel its recipient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kombo_sync.backoff import exponential_delay
from kombo_sync.intake.claims import write_gate
from kombo_sync.invites import InvitationError, InviterConfigurationError, Inviters, ReminderRequest
from kombo_sync.invites.base import FINISHED, REMINDER_NOT_NEEDED, REVOCATION_STATUSES
from kombo_sync.lifecycle.schedule import LifecyclePlan, Plans
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.integrations import DELETED
from kombo_sync.state.orders import INVITED, InvalidTransition, OrderRepository
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.reminders import FAILED, SKIPPED, ClaimedReminder, ReminderLog
from kombo_sync.state.schema import integrations, orders, result_outbox
from kombo_sync.state.store import StateStore

if TYPE_CHECKING:
    from kombo_sync.kombo.client import KomboClient

log = logging.getLogger(__name__)

EXPIRE_JOB = "lifecycle.expire"
REMIND_JOB = "lifecycle.remind"

# Steps, for fault tests (``on_step``). Expiry: after the channel revoked, after the state store recorded it.
STEP_REVOKED = "revoked"
STEP_RECORDED = "recorded"
# Reminders: after the claim, after the channel accepted, after the commit.
STEP_CLAIMED = "claimed"
STEP_SENT = "sent"
STEP_COMMITTED = "committed"

EXPIRY_LABEL = "Expired"


@dataclass(frozen=True)
class OpenOrder:
    """An invited order without any result (ids, channel and times only: no candidate data)."""

    order_id: str
    integration_id: str
    package_id: str
    channel: str | None
    invited_at: datetime | None
    invitation_url: str | None
    erased: bool


def open_orders(
    store: StateStore, *, page_size: int, integration_ids: Sequence[str] | None = None
) -> Iterator[list[OpenOrder]]:
    """Pages of invited orders with no result version in the outbox (finished orders have one), by order id."""
    finished = sa.exists().where(result_outbox.c.order_id == orders.c.id)
    # A deleted integration's invited orders are the reconcile's (it cancels them): no reminder, no expiry.
    deleted = sa.exists().where(
        integrations.c.id == orders.c.integration_id,
        sa.or_(integrations.c.status == DELETED, integrations.c.deleted_at.is_not(None)),
    )
    base = (
        sa.select(
            orders.c.id,
            orders.c.integration_id,
            orders.c.package_id,
            orders.c.channel,
            orders.c.invited_at,
            orders.c.invitation_url,
            orders.c.erased_at.is_not(None),
        )
        .where(orders.c.state == INVITED, ~finished, ~deleted)
        .order_by(orders.c.id)
        .limit(page_size)
    )
    if integration_ids is not None:
        base = base.where(orders.c.integration_id.in_(sorted(set(integration_ids))))
    after: str | None = None
    while True:
        query = base if after is None else base.where(orders.c.id > after)
        with store.transaction(readonly=True) as conn:
            page = [_open_order(row) for row in conn.execute(query)]
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        after = page[-1].order_id


def _open_order(row: Any) -> OpenOrder:
    order_id, integration_id, package_id, channel, invited_at, invitation_url, erased = row
    return OpenOrder(order_id, integration_id, package_id, channel, invited_at, invitation_url, bool(erased))


def _kombo_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def expiry_result(expired_at: datetime, invited_at: datetime | None, result_url: str) -> dict[str, Any]:
    """The CANCELLED result written back for an expired order, with a TEXT attribute saying it expired and when
    (Kombo's wire form, validated like every result)."""
    from kombo_sync.kombo.models import ResultPayload

    when = expired_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    since = ""
    if invited_at is not None:
        since = f", {(expired_at - invited_at) / timedelta(days=1):.3g} days after the invitation"
    payload = {
        "status": "CANCELLED",
        "result_url": result_url,
        "completed_at": _kombo_time(expired_at),
        "attributes": [
            {
                "type": "TEXT",
                "label": EXPIRY_LABEL,
                "value": f"The assessment invitation expired on {when}{since}, without a result.",
            }
        ],
        "attachments": [],
    }
    wire: dict[str, Any] = ResultPayload.model_validate(payload).to_wire()
    return wire


def _result_url(order: OpenOrder, settings: PipelineSettings) -> str:
    if order.invitation_url:
        return order.invitation_url
    if settings.lifecycle.expiry_result_url:
        return settings.lifecycle.expiry_result_url
    from kombo_sync.invites.email import assessment_link

    request = ReminderRequest(order.order_id, order.integration_id, order.package_id, 0)
    return assessment_link(settings.intake.assessment_url_template, request)  # type: ignore[arg-type]


def expire_orders(
    store: StateStore,
    inviters: Inviters,
    settings: PipelineSettings,
    *,
    client: KomboClient | None = None,
    integration_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    on_step: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Expire every invited order past its expiry time without a result; returns the counts. With a Kombo
    `client`, due orders Kombo no longer lists as OPEN are cancelled as the reconcile does, without a result."""
    from kombo_sync.reconcile.decide import CANCEL, Decision
    from kombo_sync.reconcile.job import cancel_invited
    from kombo_sync.reconcile.scan import InvitedOrder
    from kombo_sync.writeback.mapping import payload_hash

    plans = Plans(settings.lifecycle)
    repo = OrderRepository(store)
    outbox = ResultOutbox(store)
    counts = dict.fromkeys(
        ("checked", "due", "expired", "revoke_failed", "finished_meanwhile", "changed_meanwhile",
         "left_open_in_ats", "cancelled", "kombo_unreadable"),
        0,
    )  # fmt: skip
    revocations: dict[str, int] = dict.fromkeys(REVOCATION_STATUSES, 0)
    errors: list[dict[str, str | None]] = []
    for page in open_orders(store, page_size=settings.lifecycle.page_size, integration_ids=integration_ids):
        due = []
        for order in page:
            counts["checked"] += 1
            plan = plans(order.integration_id, order.package_id)
            if order.invited_at is None or not plan.is_expired(order.invited_at, store.now()):
                continue
            counts["due"] += 1
            due.append((order, plan))
        left_open = _left_open_in_ats(client, [order for order, _ in due], counts)
        for order, plan in due:
            reason_left = left_open.get(order.order_id)
            if reason_left is not None:
                counts["left_open_in_ats"] += 1
                if dry_run:
                    log.info(
                        "dry run: order %s would be cancelled, not expired (%s)", order.order_id, reason_left
                    )
                    continue
                # The reconcile's cancellation: revoke, then record the order `cancelled`.
                invited = InvitedOrder(order.order_id, order.integration_id, order.channel, order.invited_at)
                decision = Decision(CANCEL, reason_left)
                cancel_invited(repo, inviters, invited, decision, counts, revocations, errors, on_step)
                continue
            if dry_run:
                log.info("dry run: order %s would expire (invited %s)", order.order_id, order.invited_at)
                continue
            days = (plan.expiry or timedelta(0)) / timedelta(days=1)
            reason = f"expired: no result within {days:g} days of the invitation"
            try:
                answer = inviters.revoker(order.channel).revoke(order.order_id, reason)
            except (InvitationError, InviterConfigurationError) as error:
                counts["revoke_failed"] += 1
                errors.append(
                    {"order_id": order.order_id, "channel": order.channel, "error": str(error)[:300]}
                )
                log.warning("order %s: revoking its expired %s invitation failed: %s", order.order_id,
                            order.channel, error)  # fmt: skip
                continue
            revocations[answer.status] = revocations.get(answer.status, 0) + 1
            if answer.status == FINISHED:
                # The candidate finished just now: the result is on its way through the warehouse.
                counts["finished_meanwhile"] += 1
                log.info("order %s: not expired, the candidate finished (%s)", order.order_id, answer.detail)
                continue
            if on_step is not None:
                on_step(STEP_REVOKED, order.order_id)
            expired_at = store.now()
            payload = expiry_result(expired_at, order.invited_at, _result_url(order, settings))
            digest = payload_hash(payload)
            detail = f"{reason}; invitation {answer.status}"
            with write_gate(store), store.transaction() as conn:
                try:
                    changed = repo.expire(
                        order.order_id, reason=detail, payload_hash=digest, now=expired_at, conn=conn
                    )
                except InvalidTransition:
                    changed = False
                if changed:
                    outbox.enqueue(
                        [OutboxEntry(order.order_id, order.integration_id, digest, payload, None)],
                        now=expired_at,
                        conn=conn,
                    )
            if changed:
                counts["expired"] += 1
                log.info("order %s expired; invitation %s; CANCELLED result queued", order.order_id,
                         answer.status)  # fmt: skip
            else:
                counts["changed_meanwhile"] += 1
                log.info("order %s: no longer invited without a result, left as it is", order.order_id)
            if on_step is not None:
                on_step(STEP_RECORDED, order.order_id)
    summary: dict[str, Any] = {
        "dry_run": dry_run,
        **counts,
        "revocations": revocations,
        "revoke_errors": errors[:50],
    }
    log.info("expiry%s: %s", " (dry run)" if dry_run else "",
             {k: v for k, v in summary.items() if not isinstance(v, list)})  # fmt: skip
    return summary


def _left_open_in_ats(
    client: KomboClient | None, due: Sequence[OpenOrder], counts: dict[str, int]
) -> dict[str, str]:
    """order id -> why, for the due orders Kombo lists as no longer OPEN although we wrote nothing (cancelled or
    rejected in the ATS, completed by someone else): the reconcile's rule (``reconcile.decide``) on Kombo's
    status. An integration Kombo cannot be read for is counted and its orders expire as before."""
    from kombo_sync.reconcile.decide import CANCEL, decide
    from kombo_sync.reconcile.job import read_statuses

    if client is None or not due:
        return {}
    by_integration: dict[str, list[str]] = {}
    for order in due:
        by_integration.setdefault(order.integration_id, []).append(order.order_id)
    left: dict[str, str] = {}
    for integration_id, order_ids in by_integration.items():
        found = read_statuses(client, integration_id, order_ids)
        if isinstance(found, str):
            counts["kombo_unreadable"] += len(order_ids)
            log.warning("expiry: integration %s could not be read from Kombo (%s); its due orders expire "
                        "without the check", integration_id, found)  # fmt: skip
            continue
        now = datetime.now(UTC)
        for order_id in order_ids:
            decision = decide(found.get(order_id), [], now=now)
            if decision.outcome == CANCEL:
                left[order_id] = decision.reason or "left OPEN in the ATS"
    return left


@dataclass(frozen=True)
class _Due:
    order: OpenOrder
    number: int
    due_at: datetime
    plan: LifecyclePlan


def send_reminders(
    store: StateStore,
    inviters: Inviters,
    settings: PipelineSettings,
    *,
    owner: str,
    integration_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    on_step: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Send every reminder due now (at most one per order), each exactly once; returns the counts."""
    config = settings.lifecycle
    plans = Plans(config)
    log_ = ReminderLog(store)
    gate = write_gate(store)
    counts = dict.fromkeys(
        ("checked", "due", "sent", "not_needed", "retry_later", "failed", "not_claimed", "lease_lost"), 0
    )
    by_number: dict[str, int] = {}
    errors: list[dict[str, str | None]] = []

    def one(due: _Due) -> str:
        order = due.order
        with gate:
            claim = log_.claim(order.order_id, due.number, order.channel or "", due.due_at, owner,
                               config.lease_seconds)  # fmt: skip
        if claim is None:
            return "not_claimed"
        if on_step is not None:
            on_step(STEP_CLAIMED, order.order_id)
        try:
            channel = inviters.reminder(order.channel)
            answer = channel.remind(_request(store, due), claim.idempotency_key)
        except (InvitationError, InviterConfigurationError) as error:
            return _failed(claim, error)
        if on_step is not None:
            on_step(STEP_SENT, order.order_id)
        with gate:
            if answer.status == REMINDER_NOT_NEEDED:
                done = log_.mark_ended(claim, SKIPPED, answer.detail or "not needed")
                outcome = "not_needed"
            else:
                done = log_.mark_sent(claim, answer.external_id)
                outcome = "sent"
        if on_step is not None:
            on_step(STEP_COMMITTED, order.order_id)
        return outcome if done else "lease_lost"

    def _failed(claim: ClaimedReminder, error: Exception) -> str:
        retriable = isinstance(error, InviterConfigurationError) or getattr(error, "retriable", False)
        errors.append({"order_id": claim.order_id, "reminder": str(claim.number), "error": str(error)[:300]})
        log.warning("reminder %d of order %s failed: %s", claim.number, claim.order_id, error)
        with gate:
            if retriable and claim.attempts < config.max_attempts:
                delay = exponential_delay(config.retry_backoff_seconds, claim.attempts - 1, cap=24 * 3600)
                log_.release_with_error(claim, str(error), store.now() + timedelta(seconds=delay))
                return "retry_later"
            give_up = str(error) if not retriable else f"gave up after {claim.attempts} attempts: {error}"
            log_.mark_ended(claim, FAILED, give_up)
        return "failed"

    with ThreadPoolExecutor(config.send_concurrency, thread_name_prefix="kombo-remind") as pool:
        for page in open_orders(store, page_size=config.page_size, integration_ids=integration_ids):
            eligible = [
                order
                for order in page
                if not order.erased and order.invited_at is not None and order.channel is not None
            ]
            now = store.now()
            recorded = log_.recorded_numbers((order.order_id for order in eligible), now=now)
            due: list[_Due] = []
            for order in eligible:
                counts["checked"] += 1
                plan = plans(order.integration_id, order.package_id)
                assert order.invited_at is not None
                number = plan.due_reminder(order.invited_at, now, recorded.get(order.order_id, ()))
                if number is not None:
                    due.append(_Due(order, number, plan.reminder_due_at(order.invited_at, number), plan))
            counts["due"] += len(due)
            if dry_run:
                for item in due:
                    log.info("dry run: reminder %d of order %s is due", item.number, item.order.order_id)
                continue
            for item, outcome in zip(due, pool.map(one, due), strict=True):
                counts[outcome] += 1
                if outcome == "sent":
                    key = str(item.number)
                    by_number[key] = by_number.get(key, 0) + 1
    summary: dict[str, Any] = {
        "dry_run": dry_run,
        **counts,
        "sent_by_number": by_number,
        "errors": errors[:50],
    }
    log.info("reminders%s: %s", " (dry run)" if dry_run else "",
             {k: v for k, v in summary.items() if not isinstance(v, list)})  # fmt: skip
    return summary


def _request(store: StateStore, due: _Due) -> ReminderRequest:
    """What the channel needs for this reminder; the e-mail channel also needs the candidate's address."""
    order = due.order
    record = OrderRepository(store).get(order.order_id)
    assert order.invited_at is not None
    return ReminderRequest(
        order_id=order.order_id,
        integration_id=order.integration_id,
        package_id=order.package_id,
        number=due.number,
        link=order.invitation_url,
        expires_at=due.plan.expires_at(order.invited_at),
        job_name=None if record is None else record.job_name,
        candidate_email=None if record is None else record.candidate_email,
        candidate_first_name=None if record is None else record.candidate_first_name,
    )
