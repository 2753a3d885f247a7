"""`ResultOutbox`: the only writer of `result_outbox`, keyed by (order id, payload hash).

A result is enqueued once per distinct payload (anti-join on the key); a newer payload of the same order
supersedes an older pending or dead one, so only the latest version is ever sent. Rows are claimed with a
lease; at most one version of an order is in flight at a time, so an older payload can never land after a
newer one. Permanent failures become dead letters the team can list and `requeue`.

Each version also records whether Kombo may hold it (`maybe_applied`): an attempt that got no answer (a lost
reply, a timeout, a dropped connection), a send abandoned by a dead worker, or a delivery sets it; an attempt
answered with a definite error does not, and a read-back that finds the order still OPEN clears it. The sender
compares what Kombo shows with these versions only.

Over 400 lines on purpose: the only writer of `result_outbox`; the claim, supersede and delivery rules
share one set of fences.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kombo_sync.state._util import (
    chunked,
    clip,
    expire_leases_of_earlier_tries,
    from_row,
    in_byte_order,
    to_jsonable,
)
from kombo_sync.state.schema import OUTBOX_STATES, orders, result_outbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
NOT_WRITABLE = "not_writable"
SUPERSEDED = "superseded"
DISCARDED = "discarded"

DEAD_LETTER_STATES = (DEAD, NOT_WRITABLE)


class OutboxEntry(NamedTuple):
    """One result to send; a plain tuple in this order works too."""

    order_id: str
    integration_id: str
    payload_hash: str
    payload_json: Mapping[str, Any]
    source_updated_at: datetime | None


@dataclass(frozen=True)
class OutboxItem:
    order_id: str
    payload_hash: str
    integration_id: str
    payload_json: dict[str, Any] = field(repr=False)
    state: str
    attempts: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error_code: str | None
    last_error_message: str | None = field(repr=False)
    log_url: str | None
    source_updated_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    maybe_applied: bool = False
    discard_reason: str | None = None


class OutboxVersion(NamedTuple):
    """One version of an order's result, as the sender's read-back rule needs it."""

    order_id: str
    payload_hash: str
    state: str
    status: str | None  # the payload's status (COMPLETED / CANCELLED)
    maybe_applied: bool
    attempts: int
    created_at: datetime
    sent_at: datetime | None

    @property
    def may_be_at_kombo(self) -> bool:
        """Delivered, possibly applied by an attempt without an answer, or in a send whose end is unknown."""
        return self.maybe_applied or self.state in (SENT, SENDING)


def _item(row: Mapping[Any, Any]) -> OutboxItem:
    return from_row(OutboxItem, row)


def _newer(a: datetime | None, b: datetime | None) -> bool:
    # Unknown times are never "newer": ordering is only decided on two known timestamps.
    return a is not None and b is not None and a > b


_sibling = result_outbox.alias("sibling")
_row = result_outbox.c
# A row leaving `sending` without a recorded answer may have reached Kombo.
_MAYBE_IF_SENDING = sa.case((_row.state == SENDING, sa.true()), else_=_row.maybe_applied)


class ResultOutbox:
    """The result write-back queue."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def enqueue(
        self,
        rows: Iterable[OutboxEntry | tuple[str, str, str, Mapping[str, Any], datetime | None]],
        *,
        now: datetime | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Add results not seen before (by order id and payload hash) as pending; returns how many. With
        ``conn``, in the caller's transaction (the expiry of an order enqueues its result with its state change).

        The newer payload of an order supersedes its older pending and dead rows; a payload older (by
        `source_updated_at`) than one already queued or sent is kept as superseded; a superseded payload that
        comes back with a newer `source_updated_at` (the data reverted) is pending again."""
        now = now or self.store.now()
        added = 0
        for batch in chunked(OutboxEntry(*row) for row in rows):
            added += self._enqueue_batch(batch, now, conn)
        if added:
            log.info("result outbox: %d new result(s) queued", added)
        return added

    def _enqueue_batch(self, batch: list[OutboxEntry], now: datetime, outer: Connection | None = None) -> int:
        # Within one batch only the latest version of each order counts (later rows win ties).
        latest: dict[str, OutboxEntry] = {}
        for entry in batch:
            held = latest.get(entry.order_id)
            if held is None or not _newer(held.source_updated_at, entry.source_updated_at):
                latest[entry.order_id] = entry
        inserts: list[dict[str, Any]] = []
        revive: list[OutboxEntry] = []
        fresh: list[OutboxEntry] = []
        with self.store.transaction(conn=outer) as conn:
            existing: dict[str, list[Any]] = {}
            query = sa.select(_row.order_id, _row.payload_hash, _row.state, _row.source_updated_at).where(
                _row.order_id.in_(list(latest))
            )
            for found in conn.execute(query):
                existing.setdefault(found.order_id, []).append(found)
            for entry in latest.values():
                known = existing.get(entry.order_id, [])
                same = next((row for row in known if row.payload_hash == entry.payload_hash), None)
                if same is not None:
                    if same.state == SUPERSEDED and (
                        entry.source_updated_at is not None
                        and (
                            same.source_updated_at is None or entry.source_updated_at > same.source_updated_at
                        )
                    ):
                        revive.append(entry)
                    continue
                stale = any(
                    row.state in (PENDING, SENDING, SENT)
                    and _newer(row.source_updated_at, entry.source_updated_at)
                    for row in known
                )
                inserts.append(self._new_row(entry, SUPERSEDED if stale else PENDING, now))
                if not stale:
                    fresh.append(entry)
            added = 0
            if inserts:
                # DO NOTHING: a concurrent enqueue of the same key is not an error and not counted twice.
                insert = self._insert()(result_outbox).on_conflict_do_nothing(
                    index_elements=["order_id", "payload_hash"]
                )
                inserted = {
                    (order_id, payload_hash, state)
                    for order_id, payload_hash, state in conn.execute(
                        insert.returning(_row.order_id, _row.payload_hash, _row.state), inserts
                    )
                }
                added += sum(1 for *_key, state in inserted if state == PENDING)
                fresh = [
                    entry for entry in fresh if (entry.order_id, entry.payload_hash, PENDING) in inserted
                ]
            for entry in revive:
                conn.execute(
                    sa.update(result_outbox)
                    .where(
                        _row.order_id == entry.order_id,
                        _row.payload_hash == entry.payload_hash,
                        _row.state == SUPERSEDED,
                    )
                    .values(
                        state=PENDING,
                        source_updated_at=entry.source_updated_at,
                        next_attempt_at=now,
                        attempts=0,
                        updated_at=now,
                    )
                )
            added += len(revive)
            # Only orders that had an older pending or dead version need the UPDATE (most have none).
            replaceable = {
                order_id
                for order_id, rows in existing.items()
                if any(row.state in (PENDING, DEAD) for row in rows)
            }
            for entry in [*fresh, *revive]:
                if entry.order_id not in replaceable:
                    continue
                conn.execute(
                    sa.update(result_outbox)
                    .where(
                        _row.order_id == entry.order_id,
                        _row.payload_hash != entry.payload_hash,
                        _row.state.in_([PENDING, DEAD]),
                        # An expired order's CANCELLED result stands: a late result never replaces it (the
                        # sender records the late one not_writable).
                        ~sa.exists().where(
                            orders.c.id == _row.order_id, orders.c.expiry_payload_hash == _row.payload_hash
                        ),
                    )
                    .values(state=SUPERSEDED, updated_at=now)
                )
        return added

    def _insert(self) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        return postgresql.insert if self.store.dialect == "postgresql" else sqlite.insert

    @staticmethod
    def _new_row(entry: OutboxEntry, state: str, now: datetime) -> dict[str, Any]:
        # A pending row always carries its due time: claims walk the (state, next_attempt_at) index in order.
        return {
            "order_id": entry.order_id,
            "payload_hash": entry.payload_hash,
            "integration_id": entry.integration_id,
            "payload_json": to_jsonable(dict(entry.payload_json)),
            "state": state,
            "attempts": 0,
            "next_attempt_at": now if state == PENDING else None,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error_code": None,
            "last_error_message": None,
            "log_url": None,
            "source_updated_at": entry.source_updated_at,
            "created_at": now,
            "updated_at": now,
            "sent_at": None,
            "maybe_applied": False,
        }

    def claim_batch(
        self,
        owner: str,
        limit: int,
        lease_seconds: int,
        *,
        integration_ids: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> list[OutboxItem]:
        """Claim up to `limit` due results (pending and due, or sending with an expired lease) by
        compare-and-set; skips an order whose newer version is queued or another version is in flight."""
        if limit <= 0:
            return []
        wanted = None if integration_ids is None else sorted(set(integration_ids))
        if wanted == []:
            return []
        now = now or self.store.now()
        busy_sibling = sa.exists().where(
            _sibling.c.order_id == _row.order_id,
            _sibling.c.payload_hash != _row.payload_hash,
            sa.or_(
                # another version is in flight
                sa.and_(_sibling.c.state == SENDING, _sibling.c.lease_expires_at > now),
                # an abandoned send of an older version, now that a newer one is queued
                sa.and_(_row.state == SENDING, _sibling.c.state == PENDING),
                # two queued versions (concurrent enqueues): the later one goes
                sa.and_(
                    _row.state == PENDING,
                    _sibling.c.state == PENDING,
                    _sibling.c.created_at > _row.created_at,
                ),
            ),
        )
        due = sa.and_(_row.state == PENDING, _row.next_attempt_at <= now)
        abandoned = sa.and_(
            _row.state == SENDING, sa.or_(_row.lease_expires_at.is_(None), _row.lease_expires_at <= now)
        )
        # Two queries, each walking the (state, next_attempt_at) index in order and stopping at `limit`: the
        # cost stays flat however large the backlog of pending results grows.
        queries = [
            sa.select(_row.order_id, _row.payload_hash).where(abandoned, ~busy_sibling).limit(limit),
            sa.select(_row.order_id, _row.payload_hash)
            .where(due, ~busy_sibling)
            .order_by(_row.state, _row.next_attempt_at)
            .limit(limit),
        ]
        if wanted is not None:
            queries = [query.where(_row.integration_id.in_(wanted)) for query in queries]
        if self.store.dialect == "postgresql":
            # Concurrent claimers skip each other's rows; the locks also hold the rows until the UPDATE below.
            queries = [query.with_for_update(skip_locked=True, of=result_outbox) for query in queries]
        with self.store.transaction() as conn:
            keys: list[tuple[str, str]] = []
            for query in queries:
                keys.extend((order_id, payload_hash) for order_id, payload_hash in conn.execute(query))
            keys = keys[:limit]
            if not keys:
                return []
            # Compare-and-set: a row someone else claimed meanwhile is not returned. The order_id IN list lets
            # both databases find the rows through the primary key before matching the (order_id, hash) pairs.
            rows = conn.execute(
                sa.update(result_outbox)
                .where(
                    _row.order_id.in_(sorted({order_id for order_id, _hash in keys})),
                    sa.tuple_(_row.order_id, _row.payload_hash).in_(keys),
                    sa.or_(due, abandoned),
                )
                .values(
                    state=SENDING,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=_row.attempts + 1,
                    updated_at=now,
                    # Re-claiming an abandoned send: how its last attempt ended is unknown, it may have landed.
                    maybe_applied=_MAYBE_IF_SENDING,
                )
                .returning(*result_outbox.c)
            ).mappings()
            claimed = [_item(row) for row in rows]
        claimed.sort(key=lambda item: (item.next_attempt_at or item.created_at, item.order_id))
        log.info("%s claimed %d result(s) to send (asked for %d)", owner, len(claimed), limit)
        return claimed

    def expire_leases_of_earlier_tries(self, family: str, owner: str, *, now: datetime | None = None) -> int:
        """Results still being sent by an earlier, finished try of this task (see ``RunInfo.earlier_tries``)
        become claimable now; re-claiming them is the usual abandoned-send path (the result may have landed)."""
        count = expire_leases_of_earlier_tries(
            self.store, result_outbox, SENDING, family, owner, now or self.store.now()
        )
        if count:
            log.info("%s took over %d result(s) an earlier try of its task was sending", owner, count)
        return count

    def mark_sent(self, order_id: str, payload_hash: str, *, sent_at: datetime | None = None) -> bool:
        """The result reached Kombo (whoever sent it); older leftover versions of the order are superseded."""
        return bool(self.mark_sent_many([(order_id, payload_hash)], sent_at=sent_at))

    def mark_sent_many(
        self, keys: Iterable[tuple[str, str]], *, sent_at: datetime | None = None
    ) -> set[tuple[str, str]]:
        """`mark_sent` for many (order_id, payload_hash) in one transaction; returns the keys it marked.

        pending/sending -> sent, and older pending/sending/dead versions of the same orders -> superseded.
        Whoever holds the lease: a result that reached Kombo is sent even if the sender's lease expired and
        another worker re-claimed the row (that worker then finds it sent). The cost does not grow with the
        backlog or per key: one read of the orders' versions by order id (the primary key's first column,
        locked on PostgreSQL), then one batched UPDATE per kind.
        """
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        now = self.store.now()
        order_ids = sorted({order_id for order_id, _hash in wanted})
        # Row by row on the primary key (executemany): a multi-column IN would scan every pending row on
        # SQLite. `or_` rather than IN: executemany cannot expand an IN list.
        live = sa.or_(_row.state == PENDING, _row.state == SENDING)
        by_key = sa.and_(
            _row.order_id == sa.bindparam("k_order_id"), _row.payload_hash == sa.bindparam("k_payload_hash")
        )
        mark = (
            sa.update(result_outbox)
            .where(by_key, live)
            .values(
                state=SENT,
                sent_at=sent_at or now,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=None,
                updated_at=now,
                maybe_applied=True,
            )
        )
        supersede = (
            sa.update(result_outbox)
            .where(by_key, sa.or_(live, _row.state == DEAD))
            .values(
                state=SUPERSEDED,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
                maybe_applied=_MAYBE_IF_SENDING,
            )
        )
        marked: list[tuple[str, str]] = []
        with self.store.transaction() as conn:
            # (order_id, payload_hash) -> [state, created_at] of every version of these orders.
            versions: dict[str, dict[str, list[Any]]] = {}
            for batch in chunked(order_ids):
                query = (
                    sa.select(_row.order_id, _row.payload_hash, _row.state, _row.created_at)
                    .where(_row.order_id.in_(batch))
                    .order_by(in_byte_order(_row.order_id), _row.payload_hash)
                )
                if self.store.dialect == "postgresql":
                    # Held until commit, so the plan below is what the UPDATEs find (SQLite: BEGIN IMMEDIATE).
                    query = query.with_for_update()
                for found in conn.execute(query):
                    versions.setdefault(found.order_id, {})[found.payload_hash] = [
                        found.state,
                        found.created_at,
                    ]
            superseded: list[tuple[str, str]] = []
            # In the caller's order, exactly as `mark_sent` one key after another would do it.
            for order_id, payload_hash in wanted:
                rows = versions.get(order_id, {})
                this = rows.get(payload_hash)
                if this is None or this[0] not in (PENDING, SENDING):
                    continue
                this[0] = SENT
                marked.append((order_id, payload_hash))
                for other_hash, other in rows.items():
                    if (
                        other_hash != payload_hash
                        and other[0] in (PENDING, SENDING, DEAD)
                        and other[1] <= this[1]
                    ):
                        other[0] = SUPERSEDED
                        superseded.append((order_id, other_hash))
            if marked:
                conn.execute(mark, [{"k_order_id": o, "k_payload_hash": h} for o, h in marked])
            if superseded:
                conn.execute(supersede, [{"k_order_id": o, "k_payload_hash": h} for o, h in superseded])
        if len(marked) == 1:
            log.info("result of order %s sent", marked[0][0])
        elif marked:
            log.info("results of %d order(s) sent", len(marked))
        return set(marked)

    def mark_retry(
        self,
        order_id: str,
        payload_hash: str,
        error_code: str | None,
        message: str | None,
        log_url: str | None,
        next_attempt_at: datetime,
        *,
        owner: str | None = None,
        maybe_applied: bool | None = None,
    ) -> bool:
        """sending -> pending, due again at `next_attempt_at`; False if not sending (or not leased by `owner`).

        `maybe_applied`: True when an attempt got no answer, False when a read-back proved the version is not at
        Kombo, None to leave the flag as it is (every attempt got a definite error answer)."""
        return self._finish(
            order_id,
            payload_hash,
            PENDING,
            (SENDING,),
            owner,
            maybe_applied,
            last_error_code=error_code,
            last_error_message=clip(message),
            log_url=log_url,
            next_attempt_at=next_attempt_at,
        )

    def mark_dead(
        self,
        order_id: str,
        payload_hash: str,
        error_code: str | None,
        message: str | None,
        log_url: str | None = None,
        *,
        owner: str | None = None,
        maybe_applied: bool | None = None,
    ) -> bool:
        """A permanent error: the result becomes a dead letter (listed by `dead_letters`, replayed by `requeue`).
        `maybe_applied` as for `mark_retry`."""
        return self._finish(
            order_id,
            payload_hash,
            DEAD,
            (PENDING, SENDING),
            owner,
            maybe_applied,
            last_error_code=error_code,
            last_error_message=clip(message),
            log_url=log_url,
        )

    def mark_not_writable(
        self,
        order_id: str,
        payload_hash: str,
        error_code: str | None,
        message: str | None,
        log_url: str | None = None,
        *,
        owner: str | None = None,
        maybe_applied: bool | None = None,
    ) -> bool:
        """The order can no longer take a result (no longer OPEN, integration gone); kept for the team to see.
        `maybe_applied` as for `mark_retry`."""
        return self._finish(
            order_id,
            payload_hash,
            NOT_WRITABLE,
            (PENDING, SENDING),
            owner,
            maybe_applied,
            last_error_code=error_code,
            last_error_message=clip(message),
            log_url=log_url,
        )

    def _finish(
        self,
        order_id: str,
        payload_hash: str,
        target: str,
        sources: tuple[str, ...],
        owner: str | None,
        maybe_applied: bool | None,
        **values: Any,
    ) -> bool:
        if maybe_applied is not None:
            values["maybe_applied"] = maybe_applied
        stmt = (
            sa.update(result_outbox)
            .where(_row.order_id == order_id, _row.payload_hash == payload_hash, _row.state.in_(sources))
            .values(
                state=target, lease_owner=None, lease_expires_at=None, updated_at=self.store.now(), **values
            )
        )
        if owner is not None:
            stmt = stmt.where(sa.or_(_row.state != SENDING, _row.lease_owner == owner))
        with self.store.transaction() as conn:
            changed = bool(conn.execute(stmt).rowcount)
        if changed:
            log.info("result of order %s -> %s (%s)", order_id, target, values.get("last_error_code"))
        return changed

    def mark_landed(self, order_id: str, payload_hash: str) -> bool:
        """Kombo holds this version (a read-back matched it): it becomes sent, whatever state it was left in
        (superseded, dead, not_writable, pending, sending). False if it is unknown or already sent."""
        now = self.store.now()
        stmt = (
            sa.update(result_outbox)
            .where(_row.order_id == order_id, _row.payload_hash == payload_hash, _row.state != SENT)
            .values(
                state=SENT,
                sent_at=now,
                maybe_applied=True,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        with self.store.transaction() as conn:
            changed = bool(conn.execute(stmt).rowcount)
        if changed:
            log.info("result of order %s: Kombo holds an earlier version, now recorded as sent", order_id)
        return changed

    def mark_not_applied(self, order_ids: Iterable[str], *, owner: str) -> int:
        """Kombo showed these orders OPEN after their last attempts ended: no version of them is at Kombo.

        Clears `maybe_applied` on every version that is not sent and not in a send of another owner (an
        abandoned send is left as it is: its attempt may still be on its way). Returns how many rows changed."""
        now = self.store.now()
        changed = 0
        with self.store.transaction() as conn:
            for batch in chunked(sorted(set(order_ids))):
                changed += conn.execute(
                    sa.update(result_outbox)
                    .where(
                        _row.order_id.in_(batch),
                        _row.maybe_applied.is_(True),
                        _row.state != SENT,
                        sa.or_(_row.state != SENDING, _row.lease_owner == owner),
                    )
                    .values(maybe_applied=False, updated_at=now)
                ).rowcount
        return changed

    def versions(self, order_ids: Iterable[str]) -> dict[str, list[OutboxVersion]]:
        """Every version of these orders (oldest first), without their payloads."""
        found: dict[str, list[OutboxVersion]] = {}
        with self.store.transaction(readonly=True) as conn:
            for batch in chunked(sorted(set(order_ids))):
                query = (
                    sa.select(
                        _row.order_id,
                        _row.payload_hash,
                        _row.state,
                        _row.payload_json,
                        _row.maybe_applied,
                        _row.attempts,
                        _row.created_at,
                        _row.sent_at,
                    )
                    .where(_row.order_id.in_(batch))
                    .order_by(_row.order_id, _row.created_at, _row.payload_hash)
                )
                for row in conn.execute(query):
                    status = row.payload_json.get("status") if isinstance(row.payload_json, dict) else None
                    found.setdefault(row.order_id, []).append(
                        OutboxVersion(
                            row.order_id,
                            row.payload_hash,
                            row.state,
                            None if status is None else str(status),
                            bool(row.maybe_applied),
                            row.attempts,
                            row.created_at,
                            row.sent_at,
                        )
                    )
        return found

    def requeue(self, order_ids: Iterable[str]) -> int:
        """Replay dead letters: the newest dead / not_writable version of each order becomes pending again
        (attempts reset), unless a newer version is already queued. Returns how many."""
        now = self.store.now()
        requeued = 0
        newer_or_active = sa.exists().where(
            _sibling.c.order_id == _row.order_id,
            _sibling.c.payload_hash != _row.payload_hash,
            sa.or_(
                _sibling.c.state.in_([PENDING, SENDING]),
                sa.and_(_sibling.c.state.in_(DEAD_LETTER_STATES), _sibling.c.created_at > _row.created_at),
            ),
        )
        with self.store.transaction() as conn:
            for batch in chunked(sorted(set(order_ids))):
                requeued += conn.execute(
                    sa.update(result_outbox)
                    .where(_row.order_id.in_(batch), _row.state.in_(DEAD_LETTER_STATES), ~newer_or_active)
                    .values(state=PENDING, attempts=0, next_attempt_at=now, updated_at=now)
                ).rowcount
        log.info("result outbox: %d dead letter(s) requeued", requeued)
        return requeued

    def discard(self, order_ids: Iterable[str], reason: str) -> int:
        """The team gives up on these dead letters: every dead / not_writable version of the orders becomes
        `discarded` with `reason` (kept, never sent, never replayed). Returns how many rows changed."""
        reason = (reason or "").strip()
        if not reason:
            raise ValueError("a discard needs a reason")
        now = self.store.now()
        discarded = 0
        with self.store.transaction() as conn:
            for batch in chunked(sorted(set(order_ids))):
                discarded += conn.execute(
                    sa.update(result_outbox)
                    .where(_row.order_id.in_(batch), _row.state.in_(DEAD_LETTER_STATES))
                    .values(state=DISCARDED, discard_reason=clip(reason), updated_at=now)
                ).rowcount
        log.info("result outbox: %d dead letter(s) discarded", discarded)
        return discarded

    def dead_letters(
        self, *, integration_id: str | None = None, limit: int | None = None
    ) -> list[OutboxItem]:
        """Dead and not-writable results, newest first."""
        query = (
            sa.select(result_outbox)
            .where(_row.state.in_(DEAD_LETTER_STATES))
            .order_by(_row.updated_at.desc(), _row.order_id)
        )
        if integration_id is not None:
            query = query.where(_row.integration_id == integration_id)
        if limit is not None:
            query = query.limit(limit)
        with self.store.transaction(readonly=True) as conn:
            return [_item(row) for row in conn.execute(query).mappings()]

    def get(self, order_id: str, payload_hash: str) -> OutboxItem | None:
        """One outbox row, or None."""
        query = sa.select(result_outbox).where(_row.order_id == order_id, _row.payload_hash == payload_hash)
        with self.store.transaction(readonly=True) as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _item(row)

    def counts_by_state(self) -> dict[str, int]:
        """Number of rows in every state (zeros included)."""
        counts = dict.fromkeys(OUTBOX_STATES, 0)
        query = sa.select(_row.state, sa.func.count()).group_by(_row.state)
        with self.store.transaction(readonly=True) as conn:
            for state, count in conn.execute(query):
                counts[state] = count
        return counts

    def sent_payload_hashes(self, order_id: str) -> set[str]:
        """Hashes of the payloads already delivered for the order."""
        query = sa.select(_row.payload_hash).where(_row.order_id == order_id, _row.state == SENT)
        with self.store.transaction(readonly=True) as conn:
            return set(conn.execute(query).scalars())
