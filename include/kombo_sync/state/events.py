"""`WebhookEventLog`: the only writer of `webhook_events`, Kombo's webhook event ids for dedupe.

A redelivered event (same `id`) gets the answer stored for its first delivery, so a retry by Kombo can never
turn an accepted order into a rejected one or the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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


# What every lookup joins to: one row, so that each outer-joined table (the event, an order, an integration) that
# has no matching row reads as NULLs.
ANCHOR = sa.select(sa.literal(1).label("one")).subquery("anchor")
_EVENT_LABELS = tuple((f"event_{column.name}", column.name) for column in webhook_events.c)
_EVENT_COLUMNS = tuple(column.label(f"event_{column.name}") for column in webhook_events.c)
_EVENT_ONLY = sa.select(*_EVENT_COLUMNS).select_from(
    ANCHOR.outerjoin(webhook_events, webhook_events.c.id == sa.bindparam("event_id"))
)


@dataclass(frozen=True)
class Lookup:
    """What an event's handler reads before deciding, fetched in the same round trip as the event itself:
    `statement` selects from `ANCHOR` outer-joined to what it needs (built once: its bound parameters, never
    named `event_id`, come in `params`)."""

    statement: sa.Select
    params: dict[str, Any]


@cache
def _with_event(statement: sa.Select) -> sa.Select:
    """`statement` with the event's row outer-joined to its anchor, its columns labelled `event_<name>`."""
    return statement.outerjoin(webhook_events, webhook_events.c.id == sa.bindparam("event_id")).add_columns(
        *_EVENT_COLUMNS
    )


def _event_row(
    event_id: str,
    type: str,
    integration_id: str | None,
    order_id: str | None,
    received_at: datetime,
    status: int | None,
    body: Any,
) -> dict[str, Any]:
    """A new `webhook_events` row (`body` already JSON-safe)."""
    return {
        "id": event_id,
        "type": type,
        "integration_id": integration_id,
        "order_id": order_id,
        "received_at": received_at,
        "response_status": status,
        "response_body": body,
    }


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
        row = _event_row(event_id, type, integration_id, order_id, now or self.store.now(), None, None)
        with self.store.transaction(conn=conn) as tx:
            if tx.execute(_insert_new(self.store.dialect), row).first() is not None:
                # What was just written is what is stored: no read back.
                return WebhookEvent(**row, created=True)
            stored = tx.execute(_GET, {"event_id": event_id}).mappings().one()
        log.info("webhook event %s (%s) is a redelivery", event_id, type)
        return from_row(WebhookEvent, stored, created=False)

    def find(
        self, event_id: str, lookup: Lookup | None = None, *, conn: Connection
    ) -> tuple[WebhookEvent | None, Mapping[Any, Any]]:
        """The stored event (None when it is new) and the row of `lookup`, read in one statement in the caller's
        transaction. Nothing is written: a new event is recorded by `record_answered` once it is decided."""
        if lookup is None:
            statement, params = _EVENT_ONLY, {"event_id": event_id}
        else:
            statement, params = _with_event(lookup.statement), {**lookup.params, "event_id": event_id}
        row = conn.execute(statement, params).mappings().one()
        if row["event_id"] is None:
            return None, row
        return from_row(WebhookEvent, {name: row[label] for label, name in _EVENT_LABELS}), row

    def record_answered(
        self,
        event_id: str,
        type: str,
        integration_id: str | None,
        order_id: str | None,
        status: int | None,
        body: Any,
        *,
        conn: Connection,
    ) -> bool:
        """Record a new event with the answer decided for it (None: answered later, the inline flow), in the
        caller's transaction. False when a concurrent delivery of the same event recorded it first (PostgreSQL:
        this waits for that delivery's transaction to end): the caller must roll back and answer as a redelivery."""
        answer = None if status is None else to_jsonable(body)
        row = _event_row(event_id, type, integration_id, order_id, self.store.now(), status, answer)
        return conn.execute(_insert_new(self.store.dialect), row).first() is not None

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
