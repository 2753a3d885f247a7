"""What to do with one invited order, given what Kombo shows and what the result outbox holds: one pure rule.

Kombo lists an order's status only, not its result, so "Kombo holds our result" is decided the way the
write-back's read-back decides it (``writeback.sender``): among the versions of the order's result that may have
reached Kombo (an attempt without an answer, an abandoned send, a delivery), exactly one with the status Kombo
shows. None: the order left OPEN without us (cancelled or rejected in the ATS, completed by someone else), so
its invitation is revoked and the order cancelled. Several: which one landed cannot be told; left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kombo_sync.kombo.models import (
    ORDER_STATUS_CANCELLED,
    ORDER_STATUS_COMPLETED,
    ORDER_STATUS_OPEN,
    ORDER_STATUS_REJECTED,
)

# Outcomes of the rule; the job counts each under this name.
STILL_OPEN = "still_open"  # Kombo shows it OPEN: nothing to do
CANCEL = "cancel"  # left OPEN without us: revoke the invitation, mark the order cancelled
RESULT_LANDED = "result_landed"  # Kombo holds one of our versions whose reply was lost: record it sent
AMBIGUOUS = "ambiguous"  # several versions may be there: left for the team (the write-back reports it too)
IN_FLIGHT = "in_flight"  # the write-back is sending a version right now: its read-back decides
ALREADY_WRITTEN = "already_written"  # a final result was delivered meanwhile
NOT_LISTED = "not_listed"  # Kombo does not list the order: left alone, counted and logged
UNKNOWN_STATUS = "unknown_status"  # a status value this pipeline does not know yet: left alone

OUTCOMES = (
    STILL_OPEN,
    CANCEL,
    RESULT_LANDED,
    AMBIGUOUS,
    IN_FLIGHT,
    ALREADY_WRITTEN,
    NOT_LISTED,
    UNKNOWN_STATUS,
)

# Why an order is cancelled (stored as the order's reason and sent to the platform; no candidate data).
REASON_CANCELLED = "cancelled in the ATS (Kombo shows CANCELLED)"
REASON_REJECTED = "rejected in the ATS (Kombo shows REJECTED)"
REASON_COMPLETED_ELSEWHERE = "closed in the ATS without a result from this pipeline (Kombo shows COMPLETED)"
REASON_INTEGRATION_DELETED = "the integration was deleted"
_REASONS = {
    ORDER_STATUS_CANCELLED: REASON_CANCELLED,
    ORDER_STATUS_REJECTED: REASON_REJECTED,
    ORDER_STATUS_COMPLETED: REASON_COMPLETED_ELSEWHERE,
}

_SENT = "sent"
_SENDING = "sending"
_FINAL = (ORDER_STATUS_COMPLETED, ORDER_STATUS_CANCELLED)


@dataclass(frozen=True)
class ResultVersion:
    """One version of an order's result in the outbox, as the rule needs it (no payload)."""

    payload_hash: str
    state: str
    status: str | None  # the payload's status (COMPLETED / CANCELLED)
    maybe_applied: bool
    lease_expires_at: datetime | None = None

    @property
    def may_be_at_kombo(self) -> bool:
        return self.maybe_applied or self.state in (_SENT, _SENDING)

    def in_flight(self, now: datetime) -> bool:
        return self.state == _SENDING and self.lease_expires_at is not None and self.lease_expires_at > now


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str | None = None  # CANCEL: why (for the order and the platform)
    landed_hash: str | None = None  # RESULT_LANDED: the version Kombo holds


def decide(
    kombo_status: str | None,
    versions: Sequence[ResultVersion],
    *,
    now: datetime,
    integration_deleted: bool = False,
) -> Decision:
    """The one rule for an invited order. ``kombo_status`` None: Kombo does not list it (or was not asked,
    when the integration is deleted); ``now`` decides whether a send's lease is still live."""
    if any(v.state == _SENT and v.status in _FINAL for v in versions):
        return Decision(ALREADY_WRITTEN)
    if any(v.in_flight(now) for v in versions):
        return Decision(IN_FLIGHT)
    if integration_deleted:
        return Decision(CANCEL, REASON_INTEGRATION_DELETED)
    if kombo_status is None:
        return Decision(NOT_LISTED)
    if kombo_status == ORDER_STATUS_OPEN:
        return Decision(STILL_OPEN)
    if kombo_status not in _REASONS:
        return Decision(UNKNOWN_STATUS)
    landed = [v.payload_hash for v in versions if v.may_be_at_kombo and v.status == kombo_status]
    if len(landed) == 1:
        return Decision(RESULT_LANDED, landed_hash=landed[0])
    if landed:
        return Decision(AMBIGUOUS)
    return Decision(CANCEL, _REASONS[kombo_status])
