"""Which candidate data is due for erasure, and the erasures themselves (`kombo_housekeeping`, `kombo_sync.ops`).

One rule says when an order ended (`order_ended_before`): closed (rejected, duplicate, failed, or cancelled, also
after its invitation by the reconcile) at its last change, or invited with its result written back (sent or not writable, nothing
pending) at the last write-back. Its candidate data is erased `retention.candidate_data_days` after that. A deleted
integration's candidate data is erased `retention.integration_deleted_days` after Kombo's `integration-deleted`,
whatever its orders' state. The clock is the store's (`store.now()`), so tests move time forward.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kombo_sync.candidate_hash import CandidateHasher
from kombo_sync.settings import RetentionSettings
from kombo_sync.state.erasures import (
    COUNT_KEYS,
    INTEGRATION_DELETED,
    REQUEST,
    RETENTION,
    CandidateErasure,
    in_chunks,
)
from kombo_sync.state.integrations import DELETED
from kombo_sync.state.orders import CANCELLED, DUPLICATE, FAILED, INVITED, REJECTED
from kombo_sync.state.schema import integrations, orders, result_outbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

# States in which an order is over (cancelled also after an invitation: `OrderRepository.cancel_invitation`).
CLOSED_STATES = (REJECTED, DUPLICATE, CANCELLED, FAILED)
# Outbox states of a result that is over (written back, refused by Kombo for good, or discarded by the team).
RESULT_DONE_STATES = ("sent", "not_writable", "discarded")
# Outbox states of a result still to deliver (or to replay, for a dead letter): the order is not over.
RESULT_OPEN_STATES = ("pending", "sending", "dead")


class InvalidEmail(ValueError):
    """The e-mail given for an erasure is not an e-mail address (the message never repeats the address)."""


# Deliberately loose: an order recorded by the poll may hold an address the webhook's stricter check would refuse,
# and its candidate must still be erasable. One @, something on both sides, no spaces.
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+")


def checked_email(email: str | None) -> str:
    """The address as given, trimmed; raises `InvalidEmail` naming the problem (never the address)."""
    text = (email or "").strip()
    if not text:
        raise InvalidEmail("no e-mail address given")
    if not _EMAIL_SHAPE.fullmatch(text):
        raise InvalidEmail("not an e-mail address (expected one @ with text on both sides and no spaces)")
    return text


def order_ended_before(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Orders that ended at or before `cutoff` (see the module docstring): the one definition of "ended"."""
    results = result_outbox.c
    done_by_cutoff = (
        sa.select(sa.literal(1))
        .where(results.order_id == orders.c.id, results.state.in_(RESULT_DONE_STATES), results.updated_at <= cutoff)
        .exists()
    )  # fmt: skip
    open_or_later = (
        sa.select(sa.literal(1))
        .where(
            results.order_id == orders.c.id,
            sa.or_(
                results.state.in_(RESULT_OPEN_STATES),
                sa.and_(results.state.in_(RESULT_DONE_STATES), results.updated_at > cutoff),
            ),
        )
        .exists()
    )
    return sa.or_(
        sa.and_(orders.c.state.in_(CLOSED_STATES), orders.c.updated_at <= cutoff),
        sa.and_(orders.c.state == INVITED, done_by_cutoff, ~open_or_later),
    )


def orders_due_for_retention(
    store: StateStore, cutoff: datetime, limit: int | None = None, *, after_id: str | None = None
) -> list[str]:
    """Ids of orders not yet erased that ended at or before `cutoff`, in id order (from after `after_id`)."""
    query = (
        sa.select(orders.c.id)
        .where(orders.c.erased_at.is_(None), order_ended_before(cutoff))
        .order_by(orders.c.id)
    )
    if after_id is not None:
        query = query.where(orders.c.id > after_id)
    if limit is not None:
        query = query.limit(limit)
    with store.transaction(readonly=True) as conn:
        return list(conn.execute(query).scalars())


def integrations_due_for_erasure(store: StateStore, cutoff: datetime) -> list[str]:
    """Integrations deleted at or before `cutoff` that still have orders with candidate data."""
    # An integration first heard of through its deletion has no deleted_at: its last change stands in.
    deleted_at = sa.func.coalesce(integrations.c.deleted_at, integrations.c.updated_at)
    query = (
        sa.select(integrations.c.id)
        .where(
            integrations.c.status == DELETED,
            deleted_at <= cutoff,
            sa.select(sa.literal(1))
            .where(orders.c.integration_id == integrations.c.id, orders.c.erased_at.is_(None))
            .exists(),
        )
        .order_by(integrations.c.id)
    )
    with store.transaction(readonly=True) as conn:
        return list(conn.execute(query).scalars())


def _unerased_orders_of(store: StateStore, integration_id: str) -> list[str]:
    query = (
        sa.select(orders.c.id)
        .where(orders.c.integration_id == integration_id, orders.c.erased_at.is_(None))
        .order_by(orders.c.id)
    )
    with store.transaction(readonly=True) as conn:
        return list(conn.execute(query).scalars())


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def purge(
    store: StateStore,
    settings: RetentionSettings,
    hasher: CandidateHasher | None,
    *,
    now: datetime | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The retention rules now: deleted integrations past their time first, then ended orders past theirs.

    Returns counts per kind (and, for a dry run, what would be erased) and the integration ids; no personal data."""
    now = now or store.now()
    summary: dict[str, Any] = {"dry_run": dry_run, "retention": dict.fromkeys(COUNT_KEYS, 0)}
    summary["integration_deleted"] = dict.fromkeys(COUNT_KEYS, 0)
    eraser = CandidateErasure(store, hasher)
    integration_ids = integrations_due_for_erasure(
        store, now - timedelta(days=settings.integration_deleted_days)
    )
    summary["integrations_erased"] = integration_ids
    for integration_id in integration_ids:
        order_ids = _unerased_orders_of(store, integration_id)
        if dry_run:
            summary["integration_deleted"]["orders_erased"] += len(order_ids)
            continue
        for chunk in in_chunks(order_ids, settings.batch_size):
            _add(
                summary["integration_deleted"],
                eraser.erase_orders(
                    chunk,
                    kind=INTEGRATION_DELETED,
                    reason=f"integration deleted more than {settings.integration_deleted_days} day(s) ago",
                    integration_id=integration_id,
                    run_id=run_id,
                    now=now,
                ),
            )
        log.info("integration %s: candidate data of %d order(s) erased", integration_id, len(order_ids))
    cutoff = now - timedelta(days=settings.candidate_data_days)
    if dry_run:
        summary["retention"]["orders_erased"] = len(orders_due_for_retention(store, cutoff))
        return summary
    last_id: str | None = None
    while True:
        # Keyset paging by id: each batch starts after the last, so a large first purge stays linear.
        chunk = orders_due_for_retention(store, cutoff, limit=settings.batch_size, after_id=last_id)
        if not chunk:
            break
        last_id = chunk[-1]
        _add(
            summary["retention"],
            eraser.erase_orders(
                chunk,
                kind=RETENTION,
                reason=f"order ended more than {settings.candidate_data_days} day(s) ago",
                run_id=run_id,
                now=now,
            ),
        )
        log.info("retention: %d order(s) erased so far", summary["retention"]["orders_erased"])
    return summary


def erase_candidates(
    store: StateStore,
    hasher: CandidateHasher | None,
    emails: Iterable[str],
    *,
    reason: str = "erasure requested by the candidate",
    requested_by: str | None = None,
    run_id: str | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Erase every order of these candidates now (all integrations, any state; open ones are cancelled).

    Raises `InvalidEmail` before erasing anything when one address is not valid. Returns counts only: orders
    found, erased, already erased before (matched by the salted hash), cancelled."""
    addresses = [checked_email(email) for email in emails]
    if not addresses:
        raise InvalidEmail("no e-mail address given")
    eraser = CandidateErasure(store, hasher)
    summary: dict[str, Any] = {
        "dry_run": dry_run,
        "candidates": len(addresses),
        "candidates_found": 0,
        "orders_already_erased": 0,
        **dict.fromkeys(COUNT_KEYS, 0),
    }
    for address in addresses:
        holding, erased_before = eraser.orders_of_candidate(address)
        summary["candidates_found"] += bool(holding or erased_before)
        summary["orders_already_erased"] += len(erased_before)
        if dry_run:
            summary["orders_erased"] += len(holding)
            continue
        for chunk in in_chunks(holding, 500):
            _add(
                summary,
                eraser.erase_orders(
                    chunk,
                    kind=REQUEST,
                    reason=reason,
                    requested_by=requested_by,
                    run_id=run_id,
                    now=now,
                    cancel_open=True,
                ),
            )
    return summary
