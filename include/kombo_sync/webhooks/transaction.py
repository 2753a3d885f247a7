"""One event, exactly once: decide the answer and record the event with it in one transaction (SQLite: through
this process's write gate); a redelivery gets the stored answer, or 409 while the first is still being processed.
The wake-ups the event asks for are requested once it is committed; the inline flow's invitation runs after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy.exc as sa_exc
from sqlalchemy.engine import Connection

from kombo_sync.intake.claims import write_gate
from kombo_sync.kombo.models import (
    IntegrationCreatedData,
    IntegrationStateChangedData,
    KomboModel,
    OrderReceivedData,
    WebhookEnvelope,
)
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.events import Lookup, WebhookEvent, WebhookEventLog
from kombo_sync.state.group_commit import group_commit
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import WakeupBatcher, request_wakeup, request_wakeup_in_transaction
from kombo_sync.webhooks.responses import WebhookResponse, error_response

if TYPE_CHECKING:
    from kombo_sync.webhooks.deps import WebhookDeps

log = logging.getLogger(__name__)


class EventWork:
    """One event's transaction: its connection, and the wake-ups to request once it is committed."""

    def __init__(self, store: StateStore, conn: Connection, wakeups: WakeupBatcher | None = None) -> None:
        self.store = store
        self.conn = conn
        self._wakeups = wakeups
        self._after_commit: list[str] = []
        # The row of the handler's lookup, read with the event in the transaction's first statement.
        self.looked_up: Mapping[Any, Any] | None = None

    def wake(self, topic: str) -> None:
        """Wake the watcher of `topic` so that the run it starts sees this transaction's data."""
        if self._wakeups is not None:
            # Coalesced with the process's other webhooks, after the commit: nothing in the transaction.
            if topic not in self._after_commit:
                self._after_commit.append(topic)
        elif self.store.dialect == "sqlite":
            # We hold the write lock: a request seen pending here is consumed after our commit.
            request_wakeup_in_transaction(self.store, self.conn, topic)
        elif topic not in self._after_commit:
            # PostgreSQL: a read after the commit (and a write only when none is pending) keeps concurrent
            # webhooks from queueing on the topic's row lock until each of them commits.
            self._after_commit.append(topic)

    def committed(self) -> None:
        for topic in self._after_commit:
            if self._wakeups is not None:
                self._wakeups.request(topic)
            else:
                request_wakeup(self.store, topic)


@dataclass(frozen=True)
class InlineInvitation:
    """The inline flow's invitation, created after the event's transaction committed: it may take seconds,
    and the intake's transactions that create it must see the order."""

    order: OrderReceivedData


def _write_gate(store: StateStore) -> AbstractContextManager[Any]:
    # SQLite has one writer at a time: threads of this process queue on a Python lock (woken at once) rather
    # than in SQLite's busy handler (sleeps of growing length). The intake's gate: one queue per process.
    if getattr(store, "dialect", None) != "sqlite":
        return nullcontext()
    return write_gate(store)


Dispatch = Callable[
    [WebhookEnvelope, KomboModel | None, "WebhookDeps", PipelineSettings, "EventWork"],
    "WebhookResponse | InlineInvitation",
]
InlineInvite = Callable[[OrderReceivedData, "WebhookDeps", PipelineSettings, StateStore], WebhookResponse]


LookupFor = Callable[[KomboModel | None, "WebhookDeps"], Lookup | None]


class _LostRace(Exception):
    """A concurrent delivery of the same event recorded it first; this one's transaction is rolled back."""


# A transaction tried again at most this often: once after a lost race (it then finds the event recorded), once
# after the state store's connection broke (the pool then replaces every connection opened before the break).
_ATTEMPTS = 3


def deduplicated(
    envelope: WebhookEnvelope,
    data: KomboModel | None,
    deps: WebhookDeps,
    settings: PipelineSettings,
    *,
    dispatch: Dispatch,
    inline_invite: InlineInvite,
    lookup: LookupFor | None = None,
) -> WebhookResponse:
    """Decide the event's answer and record the event with it in one transaction (the inline flow's invitation,
    which calls out, runs after it). The event, and what `lookup` names for the handler, are read in the
    transaction's first statement; a new event is recorded last, with its answer. A concurrent delivery of the
    same event waits at that insert for the first one's transaction, is rolled back, and gets the stored answer.
    `dispatch` decides the answer inside the transaction; `inline_invite` creates the inline flow's invitation
    after it."""
    store = deps.store
    wanted = lookup(data, deps) if lookup is not None else None
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            outcome = _decide(envelope, data, deps, settings, dispatch, wanted)
        except _LostRace:
            log.info(
                "webhook event %s (%s): a concurrent delivery answered first", envelope.id, envelope.type
            )
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated or attempt == _ATTEMPTS:
                raise
            log.warning("webhook event %s: the state store connection broke; trying again", envelope.id)
        else:
            break
    else:
        raise RuntimeError(f"webhook event {envelope.id}: not decided in {_ATTEMPTS} attempts")
    if not isinstance(outcome, InlineInvitation):
        return outcome
    # The event is committed unanswered: a redelivery meanwhile gets 409 (in progress).
    response = inline_invite(outcome.order, deps, settings, store)
    with _write_gate(store):
        WebhookEventLog(store).store_response(envelope.id, response.status_code, response.body)
    return response


def _decide(
    envelope: WebhookEnvelope,
    data: KomboModel | None,
    deps: WebhookDeps,
    settings: PipelineSettings,
    dispatch: Dispatch,
    lookup: Lookup | None,
) -> WebhookResponse | InlineInvitation:
    """One try at the event's transaction: its answer (stored or new), or the inline flow's invitation to make.

    PostgreSQL: one READ COMMITTED transaction, whose first statement reads the event and the lookup. SQLite (one
    writer at a time): that read runs first, outside the write lock (in WAL mode readers never wait), so that a
    redelivery is answered without writing and the writer holds the lock only for the decision and its inserts;
    what the read saw may change before the write, as it may under READ COMMITTED, and is handled the same way
    (the event's insert loses the race, the order's transitions are fenced). The write is committed together with
    this process's other webhooks (group commit: one sync of the log for all of them), each in its own savepoint."""
    store = deps.store
    events = WebhookEventLog(store)

    def decide(
        conn: Connection, found: tuple[WebhookEvent | None, Mapping[Any, Any]] | None = None
    ) -> tuple[WebhookResponse | InlineInvitation, EventWork]:
        work = EventWork(store, conn, deps.wakeups())
        event, work.looked_up = found if found is not None else events.find(envelope.id, lookup, conn=conn)
        if event is not None and found is None:
            stored = _stored_answer(event, envelope, store, deps)
            if stored is not None:
                return stored, work
        outcome = dispatch(envelope, data, deps, settings, work)
        status, body = (
            (outcome.status_code, outcome.body) if isinstance(outcome, WebhookResponse) else (None, None)
        )
        if event is None:
            integration_id, order_id = _subject(data)
            if not events.record_answered(
                envelope.id, envelope.type, integration_id, order_id, status, body, conn=conn
            ):
                raise _LostRace
        elif status is not None:
            events.store_response(envelope.id, status, body, conn=conn)
        return outcome, work

    if store.dialect == "sqlite":
        with store.transaction(readonly=True) as read:
            found = events.find(envelope.id, lookup, conn=read)
        if found[0] is not None:
            stored = _stored_answer(found[0], envelope, store, deps)
            if stored is not None:
                return stored
        outcome, work = group_commit(store).run(lambda conn: decide(conn, found))
    else:
        with store.transaction() as conn:
            outcome, work = decide(conn)
    work.committed()
    return outcome


def _stored_answer(
    event: WebhookEvent, envelope: WebhookEnvelope, store: StateStore, deps: WebhookDeps
) -> WebhookResponse | None:
    """The answer to a redelivery, or None when the event must be processed again."""
    # A stored 5xx was a server fault (the inline invitation failed): the redelivery gets another chance.
    if event.answered and int(event.response_status or 0) < 500:
        log.info(
            "webhook event %s (%s): redelivery, stored answer %s",
            envelope.id,
            envelope.type,
            event.response_status,
        )
        body = event.response_body if isinstance(event.response_body, dict) else {}
        return WebhookResponse(int(event.response_status or 200), body)
    age = store.now() - event.received_at
    if not event.answered and age < timedelta(seconds=deps.in_progress_seconds):
        return error_response(
            409, "EVENT_IN_PROGRESS", "This event is being processed; deliver it again later."
        )
    log.info("webhook event %s: processing again (first answer: %s)", envelope.id, event.response_status)
    return None


def _subject(data: KomboModel | None) -> tuple[str | None, str | None]:
    if isinstance(data, OrderReceivedData):
        return data.integration_id, data.id
    if isinstance(data, IntegrationCreatedData):
        return data.id, None
    if isinstance(data, IntegrationStateChangedData):
        return data.integration_id, None
    return None, None
