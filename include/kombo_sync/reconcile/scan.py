"""What the reconcile job reads from the state store: invited orders not yet written back (in keyset pages, so
memory stays flat however many there are), their result versions, and the deleted integrations."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kombo_sync.reconcile.decide import ResultVersion
from kombo_sync.state._util import chunked
from kombo_sync.state.integrations import DELETED
from kombo_sync.state.orders import INVITED
from kombo_sync.state.outbox import SENT
from kombo_sync.state.schema import integrations, orders, result_outbox
from kombo_sync.state.store import StateStore


@dataclass(frozen=True)
class InvitedOrder:
    """An invited order to check (ids and channel only: no candidate data is read)."""

    order_id: str
    integration_id: str
    channel: str | None
    invited_at: datetime | None


def invited_orders(
    store: StateStore, *, page_size: int, integration_ids: Sequence[str] | None = None
) -> Iterator[list[InvitedOrder]]:
    """Pages of invited orders that have no delivered result, ordered by (integration id, order id)."""
    delivered = sa.exists().where(result_outbox.c.order_id == orders.c.id, result_outbox.c.state == SENT)
    base = (
        sa.select(orders.c.id, orders.c.integration_id, orders.c.channel, orders.c.invited_at)
        .where(orders.c.state == INVITED, ~delivered)
        .order_by(orders.c.integration_id, orders.c.id)
        .limit(page_size)
    )
    if integration_ids is not None:
        base = base.where(orders.c.integration_id.in_(sorted(set(integration_ids))))
    after: tuple[str, str] | None = None
    while True:
        query = base
        if after is not None:
            query = query.where(sa.tuple_(orders.c.integration_id, orders.c.id) > sa.tuple_(*after))
        with store.transaction(readonly=True) as conn:
            page = [InvitedOrder(*row) for row in conn.execute(query)]
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        after = (page[-1].integration_id, page[-1].order_id)


def result_versions(store: StateStore, order_ids: Iterable[str]) -> dict[str, list[ResultVersion]]:
    """Every version of these orders' results (oldest first), without payloads."""
    row = result_outbox.c
    found: dict[str, list[ResultVersion]] = {}
    with store.transaction(readonly=True) as conn:
        for batch in chunked(sorted(set(order_ids))):
            query = (
                sa.select(
                    row.order_id,
                    row.payload_hash,
                    row.state,
                    row.payload_json,
                    row.maybe_applied,
                    row.lease_expires_at,
                )  # fmt: skip
                .where(row.order_id.in_(batch))
                .order_by(row.order_id, row.created_at, row.payload_hash)
            )
            for version in conn.execute(query):
                payload = version.payload_json if isinstance(version.payload_json, dict) else {}
                status = payload.get("status")
                found.setdefault(version.order_id, []).append(
                    ResultVersion(
                        version.payload_hash,
                        version.state,
                        None if status is None else str(status),
                        bool(version.maybe_applied),
                        version.lease_expires_at,
                    )
                )
    return found


def deleted_integrations(store: StateStore, integration_ids: Iterable[str]) -> set[str]:
    """Those of these integrations the registry holds as deleted (Kombo's integration-deleted webhook)."""
    found: set[str] = set()
    with store.transaction(readonly=True) as conn:
        for batch in chunked(sorted(set(integration_ids))):
            query = sa.select(integrations.c.id).where(
                integrations.c.id.in_(batch),
                sa.or_(integrations.c.status == DELETED, integrations.c.deleted_at.is_not(None)),
            )
            found.update(str(integration_id) for integration_id in conn.execute(query).scalars())
    return found
