"""`OrderRepository`: the only writer of `orders` and `invitations`.

Every order is one row with a state machine (`TRANSITIONS`). Invites are claimed by compare-and-set with a
lease, so two workers never hold the same order, and a worker that lost its lease cannot mark it invited.
Nothing here logs candidate data: only order ids, states and counts.

Over 400 lines on purpose: the only writer of `orders` and `invitations`; every transition's fence sits beside
the state machine it enforces.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from kombo_sync.state._util import (
    chunked,
    clip,
    expire_leases_of_earlier_tries,
    from_row,
    in_byte_order,
    not_by_index,
    to_jsonable,
)
from kombo_sync.state.schema import (
    INVITATION_CHANNELS,
    ORDER_SEEN_VIA,
    ORDER_STATES,
    invitations,
    orders,
    result_outbox,
)
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

RECEIVED = "received"
INVITING = "inviting"
INVITED = "invited"
REJECTED = "rejected"
DUPLICATE = "duplicate"
CANCELLED = "cancelled"
FAILED = "failed"

# An order in one of these states still stands for a candidate who has, or will get, an invitation.
ACTIVE_STATES = (RECEIVED, INVITING, INVITED)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[str]
    target: str


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        # inviting -> inviting is a re-claim of an order whose lease expired (the worker died mid-send).
        Transition("claim", frozenset({RECEIVED, INVITING}), INVITING),
        Transition("mark_invited", frozenset({INVITING}), INVITED),
        Transition("release_with_error", frozenset({INVITING}), RECEIVED),
        Transition("mark_failed", frozenset({RECEIVED, INVITING}), FAILED),
        # From inviting only for the lease holder (the dispatcher closing an order it claimed).
        Transition("mark_duplicate", frozenset({RECEIVED, INVITING}), DUPLICATE),
        Transition("mark_rejected", frozenset({RECEIVED, INVITING}), REJECTED),
        Transition("mark_cancelled", frozenset({RECEIVED, INVITING}), CANCELLED),
        # After the invitation: only the reconcile job, once the channel has revoked it (or cannot).
        Transition("cancel_invitation", frozenset({INVITED}), CANCELLED),
        # No result in time: only the lifecycle job, after revoking, with the expiry result in the outbox.
        Transition("expire", frozenset({INVITED}), CANCELLED),
    )
}

ALLOWED_TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    (source, t.target) for t in TRANSITIONS.values() for source in t.sources
)


def _held_or_received(owner: str | None) -> sa.ColumnElement[bool]:
    """A received order, or one whose lease `owner` holds (no owner: received only)."""
    if owner is None:
        return orders.c.state == RECEIVED
    return sa.or_(orders.c.state == RECEIVED, orders.c.lease_owner == owner)


class OrderNotFound(LookupError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} is not in the state store")
        self.order_id = order_id


class InvalidTransition(RuntimeError):
    def __init__(self, order_id: str, current: str, target: str) -> None:
        super().__init__(f"order {order_id}: {current} -> {target} is not an allowed transition")
        self.order_id = order_id
        self.current = current
        self.target = target


@dataclass(frozen=True)
class RecordResult:
    created: bool
    state: str


@dataclass(frozen=True)
class ClaimedOrder:
    """An order this worker holds the lease on. Candidate fields are kept out of `repr` (and so out of logs)."""

    order_id: str
    integration_id: str
    package_id: str
    kombo_status: str | None
    attempts: int
    lease_owner: str
    lease_expires_at: datetime
    received_at: datetime
    candidate_email: str | None = field(repr=False)
    candidate_first_name: str | None = field(repr=False)
    candidate_last_name: str | None = field(repr=False)
    candidate_phone: str | None = field(repr=False)
    candidate_remote_id: str | None = field(repr=False)
    application_remote_id: str | None
    job_remote_id: str | None
    job_name: str | None
    order_json: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class SentInvitation:
    """What the channel answered for one order, to be committed with `mark_invited_many`."""

    order_id: str
    channel: str
    invitation_id: str | None
    url: str | None
    external_id: str | None


@dataclass(frozen=True)
class OrderRecord:
    """One row of `orders`. Candidate fields are kept out of `repr`."""

    id: str
    integration_id: str
    package_id: str
    kombo_status: str | None
    state: str
    first_seen_via: str
    candidate_email: str | None = field(repr=False)
    candidate_first_name: str | None = field(repr=False)
    candidate_last_name: str | None = field(repr=False)
    candidate_phone: str | None = field(repr=False)
    candidate_remote_id: str | None = field(repr=False)
    application_remote_id: str | None
    job_remote_id: str | None
    job_name: str | None
    order_json: dict[str, Any] = field(repr=False)
    duplicate_of: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None = field(repr=False)
    lease_owner: str | None
    lease_expires_at: datetime | None
    invitation_id: str | None
    invitation_url: str | None
    channel: str | None
    received_at: datetime
    updated_at: datetime
    invited_at: datetime | None
    # Candidate data erased (kombo_sync.state.erasures): when, and the salted hash of the e-mail that stays.
    candidate_email_hash: str | None = None
    erased_at: datetime | None = None
    # Expired without a result (kombo_sync.lifecycle): when, and the hash of the CANCELLED result written back.
    expired_at: datetime | None = None
    expiry_payload_hash: str | None = None


# What an erased order keeps of Kombo's order (kombo_sync.state.erasures): ids, package, status, the job's name.
_KEPT_ORDER_KEYS = ("id", "package_id", "status", "integration_id")
_KEPT_NESTED_KEYS = {
    "candidate": ("id", "remote_id"),
    "application": ("id", "remote_id"),
    "job": ("remote_id", "name"),
}


def scrub_order_json(order_json: Any) -> dict[str, Any]:
    """Kombo's order reduced to ids (and the job's name): no candidate contact data, no hiring team."""
    source = order_json if isinstance(order_json, Mapping) else {}
    kept: dict[str, Any] = {key: source[key] for key in _KEPT_ORDER_KEYS if key in source}
    for name, keys in _KEPT_NESTED_KEYS.items():
        nested = source.get(name)
        if isinstance(nested, Mapping):
            kept[name] = {key: nested[key] for key in keys if key in nested}
    kept["erased"] = True
    return kept


_CLAIMED_COLUMNS = [orders.c.id if f.name == "order_id" else orders.c[f.name] for f in fields(ClaimedOrder)]


@cache
def _insert_new_order(dialect: str) -> sa.Insert:
    """`INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id`, built once per dialect (every webhook runs it)."""
    insert = pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert
    return insert(orders).on_conflict_do_nothing(index_elements=["id"]).returning(orders.c.id)


@cache
def _duplicate_query(by_email: bool, by_hash: bool, by_application: bool, excluding: bool) -> sa.Select:
    """`find_active_duplicate`'s statement for one combination of the ways of being the same candidate, built
    once with bound parameters (building it took more CPU than running it)."""
    same_candidate = []
    if by_email:
        same_candidate.append(sa.func.lower(orders.c.candidate_email) == sa.bindparam("email"))
    if by_hash:
        same_candidate.append(orders.c.candidate_email_hash == sa.bindparam("email_hash"))
    if by_application:
        same_candidate.append(orders.c.application_remote_id == sa.bindparam("application_remote_id"))
    # One indexed lookup per way of being the same candidate (an OR would scan the package's orders), through
    # the index on that identity column alone: integration, package and state are checked on the few rows found,
    # in a form no index matches. The statement is prepared, and PostgreSQL's generic plan, chosen without the
    # values on statistics from when the table was smaller, would otherwise read every active order of the
    # package through an index on (integration_id, ...) (migration 0013).
    lookups = []
    for condition in same_candidate:
        lookup = sa.select(orders.c.id, orders.c.received_at).where(
            condition,
            not_by_index(orders.c.integration_id) == sa.bindparam("integration_id"),
            not_by_index(orders.c.package_id) == sa.bindparam("package_id"),
            # Constants rendered into the SQL: an expanding IN parameter is re-rendered at every execution.
            not_by_index(orders.c.state).in_([sa.literal_column(f"'{state}'") for state in ACTIVE_STATES]),
        )
        if excluding:
            lookup = lookup.where(orders.c.id != sa.bindparam("exclude_order_id"))
        lookups.append(lookup)
    found = sa.union_all(*lookups).subquery() if len(lookups) > 1 else lookups[0].subquery()
    return sa.select(found.c.id).order_by(found.c.received_at, found.c.id).limit(1)


def active_duplicate_query(
    integration_id: str,
    package_id: str,
    candidate_email: str | None,
    application_remote_id: str | None,
    exclude_order_id: str | None,
    *,
    candidate_email_hash: str | None = None,
) -> tuple[sa.Select, dict[str, Any]] | None:
    """`OrderRepository.find_active_duplicate`'s statement (built once per shape) and its parameters, for a caller
    that runs it inside a larger statement (the webhook's first read); None when nothing identifies the
    candidate."""
    email = (candidate_email or "").strip().lower()
    if not (email or candidate_email_hash or application_remote_id):
        return None
    query = _duplicate_query(
        bool(email), bool(candidate_email_hash), bool(application_remote_id), exclude_order_id is not None
    )
    params = {
        "integration_id": integration_id,
        "package_id": package_id,
        "email": email,
        "email_hash": candidate_email_hash,
        "application_remote_id": application_remote_id,
        "exclude_order_id": exclude_order_id,
    }
    return query, params


# `mark_invited_many`'s statements, built once: the same compiled statement for every group, whatever its size.
_HELD_FOR_INVITE = (
    sa.select(orders.c.id, orders.c.attempts)
    .where(
        orders.c.id.in_(sa.bindparam("ids", expanding=True)),
        orders.c.state == INVITING,
        orders.c.lease_owner == sa.bindparam("owner"),
    )
    .order_by(in_byte_order(orders.c.id))
)
# Locked in id order, as `record_orders` updates a page: two transactions that lock some of the same orders take
# those locks in the same order, so they wait for each other instead of deadlocking (PostgreSQL). Python's string
# order, whatever the database's collation (`in_byte_order`).
_HELD_FOR_INVITE_LOCKED = _HELD_FOR_INVITE.with_for_update()
_MARK_INVITED = (
    sa.update(orders)
    .where(
        orders.c.id == sa.bindparam("b_id"),
        orders.c.state == INVITING,
        orders.c.lease_owner == sa.bindparam("b_owner"),
    )
    .values(
        state=INVITED,
        invitation_id=sa.bindparam("b_invitation_id"),
        invitation_url=sa.bindparam("b_url"),
        channel=sa.bindparam("b_channel"),
        invited_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
        lease_owner=None,
        lease_expires_at=None,
        next_attempt_at=None,
        last_error=None,
    )
)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _order_columns(
    order: Mapping[str, Any], integration_id: str | None, json_safe: bool = False
) -> dict[str, Any]:
    order_id = _text(order.get("id"))
    package_id = _text(order.get("package_id"))
    integration = _text(integration_id or order.get("integration_id"))
    missing = [
        name
        for name, value in (("id", order_id), ("package_id", package_id), ("integration_id", integration))
        if not value
    ]
    if missing:
        raise ValueError(f"order {order_id or '?'} lacks {', '.join(missing)}")
    candidate = order.get("candidate") or {}
    application = order.get("application") or {}
    job = order.get("job") or {}
    return {
        "id": order_id,
        "integration_id": integration,
        "package_id": package_id,
        "kombo_status": _text(order.get("status")),
        "candidate_email": _text(candidate.get("email")),
        "candidate_first_name": _text(candidate.get("first_name")),
        "candidate_last_name": _text(candidate.get("last_name")),
        "candidate_phone": _text(candidate.get("phone")),
        "candidate_remote_id": _text(candidate.get("remote_id")),
        "application_remote_id": _text(application.get("remote_id")),
        "job_remote_id": _text(job.get("remote_id")),
        "job_name": _text(job.get("name")),
        "order_json": dict(order) if json_safe else to_jsonable(dict(order)),
    }


class OrderRepository:
    """Orders and their invitations: record, claim for invite, and the named state transitions."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def record_order(
        self,
        order: Mapping[str, Any],
        seen_via: str,
        *,
        integration_id: str | None = None,
        now: datetime | None = None,
        conn: Connection | None = None,
        json_safe: bool = False,
    ) -> RecordResult:
        """Record a Kombo order once (webhook or poll, concurrently or not); a later sighting only refreshes
        `kombo_status` and `order_json`. `integration_id` is for poll results, which do not carry it.
        `json_safe`: the order is plain JSON already (a model's `model_dump(mode="json")`), stored as it is."""
        [result] = self.record_orders(
            [order], seen_via, integration_id=integration_id, now=now, conn=conn, json_safe=json_safe
        )
        return result

    def record_orders(
        self,
        kombo_orders: Iterable[Mapping[str, Any]],
        seen_via: str,
        *,
        integration_id: str | None = None,
        now: datetime | None = None,
        conn: Connection | None = None,
        json_safe: bool = False,
    ) -> list[RecordResult]:
        """`record_order` for a page of orders in one transaction (the caller's with `conn`); results in input
        order."""
        if seen_via not in ORDER_SEEN_VIA:
            raise ValueError(f"seen_via must be one of {ORDER_SEEN_VIA}, not {seen_via!r}")
        rows = [_order_columns(order, integration_id, json_safe) for order in kombo_orders]
        now = now or self.store.now()
        # Written in id order, not Kombo's listing order: each existing order's UPDATE locks its row until COMMIT,
        # and a dispatcher marking its orders invited locks them in id order too (`mark_invited_many`); in
        # different orders, a poll and a dispatch holding one order each and waiting for the other's would
        # deadlock on PostgreSQL (one of them failed with DeadlockDetected).
        in_id_order = sorted(range(len(rows)), key=lambda index: str(rows[index]["id"]))
        with self.store.transaction(conn=conn) as tx:
            recorded = {index: self._record(tx, rows[index], seen_via, now) for index in in_id_order}
        results = [recorded[index] for index in range(len(rows))]
        created = sum(result.created for result in results)
        if created:
            log.info(
                "%d new order(s) recorded via %s (%d seen again)", created, seen_via, len(results) - created
            )
        return results

    def _record(
        self, conn: Connection, columns: dict[str, Any], seen_via: str, now: datetime
    ) -> RecordResult:
        row = {
            **columns,
            "state": RECEIVED,
            "first_seen_via": seen_via,
            "attempts": 0,
            "received_at": now,
            "updated_at": now,
        }
        # DO NOTHING, then a plain UPDATE: only the first writer's first_seen_via/received_at survive, and a
        # concurrent insert of the same id waits for the other commit instead of failing.
        if conn.execute(_insert_new_order(self.store.dialect), row).first() is not None:
            return RecordResult(created=True, state=RECEIVED)
        # An order whose candidate data was erased keeps only ids, even when Kombo lists it again.
        json_type = orders.c.order_json.type
        order_json = sa.case(
            (orders.c.erased_at.is_(None), sa.literal(columns["order_json"], json_type)),
            else_=sa.literal(scrub_order_json(columns["order_json"]), json_type),
        )
        state = conn.execute(
            sa.update(orders)
            .where(orders.c.id == columns["id"])
            .values(kombo_status=columns["kombo_status"], order_json=order_json, updated_at=now)
            .returning(orders.c.state)
        ).scalar_one()
        return RecordResult(created=False, state=state)

    def claim_orders_for_invite(
        self,
        owner: str,
        lease_seconds: int,
        limit: int,
        integration_ids: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> list[ClaimedOrder]:
        """Claim up to `limit` orders that are due (received, retry time reached) or whose lease expired;
        each claim is a compare-and-set, so concurrent claimers never get the same order. Attempts +1."""
        if limit <= 0:
            return []
        wanted = None if integration_ids is None else sorted(set(integration_ids))
        if wanted == []:
            return []
        now = now or self.store.now()
        claimable = sa.or_(
            sa.and_(
                orders.c.state == RECEIVED,
                sa.or_(orders.c.next_attempt_at.is_(None), orders.c.next_attempt_at <= now),
            ),
            sa.and_(
                orders.c.state == INVITING,
                sa.or_(orders.c.lease_expires_at.is_(None), orders.c.lease_expires_at <= now),
            ),
        )
        candidates = (
            sa.select(orders.c.id).where(claimable).order_by(orders.c.received_at, orders.c.id).limit(limit)
        )
        if wanted is not None:
            candidates = candidates.where(orders.c.integration_id.in_(wanted))
        if self.store.dialect == "postgresql":
            # Concurrent claimers skip each other's rows instead of queueing behind them.
            candidates = candidates.with_for_update(skip_locked=True)
        with self.store.transaction() as conn:
            ids = list(conn.execute(candidates).scalars())
            if not ids:
                return []
            # The UPDATE repeats the condition: a row someone else claimed meanwhile is simply not returned.
            rows = conn.execute(
                sa.update(orders)
                .where(orders.c.id.in_(ids), claimable)
                .values(
                    state=INVITING,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=orders.c.attempts + 1,
                    next_attempt_at=None,
                    updated_at=now,
                )
                .returning(*_CLAIMED_COLUMNS)
            ).all()
        claimed = sorted(
            (ClaimedOrder(*row) for row in rows), key=lambda claim: (claim.received_at, claim.order_id)
        )
        log.info("%s claimed %d order(s) for invite (asked for %d)", owner, len(claimed), limit)
        return claimed

    def expire_leases_of_earlier_tries(self, family: str, owner: str, *, now: datetime | None = None) -> int:
        """Orders still claimed by an earlier, finished try of this task (see ``RunInfo.earlier_tries``) become
        claimable now instead of when their lease runs out; re-claiming them is the usual expired-lease path."""
        count = expire_leases_of_earlier_tries(
            self.store, orders, INVITING, family, owner, now or self.store.now()
        )
        if count:
            log.info("%s took over %d order(s) an earlier try of its task had claimed", owner, count)
        return count

    def claim_order(
        self, order_id: str, owner: str, lease_seconds: int, *, now: datetime | None = None
    ) -> ClaimedOrder | None:
        """Claim this one order now (received whatever its retry time, or inviting with an expired lease), e.g.
        for the inline flow that must answer for it; None if another worker holds it or it is final. Attempts +1."""
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
            if row is None:
                self._require(conn, order_id)
                return None
        log.info("%s claimed order %s for invite", owner, order_id)
        return ClaimedOrder(*row)

    def mark_invited(
        self,
        order_id: str,
        owner: str,
        invitation_id: str | None,
        url: str | None,
        channel: str,
        external_id: str | None,
        *,
        now: datetime | None = None,
    ) -> bool:
        """inviting -> invited and the `invitations` row, in one transaction; False if `owner` no longer holds
        the lease (another worker re-claimed the order, or it was cancelled meanwhile)."""
        sent = SentInvitation(order_id, channel, invitation_id, url, external_id)
        committed = self.mark_invited_many([sent], owner, now=now)[order_id]
        if committed is None:
            raise OrderNotFound(order_id)
        return committed

    def mark_invited_many(
        self, sent: Sequence[SentInvitation], owner: str, *, now: datetime | None = None
    ) -> dict[str, bool | None]:
        """`mark_invited` for several orders in one transaction (a locked read of the leases, one UPDATE and one
        INSERT for the group, one COMMIT), each fenced by `owner`'s lease on its own: order id -> True (invited), False (lease lost: not marked), None (the
        order is not in the state store)."""
        for item in sent:
            if item.channel not in INVITATION_CHANNELS:
                raise ValueError(f"channel must be one of {INVITATION_CHANNELS}, not {item.channel!r}")
        if not sent:
            return {}
        by_id = {item.order_id: item for item in sent}
        if len(by_id) != len(sent):
            raise ValueError("an order can be marked invited once per call")
        now = now or self.store.now()
        # PostgreSQL: FOR UPDATE, the rows stay ours until COMMIT; SQLite: BEGIN IMMEDIATE holds the database.
        held = _HELD_FOR_INVITE_LOCKED if self.store.dialect == "postgresql" else _HELD_FOR_INVITE
        with self.store.transaction() as conn:
            # Which orders are still leased to `owner`, read first under that lock, so that the UPDATE and INSERT
            # below are one statement each for the whole group (executemany), whatever its size.
            # An expired lease that nobody took over is still honoured: the invitation did go out.
            attempts = {
                str(order_id): int(attempt)
                for order_id, attempt in conn.execute(held, {"ids": list(by_id), "owner": owner})
            }
            if attempts:
                conn.execute(
                    _MARK_INVITED,
                    [
                        {
                            "b_id": order_id,
                            "b_owner": owner,
                            "b_invitation_id": by_id[order_id].invitation_id,
                            "b_url": by_id[order_id].url,
                            "b_channel": by_id[order_id].channel,
                            "b_now": now,
                        }
                        for order_id in attempts
                    ],
                )
                conn.execute(
                    sa.insert(invitations),
                    [
                        {
                            "order_id": order_id,
                            "channel": by_id[order_id].channel,
                            "external_id": by_id[order_id].external_id,
                            "url": by_id[order_id].url,
                            "sent_at": now,
                            "attempt": attempt,
                        }
                        for order_id, attempt in attempts.items()
                    ],
                )
            lost = [order_id for order_id in by_id if order_id not in attempts]
            known = set(self.states_of(lost, conn=conn)) if lost else set()
        results: dict[str, bool | None] = {}
        for order_id, item in by_id.items():
            if order_id in attempts:
                results[order_id] = True
                log.info("order %s invited via %s (attempt %d)", order_id, item.channel, attempts[order_id])
            elif order_id in known:
                results[order_id] = False
                log.warning("order %s: %s no longer holds the lease; not marked invited", order_id, owner)
            else:
                results[order_id] = None
        return results

    def release_with_error(
        self, order_id: str, owner: str, error: str, retry_at: datetime, *, now: datetime | None = None
    ) -> bool:
        """inviting -> received with the error and the time of the next attempt; False if the lease is lost."""
        now = now or self.store.now()
        with self.store.transaction() as conn:
            released = conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.state == INVITING, orders.c.lease_owner == owner)
                .values(
                    state=RECEIVED,
                    last_error=clip(error),
                    next_attempt_at=retry_at,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            ).rowcount
            if not released:
                self._require(conn, order_id)
                return False
        log.info("order %s released for retry at %s", order_id, retry_at.isoformat())
        return True

    def mark_failed(self, order_id: str, reason: str, *, owner: str | None = None) -> bool:
        """received/inviting -> failed (no more attempts). With `owner`, an inviting order must be leased by it."""
        fence = None
        if owner is not None:
            fence = sa.or_(orders.c.state == RECEIVED, orders.c.lease_owner == owner)
        return self._transition(order_id, "mark_failed", {"last_error": clip(reason)}, fence=fence)

    def mark_duplicate(self, order_id: str, duplicate_of: str, *, owner: str | None = None) -> bool:
        """received -> duplicate of another (active) order; inviting -> duplicate only for the lease `owner`."""
        if duplicate_of == order_id:
            raise ValueError(f"order {order_id} cannot be a duplicate of itself")
        return self._transition(
            order_id,
            "mark_duplicate",
            {"duplicate_of": duplicate_of, "last_error": f"duplicate of order {duplicate_of}"},
            fence=_held_or_received(owner),
        )

    def mark_rejected(
        self, order_id: str, reason: str, *, owner: str | None = None, conn: Connection | None = None
    ) -> bool:
        """received -> rejected (the webhook answered ORDER_REJECTED, or Kombo lists it REJECTED);
        inviting -> rejected only for the lease `owner`."""
        return self._transition(
            order_id, "mark_rejected", {"last_error": clip(reason)}, fence=_held_or_received(owner), conn=conn
        )

    def mark_cancelled(
        self, order_id: str, *, reason: str | None = None, conn: Connection | None = None
    ) -> bool:
        """received/inviting -> cancelled (cancelled in the ATS); a worker holding the lease then cannot mark it
        invited."""
        values = {"last_error": clip(reason)} if reason else {}
        return self._transition(order_id, "mark_cancelled", values, conn=conn)

    def cancel_invitation(self, order_id: str, *, reason: str, conn: Connection | None = None) -> bool:
        """invited -> cancelled: the order left OPEN in the ATS after its invitation went out. The caller revokes
        the invitation first (idempotently), so a crash in between is repaired by doing both again."""
        return self._transition(order_id, "cancel_invitation", {"last_error": clip(reason)}, conn=conn)

    def expire(
        self, order_id: str, *, reason: str, payload_hash: str, now: datetime, conn: Connection | None = None
    ) -> bool:
        """invited -> cancelled because no result came in time (``expired_at``, the hash of the CANCELLED result
        the caller enqueues in the same transaction). Only while the order has no result version at all: a
        result that arrived meanwhile wins. The caller revokes the invitation first, like ``cancel_invitation``."""
        no_result = ~sa.exists().where(result_outbox.c.order_id == orders.c.id)
        return self._transition(
            order_id,
            "expire",
            {"last_error": clip(reason), "expired_at": now, "expiry_payload_hash": payload_hash},
            fence=no_result,
            conn=conn,
        )

    def expiry_payload_hashes(self, order_ids: Iterable[str]) -> dict[str, str]:
        """order id -> the hash of its expiry result, for those of these orders that expired."""
        found: dict[str, str] = {}
        with self.store.transaction(readonly=True) as conn:
            for batch in chunked(sorted(set(order_ids))):
                query = sa.select(orders.c.id, orders.c.expiry_payload_hash).where(
                    orders.c.id.in_(batch), orders.c.expiry_payload_hash.is_not(None)
                )
                found.update((str(order_id), str(value)) for order_id, value in conn.execute(query))
        return found

    def states_of(self, order_ids: Iterable[str], *, conn: Connection | None = None) -> dict[str, str]:
        """order id -> state for those of these orders the store knows."""
        found: dict[str, str] = {}
        with self.store.transaction(readonly=True, conn=conn) as tx:
            for batch in chunked(sorted(set(order_ids))):
                query = sa.select(orders.c.id, orders.c.state).where(orders.c.id.in_(batch))
                found.update((str(order_id), str(state)) for order_id, state in tx.execute(query))
        return found

    def _transition(
        self,
        order_id: str,
        name: str,
        values: dict[str, Any],
        *,
        fence: sa.ColumnElement[bool] | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Apply a named transition by compare-and-set. True when applied; False when the order is already in
        the target state (a repeated call) or the fence (lease) does not hold; raises otherwise."""
        transition = TRANSITIONS[name]
        now = self.store.now()
        stmt = (
            sa.update(orders)
            .where(orders.c.id == order_id, orders.c.state.in_(sorted(transition.sources)))
            .values(
                state=transition.target, updated_at=now, lease_owner=None, lease_expires_at=None, **values
            )
        )
        if fence is not None:
            stmt = stmt.where(fence)
        with self.store.transaction(conn=conn) as tx:
            if tx.execute(stmt).rowcount:
                log.info("order %s -> %s", order_id, transition.target)
                return True
            current = self._require(tx, order_id)
        if current == transition.target or (fence is not None and current in transition.sources):
            return False
        raise InvalidTransition(order_id, current, transition.target)

    @staticmethod
    def _require(conn: Connection, order_id: str) -> str:
        state = conn.execute(sa.select(orders.c.state).where(orders.c.id == order_id)).scalar_one_or_none()
        if state is None:
            raise OrderNotFound(order_id)
        return str(state)

    def find_active_duplicate(
        self,
        integration_id: str,
        package_id: str,
        candidate_email: str | None,
        application_remote_id: str | None,
        exclude_order_id: str | None,
        *,
        candidate_email_hash: str | None = None,
        conn: Connection | None = None,
    ) -> str | None:
        """The oldest other active order (received/inviting/invited) of the same integration and package for the
        same candidate: the same e-mail (case-insensitive), or for an order whose candidate data was erased the
        same salted e-mail hash (`candidate_email_hash`, `kombo_sync.candidate_hash`), or the same ATS
        application; None when there is none."""
        found = active_duplicate_query(
            integration_id,
            package_id,
            candidate_email,
            application_remote_id,
            exclude_order_id,
            candidate_email_hash=candidate_email_hash,
        )
        if found is None:
            return None
        query, params = found
        with self.store.transaction(readonly=True, conn=conn) as tx:
            return tx.execute(query, params).scalar_one_or_none()

    def get(self, order_id: str, *, conn: Connection | None = None) -> OrderRecord | None:
        """The order, or None."""
        with self.store.transaction(readonly=True, conn=conn) as tx:
            row = tx.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
        return None if row is None else from_row(OrderRecord, row)

    def counts_by_state(self, integration_id: str | None = None) -> dict[str, int]:
        """Number of orders in every state (zeros included), for one integration or all."""
        query = sa.select(orders.c.state, sa.func.count()).group_by(orders.c.state)
        if integration_id is not None:
            query = query.where(orders.c.integration_id == integration_id)
        counts = dict.fromkeys(ORDER_STATES, 0)
        with self.store.transaction(readonly=True) as conn:
            for state, count in conn.execute(query):
                counts[state] = count
        return counts
