"""Order-level helpers the intake needs on top of `OrderRepository`: claiming one given order, serialising
SQLite writes within a process, and the rule that decides which of two orders for the same candidate and
package is the duplicate.

`OrderRepository.claim_orders_for_invite` claims *any* due orders; the webhook's inline flow must claim the
one order it is answering for. `IntakeOrders.claim_order` is that compare-and-set, with the same lease
semantics (see docs/intake.md; a candidate for `OrderRepository` itself).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kombo_sync.settings import IntakeSettings
from kombo_sync.state.orders import (
    _CLAIMED_COLUMNS,
    INVITING,
    RECEIVED,
    ClaimedOrder,
    OrderRepository,
    _order_columns,
)
from kombo_sync.state.schema import orders
from kombo_sync.state.store import StateStore

T = TypeVar("T")


_gates: dict[str, threading.Lock] = {}
_gates_lock = threading.Lock()


def write_gate(store: StateStore) -> AbstractContextManager[Any]:
    """Serialises this process's writes to a SQLite store. SQLite has one writer at a time anyway, and
    threads queueing on a Python lock wake as soon as it is free, whereas SQLite's busy handler makes them
    sleep in growing steps (a 5x slower intake with 32 threads). PostgreSQL writes run in parallel."""
    if store.dialect != "sqlite":
        return nullcontext()
    with _gates_lock:
        return _gates.setdefault(store.url, threading.Lock())


def _gated(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: IntakeOrders, *args: Any, **kwargs: Any) -> T:
        with self.gate:
            return method(self, *args, **kwargs)

    return wrapper


class IntakeOrders(OrderRepository):
    """`OrderRepository` with the single-order claim used by `invite_order_now`, and its writes passed
    through `write_gate` (a no-op on PostgreSQL)."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
        self.gate = write_gate(store)

    record_order = _gated(OrderRepository.record_order)
    claim_orders_for_invite = _gated(OrderRepository.claim_orders_for_invite)
    mark_invited = _gated(OrderRepository.mark_invited)
    release_with_error = _gated(OrderRepository.release_with_error)
    mark_failed = _gated(OrderRepository.mark_failed)
    mark_duplicate = _gated(OrderRepository.mark_duplicate)
    mark_rejected = _gated(OrderRepository.mark_rejected)
    mark_cancelled = _gated(OrderRepository.mark_cancelled)

    @_gated
    def record_orders(
        self,
        orders_page: Sequence[Mapping[str, Any]],
        seen_via: str,
        *,
        integration_id: str,
        now: datetime | None = None,
    ) -> set[str]:
        """`record_order` for a whole page in one transaction (same rules: the first sighting's `first_seen_via`
        and `received_at` stay, later ones refresh `kombo_status` and `order_json`); returns the new ids."""
        if not orders_page:
            return set()
        now = now or self.store.now()
        rows = []
        for order in orders_page:
            columns = _order_columns(order, integration_id)
            rows.append(
                {
                    **columns,
                    "state": RECEIVED,
                    "first_seen_via": seen_via,
                    "attempts": 0,
                    "received_at": now,
                    "updated_at": now,
                }
            )
        insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        with self.store.transaction() as conn:
            created = set(
                conn.execute(
                    insert(orders).on_conflict_do_nothing(index_elements=["id"]).returning(orders.c.id), rows
                ).scalars()
            )
            refreshed = [
                {"b_id": row["id"], "b_status": row["kombo_status"], "b_json": row["order_json"]}
                for row in rows
                if row["id"] not in created
            ]
            if refreshed:
                conn.execute(
                    sa.update(orders)
                    .where(orders.c.id == sa.bindparam("b_id"))
                    .values(
                        kombo_status=sa.bindparam("b_status"),
                        order_json=sa.bindparam("b_json"),
                        updated_at=now,
                    ),
                    refreshed,
                )
        return created

    @_gated
    def claim_order(
        self, order_id: str, owner: str, lease_seconds: int, *, now: datetime | None = None
    ) -> ClaimedOrder | None:
        """Claim this order now (received, whatever its retry time, or inviting with an expired lease);
        None when another worker holds it or it is in a final state. Attempts +1."""
        now = now or self.store.now()
        claimable = sa.or_(
            orders.c.state == RECEIVED,
            sa.and_(
                orders.c.state == INVITING,
                sa.or_(orders.c.lease_expires_at.is_(None), orders.c.lease_expires_at <= now),
            ),
        )
        with self.store.transaction() as conn:
            row = conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, claimable)
                .values(
                    state=INVITING,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=orders.c.attempts + 1,
                    next_attempt_at=None,
                    updated_at=now,
                )
                .returning(*_CLAIMED_COLUMNS)
            ).first()
        return None if row is None else ClaimedOrder(*row)


def duplicate_rule_enabled(
    settings: IntakeSettings, integration_id: str, registry_settings: Any = None
) -> bool:
    """Per-integration override in pipeline.yaml, then the registry's `settings.duplicate_rule`, then global."""
    override = settings.integrations.get(integration_id)
    if override is not None and override.duplicate_rule is not None:
        return override.duplicate_rule
    if isinstance(registry_settings, dict) and isinstance(registry_settings.get("duplicate_rule"), bool):
        return bool(registry_settings["duplicate_rule"])
    return settings.duplicate_rule


def older_active_duplicate(
    repo: OrderRepository,
    *,
    order_id: str,
    integration_id: str,
    package_id: str,
    candidate_email: str | None,
    application_remote_id: str | None,
    received_at: datetime,
) -> str | None:
    """The id of an active order for the same candidate and package that came *before* this one, or None.

    Only the younger of two orders is ever the duplicate (ordered by received_at, then id), so two workers
    checking a pair at the same time never mark both.
    """
    other_id = repo.find_active_duplicate(
        integration_id, package_id, candidate_email, application_remote_id, exclude_order_id=order_id
    )
    if other_id is None:
        return None
    other = repo.get(other_id)
    if other is None:
        return None
    return other_id if (other.received_at, other.id) < (received_at, order_id) else None
