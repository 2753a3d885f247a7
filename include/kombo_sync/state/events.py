"""`WebhookEventLog`: the only writer of `webhook_events`, Kombo's webhook event ids for dedupe.

A redelivered event (same `id`) gets the answer stored for its first delivery, so a retry by Kombo can never
turn an accepted order into a rejected one or the other way round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from kombo_sync.state._util import from_row, to_jsonable
from kombo_sync.state.schema import webhook_events
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    integration_id: str | None
    order_id: str | None
    received_at: datetime
    response_status: int | None
    response_body: Any
    # True only for the call that recorded the event first.
    created: bool = False

    @property
    def answered(self) -> bool:
        """Whether a response was stored (a redelivery should get the same one)."""
        return self.response_status is not None


# Built once: every webhook runs these, and building a statement costs more CPU than executing a cached one.
_GET = sa.select(webhook_events).where(webhook_events.c.id == sa.bindparam("event_id"))
_STORE_RESPONSE = (
    sa.update(webhook_events)
    .where(webhook_events.c.id == sa.bindparam("event_id"))
    .values(
        response_status=sa.bindparam("status", type_=webhook_events.c.response_status.type),
        response_body=sa.bindparam("body", type_=webhook_events.c.response_body.type),
    )
)


@cache
def _insert_new(dialect: str) -> sa.Insert:
    """`INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id`: a row back means this call recorded the event."""
    insert = pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert
    return insert(webhook_events).on_conflict_do_nothing(index_elements=["id"]).returning(webhook_events.c.id)


class WebhookEventLog:
    """Webhook events seen, and the answer given to each."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def record_or_get(
        self,
        event_id: str,
        type: str,
        integration_id: str | None = None,
        order_id: str | None = None,
        *,
        now: datetime | None = None,
        conn: Connection | None = None,
    ) -> WebhookEvent:
        """Record the event if it is new (`created=True`), else return the stored one with its answer.

        In the caller's transaction (`conn`), a concurrent delivery of the same id waits at the insert until that
        transaction ends (PostgreSQL: the unique index; SQLite: the write lock), then sees what it stored."""
        row: dict[str, Any] = {
            "id": event_id,
            "type": type,
            "integration_id": integration_id,
            "order_id": order_id,
            "received_at": now or self.store.now(),
            "response_status": None,
            "response_body": None,
        }
        with self.store.transaction(conn=conn) as tx:
            if tx.execute(_insert_new(self.store.dialect), row).first() is not None:
                # What was just written is what is stored: no read back.
                return WebhookEvent(**row, created=True)
            stored = tx.execute(_GET, {"event_id": event_id}).mappings().one()
        log.info("webhook event %s (%s) is a redelivery", event_id, type)
        return from_row(WebhookEvent, stored, created=False)

    def store_response(
        self, event_id: str, status: int, body: Any, *, conn: Connection | None = None
    ) -> bool:
        """Store the answer given to the event; False if the event was never recorded."""
        with self.store.transaction(conn=conn) as tx:
            return bool(
                tx.execute(
                    _STORE_RESPONSE, {"event_id": event_id, "status": status, "body": to_jsonable(body)}
                ).rowcount
            )

    def get(self, event_id: str) -> WebhookEvent | None:
        """The stored event, or None."""
        with self.store.transaction(readonly=True) as conn:
            row = conn.execute(_GET, {"event_id": event_id}).mappings().first()
        return None if row is None else from_row(WebhookEvent, row)

    def purge_received_before(self, cutoff: datetime) -> int:
        """Forget events received before `cutoff` (housekeeping); returns how many."""
        with self.store.transaction() as conn:
            purged = conn.execute(
                sa.delete(webhook_events).where(webhook_events.c.received_at < cutoff)
            ).rowcount
        log.info("webhook events: %d older than %s purged", purged, cutoff.isoformat())
        return purged
