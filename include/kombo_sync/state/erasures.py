"""`CandidateErasure`: the only writer of `erasures`, and the one place that erases candidate personal data.

Erasing an order clears its candidate e-mail, names and phone, reduces `order_json` to ids, keeps a salted hash
of the e-mail (`kombo_sync.candidate_hash`) for the duplicate rule, and sets `erased_at`; the result payloads
already written back or given up (sent, not writable, superseded, discarded) become a stub (their key, order id
and payload hash, stays for exactly-once), and the write-back's quarantined warehouse rows of the order lose their
row and any e-mail address quoted in their reason. Pending results are kept until sent: they belong to the
customer's ATS. Each erasure is one `erasures` row with counts and ids, never the data itself. Nothing here logs
candidate data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kombo_sync.candidate_hash import CandidateHasher, normalize_email, replace_emails
from kombo_sync.state._util import from_row, in_byte_order
from kombo_sync.state.orders import INVITING, RECEIVED, InvalidTransition, OrderRepository, scrub_order_json
from kombo_sync.state.schema import ERASURE_KINDS, erasures, orders, quarantine, result_outbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

RETENTION = "retention"
REQUEST = "request"
INTEGRATION_DELETED = "integration_deleted"

# Outbox rows whose payload is no longer needed: delivered, refused for good, replaced by a newer version, or
# discarded by the team (the console).
FINISHED_RESULT_STATES = ("sent", "not_writable", "superseded", "discarded")
ERASED_PAYLOAD: dict[str, Any] = {"erased": True}
COUNT_KEYS = (
    "orders_erased",
    "orders_hashed",
    "orders_cancelled",
    "result_payloads_erased",
    "quarantine_rows_erased",
)


@dataclass(frozen=True)
class ErasureRecord:
    id: int
    kind: str
    reason: str
    requested_by: str | None
    run_id: str | None
    integration_id: str | None
    order_ids: list[str]
    counts: dict[str, int]
    erased_at: datetime


class CandidateErasure:
    """Erase candidate data of chosen orders, in one transaction per call, and record it."""

    def __init__(self, store: StateStore, hasher: CandidateHasher | None) -> None:
        self.store = store
        self.hasher = hasher

    def erase_orders(
        self,
        order_ids: Sequence[str],
        *,
        kind: str,
        reason: str,
        integration_id: str | None = None,
        requested_by: str | None = None,
        run_id: str | None = None,
        now: datetime | None = None,
        cancel_open: bool = False,
    ) -> dict[str, int]:
        """Erase these orders (those already erased are skipped) and record one `erasures` row; returns counts.

        With `cancel_open`, orders still waiting for their invitation are cancelled first: with no e-mail left
        they could not be invited (an erasure on request)."""
        if kind not in ERASURE_KINDS:
            raise ValueError(f"kind must be one of {ERASURE_KINDS}, not {kind!r}")
        counts = dict.fromkeys(COUNT_KEYS, 0)
        wanted = sorted(set(order_ids))
        if not wanted:
            return counts
        now = now or self.store.now()
        if self.hasher is None:
            log.warning(
                "no erasure salt configured (docs/lifecycle.md): erased orders keep no e-mail hash, so the "
                "duplicate rule and later erasure requests cannot match them"
            )
        with self.store.transaction() as conn:
            rows = conn.execute(
                sa.select(orders.c.id, orders.c.state, orders.c.candidate_email, orders.c.candidate_email_hash,
                          orders.c.order_json)
                .where(orders.c.id.in_(wanted), orders.c.erased_at.is_(None))
                # Written in id order, the lock order of every multi-order writer (OrderRepository.record_orders).
                .order_by(in_byte_order(orders.c.id))
            ).all()  # fmt: skip
            erased_ids = [row.id for row in rows]
            if not erased_ids:
                return counts
            if cancel_open:
                repo = OrderRepository(self.store)
                for row in rows:
                    if row.state in (RECEIVED, INVITING):
                        try:
                            counts["orders_cancelled"] += repo.mark_cancelled(
                                row.id, reason="candidate data erased on request", conn=conn
                            )
                        except InvalidTransition:
                            continue
            updates = []
            for row in rows:
                email_hash = row.candidate_email_hash
                if self.hasher is not None and normalize_email(row.candidate_email):
                    email_hash = self.hasher.email_hash(row.candidate_email)
                counts["orders_hashed"] += email_hash is not None
                updates.append(
                    {"b_id": row.id, "b_hash": email_hash, "b_json": scrub_order_json(row.order_json)}
                )
            conn.execute(
                sa.update(orders)
                .where(orders.c.id == sa.bindparam("b_id"))
                .values(
                    candidate_email=None,
                    candidate_first_name=None,
                    candidate_last_name=None,
                    candidate_phone=None,
                    candidate_email_hash=sa.bindparam("b_hash"),
                    order_json=sa.bindparam("b_json", type_=orders.c.order_json.type),
                    erased_at=now,
                ),
                updates,
            )
            counts["orders_erased"] = len(erased_ids)
            counts["result_payloads_erased"] = conn.execute(
                sa.update(result_outbox)
                .where(result_outbox.c.order_id.in_(erased_ids), result_outbox.c.state.in_(FINISHED_RESULT_STATES))
                .values(payload_json=ERASED_PAYLOAD)
            ).rowcount  # fmt: skip
            counts["quarantine_rows_erased"] = self._erase_quarantined_rows(conn, erased_ids)
            conn.execute(
                sa.insert(erasures).values(
                    kind=kind,
                    reason=reason,
                    requested_by=requested_by,
                    run_id=run_id,
                    integration_id=integration_id,
                    order_ids=erased_ids,
                    counts=counts,
                    erased_at=now,
                )
            )
        log.info("erasure (%s): %s", kind, counts)
        return counts

    @staticmethod
    def _erase_quarantined_rows(conn: Connection, order_ids: list[str]) -> int:
        """The stored rows of the order's quarantined warehouse rows, and e-mail addresses quoted in reasons."""
        found = conn.execute(
            sa.select(quarantine.c.id, quarantine.c.reason, quarantine.c.row_json).where(
                quarantine.c.source_key.in_(order_ids)
            )
        ).all()
        erased = 0
        for row in found:
            reason = replace_emails(row.reason, "[erased]")
            if row.row_json is None and reason == row.reason:
                continue
            conn.execute(
                sa.update(quarantine).where(quarantine.c.id == row.id).values(row_json=None, reason=reason)
            )
            erased += 1
        return erased

    def orders_of_candidate(self, email: str) -> tuple[list[str], list[str]]:
        """(order ids holding this e-mail, order ids already erased whose hash matches it)."""
        normalized = normalize_email(email)
        with self.store.transaction(readonly=True) as conn:
            holding = list(
                conn.execute(
                    sa.select(orders.c.id)
                    .where(sa.func.lower(orders.c.candidate_email) == normalized)
                    .order_by(orders.c.id)
                ).scalars()
            )
            erased: list[str] = []
            email_hash = self.hasher.email_hash(email) if self.hasher is not None else None
            if email_hash is not None:
                erased = list(
                    conn.execute(
                        sa.select(orders.c.id)
                        .where(orders.c.candidate_email_hash == email_hash, orders.c.erased_at.is_not(None))
                        .order_by(orders.c.id)
                    ).scalars()
                )
        return holding, erased


class ErasureLog:
    """Reading the `erasures` record."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def recent(self, kind: str | None = None, limit: int = 50) -> list[ErasureRecord]:
        query = sa.select(erasures).order_by(erasures.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(erasures.c.kind == kind)
        with self.store.transaction(readonly=True) as conn:
            return [from_row(ErasureRecord, row) for row in conn.execute(query).mappings()]


def in_chunks(ids: Iterable[str], size: int) -> Iterable[list[str]]:
    """Ids in lists of at most `size` (one transaction and one `erasures` row each)."""
    chunk: list[str] = []
    for item in ids:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
