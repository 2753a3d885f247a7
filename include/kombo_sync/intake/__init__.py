"""Order intake (job 2): poll Kombo for open orders, record each once, invite each candidate exactly once.

- `poll_orders(store, client, settings, window, ...)`: record the open orders of every active integration.
- `dispatch_invitations(store, client, inviters, settings, ...)`: claim, re-check, send, commit.
- `invite_order_now(store, inviter, order, settings)`: the same for one order, synchronously (inline webhook).
- `poll_window(...)`: the run's `created_after`, from its data interval with an overlap, or a look-back.
"""

from __future__ import annotations

from kombo_sync.intake.dispatch import (
    STEP_BEFORE_COMMIT,
    STEP_CLAIMED,
    STEP_COMMITTED,
    STEP_SENT,
    STEPS,
    dispatch_invitations,
    email_problem,
    invite_order_now,
    make_owner,
)
from kombo_sync.intake.poll import poll_orders
from kombo_sync.intake.window import PollWindow, poll_window

__all__ = [
    "STEPS",
    "STEP_BEFORE_COMMIT",
    "STEP_CLAIMED",
    "STEP_COMMITTED",
    "STEP_SENT",
    "PollWindow",
    "dispatch_invitations",
    "email_problem",
    "invite_order_now",
    "make_owner",
    "poll_orders",
    "poll_window",
]
