"""`ReminderLog`: the only writer of `reminders`, one row per (order, reminder number).

A reminder is claimed like an invitation: a row in state `sending` with a lease, taken by compare-and-set
(a new row, or a `sending` row whose lease ran out: a dead worker's claim or a retry whose time has come), sent
with the idempotency key ``<order id>:reminder:<number>``, and recorded `sent` only while the lease is still
ours. Only an invited order without any result version and with its candidate data is claimed. Nothing here
reads or logs candidate data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from kombo_sync.state._util import chunked, clip, expire_leases_of_earlier_tries
from kombo_sync.state.orders import INVITED
from kombo_sync.state.schema import INVITATION_CHANNELS, orders, reminders, result_outbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"  # the channel said no reminder is needed (the candidate finished, the invitation is gone)

_row = reminders.c


def reminder_key(order_id: str, number: int) -> str:
    """The idempotency key of reminder ``number`` of an order: the same for every attempt."""
    return f"{order_id}:reminder:{number}"


def remindable() -> sa.ColumnElement[bool]:
    """An order a reminder may go to: invited, not finished (no result version of any state in the outbox),
    candidate data not erased. Cancelled and expired orders are `cancelled`, so never remindable."""
    finished = sa.exists().where(result_outbox.c.order_id == orders.c.id)
    return sa.and_(orders.c.state == INVITED, ~finished, orders.c.erased_at.is_(None))


@dataclass(frozen=True)
class ClaimedReminder:
    order_id: str
    number: int
    channel: str
    idempotency_key: str
    attempts: int
    lease_owner: str
    lease_expires_at: datetime


class ReminderLog:
    """Reminders: what was recorded per order, claims with leases, and their endings."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def recorded_numbers(
        self, order_ids: Iterable[str], *, now: datetime | None = None
    ) -> dict[str, set[int]]:
        """order id -> the reminder numbers recorded for it: ended (sent, failed, skipped) or held under a live
        lease. A claim whose lease ran out (a dead worker's, or a retry whose time has come) is not counted: that
        reminder is due again and is taken over by the next claim."""
        now = now or self.store.now()
        claimable = sa.and_(
            _row.state == SENDING, sa.or_(_row.lease_expires_at.is_(None), _row.lease_expires_at <= now)
        )
        found: dict[str, set[int]] = {}
        with self.store.transaction(readonly=True) as conn:
            for batch in chunked(sorted(set(order_ids))):
                query = sa.select(_row.order_id, _row.number).where(_row.order_id.in_(batch), ~claimable)
                for order_id, number in conn.execute(query):
                    found.setdefault(str(order_id), set()).add(int(number))
        return found

    def claim(
        self,
        order_id: str,
        number: int,
        channel: str,
        due_at: datetime,
        owner: str,
        lease_seconds: int,
        *,
        now: datetime | None = None,
    ) -> ClaimedReminder | None:
        """Claim reminder ``number`` of a remindable order: a new row, or one whose lease ran out (attempts +1).
        None when another worker holds it, it ended (sent, failed, skipped), a later reminder is recorded, or the
        order is no longer remindable."""
        if channel not in INVITATION_CHANNELS:
            raise ValueError(f"channel must be one of {INVITATION_CHANNELS}, not {channel!r}")
        now = now or self.store.now()
        expires = now + timedelta(seconds=lease_seconds)
        key = reminder_key(order_id, number)
        later = sa.exists().where(_row.order_id == order_id, _row.number > number)
        with self.store.transaction() as conn:
            order_ok = conn.execute(
                sa.select(orders.c.id).where(orders.c.id == order_id, remindable())
            ).scalar_one_or_none()
            if order_ok is None or conn.execute(sa.select(later)).scalar():
                return None
            row = {
                "order_id": order_id,
                "number": number,
                "channel": channel,
                "state": SENDING,
                "idempotency_key": key,
                "attempts": 1,
                "lease_owner": owner,
                "lease_expires_at": expires,
                "due_at": due_at,
                "created_at": now,
                "updated_at": now,
            }
            attempts: int | None
            if self.store.upsert(conn, reminders, [row], ["order_id", "number"], []):
                attempts = 1
            else:
                attempts = conn.execute(
                    sa.update(reminders)
                    .where(
                        _row.order_id == order_id,
                        _row.number == number,
                        _row.state == SENDING,
                        sa.or_(_row.lease_expires_at.is_(None), _row.lease_expires_at <= now),
                    )
                    .values(
                        lease_owner=owner,
                        lease_expires_at=expires,
                        attempts=_row.attempts + 1,
                        updated_at=now,
                    )
                    .returning(_row.attempts)
                ).scalar_one_or_none()
                if attempts is None:
                    return None
            # An earlier reminder still waiting for a retry is moot now that a later one goes out.
            conn.execute(
                sa.update(reminders)
                .where(
                    _row.order_id == order_id,
                    _row.number < number,
                    _row.state == SENDING,
                    sa.or_(
                        _row.lease_expires_at.is_(None),
                        _row.lease_expires_at <= now,
                        _row.lease_owner.is_(None),
                    ),
                )
                .values(
                    state=SKIPPED,
                    last_error=f"reminder {number} was due before this one went out",
                    updated_at=now,
                )
            )
        log.info("%s claimed reminder %d of order %s (attempt %d)", owner, number, order_id, attempts)
        return ClaimedReminder(order_id, number, channel, key, int(attempts), owner, expires)

    def mark_sent(
        self, claim: ClaimedReminder, external_id: str | None, *, now: datetime | None = None
    ) -> bool:
        """sending -> sent, only while ``claim``'s lease is still ours (the fence); False otherwise."""
        return self._end(claim, SENT, {"external_id": external_id, "sent_at": now or self.store.now()}, now)

    def mark_ended(
        self, claim: ClaimedReminder, state: str, reason: str, *, now: datetime | None = None
    ) -> bool:
        """sending -> failed (no more attempts) or skipped (the channel says it is not needed), fenced."""
        if state not in (FAILED, SKIPPED):
            raise ValueError(f"a reminder ends {FAILED} or {SKIPPED}, not {state!r}")
        return self._end(claim, state, {"last_error": clip(reason)}, now)

    def release_with_error(
        self, claim: ClaimedReminder, error: str, retry_at: datetime, *, now: datetime | None = None
    ) -> bool:
        """Give the claim back with the error; it is claimable again at ``retry_at``."""
        now = now or self.store.now()
        with self.store.transaction() as conn:
            released = conn.execute(
                sa.update(reminders)
                .where(*self._fence(claim))
                .values(lease_owner=None, lease_expires_at=retry_at, last_error=clip(error), updated_at=now)
            ).rowcount
        return bool(released)

    def expire_leases_of_earlier_tries(self, family: str, owner: str, *, now: datetime | None = None) -> int:
        """Reminders an earlier, finished try of this task still holds become claimable now."""
        return expire_leases_of_earlier_tries(
            self.store, reminders, SENDING, family, owner, now or self.store.now()
        )

    def counts_by_state(self) -> dict[str, int]:
        query = sa.select(_row.state, sa.func.count()).group_by(_row.state)
        with self.store.transaction(readonly=True) as conn:
            return {str(state): int(count) for state, count in conn.execute(query)}

    @staticmethod
    def _fence(claim: ClaimedReminder) -> tuple[sa.ColumnElement[bool], ...]:
        return (
            _row.order_id == claim.order_id,
            _row.number == claim.number,
            _row.state == SENDING,
            _row.lease_owner == claim.lease_owner,
        )

    def _end(
        self, claim: ClaimedReminder, state: str, values: dict[str, object], now: datetime | None
    ) -> bool:
        now = now or self.store.now()
        with self.store.transaction() as conn:
            changed = conn.execute(
                sa.update(reminders)
                .where(*self._fence(claim))
                .values(state=state, lease_owner=None, lease_expires_at=None, updated_at=now, **values)
            ).rowcount
        if changed:
            log.info("reminder %d of order %s: %s", claim.number, claim.order_id, state)
        else:
            log.warning(
                "reminder %d of order %s: %s no longer holds the lease; not recorded %s",
                claim.number, claim.order_id, claim.lease_owner, state,
            )  # fmt: skip
        return bool(changed)
