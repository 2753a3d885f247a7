"""Order-level helpers the intake needs on top of `OrderRepository`: claiming one given order, and the rule
that decides which of two orders for the same candidate and package is the duplicate.

`OrderRepository.claim_orders_for_invite` claims *any* due orders; the webhook's inline flow must claim the
one order it is answering for. `IntakeOrders.claim_order` is that compare-and-set, with the same lease
semantics (see docs/intake.md; a candidate for `OrderRepository` itself).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kombo_sync.settings import IntakeSettings
from kombo_sync.state.orders import INVITING, RECEIVED, ClaimedOrder, OrderRepository, _CLAIMED_COLUMNS
from kombo_sync.state.schema import orders


class IntakeOrders(OrderRepository):
    """`OrderRepository` plus the single-order claim used by `invite_order_now`."""

    def claim_order(self, order_id: str, owner: str, lease_seconds: int, *, now: datetime | None = None) -> ClaimedOrder | None:
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


def duplicate_rule_enabled(settings: IntakeSettings, integration_id: str, registry_settings: Any = None) -> bool:
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
