"""The reconcile job: every invited order without a delivered result, checked with Kombo in batches.

For each page of invited orders (``scan.invited_orders``) it reads Kombo's status per integration
(``GET /assessment/orders?ids=``, 100 ids a call, through the client's retries and limits), decides each order
(``decide.decide``) and acts:

- left OPEN without us (cancelled / rejected in the ATS, completed without our result, integration deleted): the
  invitation is revoked through the order's channel (the platform call is idempotent; e-mail answers
  ``not_revocable``), **then** the order becomes ``cancelled``. Revoking first is what makes a kill in between
  harmless: the order is still ``invited``, so the next run revokes again (the platform answers
  ``already_revoked``) and records it. Later results of a cancelled order are ``not_writable``, never sent
  (``writeback.sender``).
- Kombo holds our result but the outbox does not know (a lost reply): that version is recorded ``sent``.

Nothing here reads or logs candidate data: only ids, states and counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from kombo_sync.invites import InvitationError, InviterConfigurationError, Inviters
from kombo_sync.invites.base import REVOCATION_STATUSES
from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.errors import KomboError
from kombo_sync.reconcile.decide import (
    ALREADY_WRITTEN,
    CANCEL,
    OUTCOMES,
    RESULT_LANDED,
    STILL_OPEN,
    Decision,
    decide,
)
from kombo_sync.reconcile.scan import (
    InvitedOrder,
    deleted_integrations,
    invited_orders,
    result_versions,
)
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.orders import InvalidTransition, OrderRepository
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

JOB = "reconcile"

# Steps of one cancellation, for fault tests (``on_step``): after the channel answered, after the state store
# recorded it.
STEP_REVOKED = "revoked"
STEP_RECORDED = "recorded"

# Summary keys besides the decision outcomes: what the cancellations did.
CANCELLED = "cancelled"  # orders moved to cancelled by this run
# The channel gave no definite answer: the order stays invited for the next run.
REVOKE_FAILED = "revoke_failed"
CHANGED_MEANWHILE = "changed_meanwhile"  # the order left `invited` while this run worked on it
NOT_CHECKED = "not_checked"  # its integration could not be read from Kombo in this run


def reconcile_orders(
    store: StateStore,
    client: KomboClient | None,
    inviters: Inviters,
    settings: PipelineSettings,
    *,
    integration_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] | None = None,
    on_step: Callable[[str, str], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Check every invited order not yet written back (of ``integration_ids``, or all) and repair what drifted;
    returns the counts per outcome. A dry run reads Kombo and counts, but revokes and records nothing."""
    config = settings.reconcile
    now = clock or store.now
    repo = OrderRepository(store)
    outbox = ResultOutbox(store)
    counts: dict[str, int] = dict.fromkeys(
        ("checked", *OUTCOMES, CANCELLED, REVOKE_FAILED, CHANGED_MEANWHILE), 0
    )
    counts[NOT_CHECKED] = 0
    revocations: dict[str, int] = dict.fromkeys(REVOCATION_STATUSES, 0)
    integrations_failed: dict[str, str] = {}
    revoke_errors: list[dict[str, str | None]] = []
    started = last_progress = monotonic()
    pages = 0
    wanted = None if integration_ids is None else list(integration_ids)
    with ThreadPoolExecutor(config.read_concurrency, thread_name_prefix="kombo-reconcile") as pool:
        for page in invited_orders(store, page_size=config.page_size, integration_ids=wanted):
            pages += 1
            by_integration: dict[str, list[InvitedOrder]] = {}
            for order in page:
                by_integration.setdefault(order.integration_id, []).append(order)
            deleted = deleted_integrations(store, by_integration)
            to_ask = [i for i in by_integration if i not in deleted and i not in integrations_failed]
            statuses: dict[str, str | None] = {}
            asks = [(i, [o.order_id for o in by_integration[i]]) for i in to_ask]
            for (integration_id, _ids), found in zip(
                asks, pool.map(lambda ask: read_statuses(client, *ask), asks), strict=True
            ):
                if isinstance(found, str):
                    integrations_failed[integration_id] = found
                    log.warning(
                        "reconcile: integration %s could not be read from Kombo: %s", integration_id, found
                    )
                else:
                    statuses.update(found)
            versions = result_versions(store, (order.order_id for order in page))
            for order in page:
                if order.integration_id in integrations_failed:
                    counts[NOT_CHECKED] += 1
                    continue
                counts["checked"] += 1
                decision = decide(
                    statuses.get(order.order_id),
                    versions.get(order.order_id, []),
                    now=now(),
                    integration_deleted=order.integration_id in deleted,
                )
                counts[decision.outcome] += 1
                if dry_run:
                    if decision.outcome != STILL_OPEN:
                        log.info(
                            "dry run: order %s -> %s (%s)", order.order_id, decision.outcome, decision.reason
                        )
                    continue
                if decision.outcome == CANCEL:
                    cancel_invited(
                        repo, inviters, order, decision, counts, revocations, revoke_errors, on_step
                    )
                elif decision.outcome == RESULT_LANDED and decision.landed_hash is not None:
                    if outbox.mark_landed(order.order_id, decision.landed_hash):
                        log.info("order %s: Kombo holds our result; recorded as sent", order.order_id)
                elif decision.outcome not in (STILL_OPEN, ALREADY_WRITTEN):
                    log.info("reconcile: order %s left as it is (%s)", order.order_id, decision.outcome)
            if monotonic() - last_progress >= config.progress_seconds:
                last_progress = monotonic()
                log.info(
                    "reconcile progress: page %s, %s order(s) checked so far (%s still open, %s cancelled, "
                    "%s result(s) recorded sent, %s revoke failure(s))",
                    pages, counts["checked"], counts["still_open"], counts[CANCELLED], counts[RESULT_LANDED],
                    counts[REVOKE_FAILED],
                )  # fmt: skip
    elapsed = monotonic() - started
    summary: dict[str, Any] = {
        "dry_run": dry_run,
        "pages": pages,
        **counts,
        "revocations": revocations,
        "integrations_failed": integrations_failed,
        "revoke_errors": revoke_errors[:50],
        "elapsed_seconds": round(elapsed, 3),
    }
    log.info(
        "reconcile%s: %s order(s) checked in %.1f s: %s still open, %s to cancel (%s cancelled: %s), %s result(s) "
        "Kombo held recorded sent, %s revoke failure(s), %s integration(s) unreadable",
        " (dry run)" if dry_run else "",
        counts["checked"],
        elapsed,
        counts["still_open"],
        counts[CANCEL],
        counts[CANCELLED],
        {status: count for status, count in revocations.items() if count},
        counts[RESULT_LANDED],
        counts[REVOKE_FAILED],
        len(integrations_failed),
    )
    return summary


def read_statuses(
    client: KomboClient | None, integration_id: str, order_ids: Sequence[str]
) -> dict[str, str | None] | str:
    """Kombo's status of each listed order, or the error (a short text) when the integration cannot be read."""
    if client is None:
        return "no Kombo client"
    try:
        return {order.id: order.status for order in client.get_orders_by_ids(integration_id, order_ids)}
    except KomboError as error:
        return f"{error.code or type(error).__name__}: {error.message}"[:300]


def cancel_invited(
    repo: OrderRepository,
    inviters: Inviters,
    order: InvitedOrder,
    decision: Decision,
    counts: dict[str, int],
    revocations: dict[str, int],
    revoke_errors: list[dict[str, str | None]],
    on_step: Callable[[str, str], None] | None,
) -> None:
    """Revoke the invitation, then record the order cancelled (in this order: see the module docstring)."""
    reason = decision.reason or "left OPEN in the ATS"
    try:
        answer = inviters.revoker(order.channel).revoke(order.order_id, reason)
    except (InvitationError, InviterConfigurationError) as error:
        counts[REVOKE_FAILED] += 1
        revoke_errors.append(
            {"order_id": order.order_id, "channel": order.channel, "error": str(error)[:300]}
        )
        log.warning("order %s: revoking its %s invitation failed: %s", order.order_id, order.channel, error)
        return
    if on_step is not None:
        on_step(STEP_REVOKED, order.order_id)
    revocations[answer.status] = revocations.get(answer.status, 0) + 1
    detail = f"; invitation {answer.status}" + (f" ({answer.detail})" if answer.detail else "")
    try:
        changed = repo.cancel_invitation(order.order_id, reason=reason + detail)
    except InvalidTransition:
        changed = False
    if changed:
        counts[CANCELLED] += 1
        log.info("order %s cancelled: %s; invitation %s", order.order_id, reason, answer.status)
    else:
        counts[CHANGED_MEANWHILE] += 1
        log.info("order %s: no longer invited, left as it is (invitation %s)", order.order_id, answer.status)
    if on_step is not None:
        on_step(STEP_RECORDED, order.order_id)
