"""SIGKILL in the middle of the lifecycle's senders, then the job runs again (the store's clock past the lease):
every reminder reaches the platform exactly once; for SMTP, which cannot deduplicate, the duplicate window
(server accepted, commit not yet done) is counted, with the same Message-ID; every expiry revokes once and queues
one CANCELLED result.

A forked child (its own state store on the same database and clock, its own channels) runs the job with a hook
that kills the process when the first order reaches the chosen step; the parent then runs the job again.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from kombo_sync.lifecycle import (
    STEP_CLAIMED,
    STEP_COMMITTED,
    STEP_RECORDED,
    STEP_REVOKED,
    STEP_SENT,
    expire_orders,
    send_reminders,
)
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.state.store import StateStore
from tests.integration.intake_helpers import email_inviter, inviters, order_states, platform_inviter
from tests.integration.lifecycle_helpers import lifecycle_settings, platform_reminders, sent_reminders
from tests.integration.reconcile_helpers import channels, invited_orders

ORDERS = 3
LEASE_SECONDS = 60
EXPECTED_SMTP_DUPLICATES = {STEP_CLAIMED: 0, STEP_SENT: 1, STEP_COMMITTED: 0}


def _child(config: dict[str, Any]) -> None:
    fixed_now = datetime.fromisoformat(config["now"])
    store = StateStore(config["state_url"], clock=lambda: fixed_now)
    settings = lifecycle_settings(send_concurrency=1, lease_seconds=LEASE_SECONDS)
    if config["channel"] == "platform":
        platform = SimpleNamespace(url=config["platform_url"], api_key=config["platform_key"])
        invite = inviters(settings, platform=platform_inviter(platform))
    else:
        smtp = SimpleNamespace(host="127.0.0.1", port=config["smtp_port"])
        invite = inviters(settings, email=email_inviter(smtp, settings))  # type: ignore[arg-type]

    def on_step(step: str, order_id: str) -> None:
        if step == config["step"]:
            os.kill(os.getpid(), signal.SIGKILL)

    if config["job"] == "remind":
        send_reminders(store, invite, settings, owner="lifecycle:child", on_step=on_step)
    else:
        expire_orders(store, invite, settings, on_step=on_step)


def run_child(config: dict[str, Any], timeout: float = 60.0) -> int:
    """Fork a child running `_child(config)`; returns the signal that ended it (0 if it exited by itself)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            _child(config)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the child's lifecycle job hung")
        time.sleep(0.01)


def _config(state_store, state_clock, platform_standin, smtp_server, **values: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {
        "state_url": state_store.url,
        "now": state_clock().isoformat(),
        "platform_url": platform_standin.url,
        "platform_key": platform_standin.api_key,
        "smtp_port": smtp_server.port,
        **values,
    }


@pytest.mark.parametrize("step", [STEP_CLAIMED, STEP_SENT, STEP_COMMITTED])
def test_sigkill_while_reminding_on_the_platform_never_reminds_twice(
    step, state_store, state_clock, kombo_sandbox, platform_standin, smtp_server
):
    settings = lifecycle_settings(send_concurrency=1, lease_seconds=LEASE_SECONDS)
    invite = channels(settings, platform=platform_standin)
    _, ids = invited_orders(state_store, kombo_sandbox, settings, invite, ORDERS)
    state_clock.advance(days=2)
    config = _config(state_store, state_clock, platform_standin, smtp_server, job="remind", channel="platform",
                     step=step)  # fmt: skip
    assert run_child(config) == signal.SIGKILL
    first = ids[0]  # orders are reminded in id order: the first one died at `step`
    expected_after_kill = {} if step == STEP_CLAIMED else {first: [1]}
    assert platform_reminders(platform_standin) == expected_after_kill

    state_clock.advance(seconds=LEASE_SECONDS + 1)  # the dead worker's lease runs out
    summary = send_reminders(state_store, invite, settings, owner="lifecycle:parent")

    assert summary["sent"] == (ORDERS - 1 if step == STEP_COMMITTED else ORDERS)
    assert sent_reminders(state_store) == {order_id: [1] for order_id in ids}
    assert platform_reminders(platform_standin) == {order_id: [1] for order_id in ids}  # exactly once each
    snapshot = platform_standin.admin.invitations()
    assert snapshot["reminder_duplicates"] == []
    expected_calls = (
        2 if step == STEP_SENT else 1
    )  # re-sent with the same key: the platform answered the same
    assert snapshot["remind_requests_by_order"][first] == expected_calls


@pytest.mark.parametrize("step", [STEP_CLAIMED, STEP_SENT, STEP_COMMITTED])
def test_sigkill_while_reminding_by_email_duplicates_only_inside_the_window(
    step, state_store, state_clock, kombo_sandbox, platform_standin, smtp_server
):
    settings = lifecycle_settings(send_concurrency=1, lease_seconds=LEASE_SECONDS)
    invite = channels(settings, smtp=smtp_server)
    _, ids = invited_orders(state_store, kombo_sandbox, settings, invite, ORDERS, channel="email")
    state_clock.advance(days=2)
    config = _config(state_store, state_clock, platform_standin, smtp_server, job="remind", channel="email",
                     step=step)  # fmt: skip
    assert run_child(config) == signal.SIGKILL

    state_clock.advance(seconds=LEASE_SECONDS + 1)
    send_reminders(state_store, invite, settings, owner="lifecycle:parent")

    assert sent_reminders(state_store) == {order_id: [1] for order_id in ids}
    counts = smtp_server.count_by_message_id()
    reminder_ids = [f"<kombo-reminder-1.{order_id}@provider.example.com>" for order_id in ids]
    assert all(counts.get(message_id, 0) >= 1 for message_id in reminder_ids)  # every candidate reminded
    duplicates = sum(counts[message_id] - 1 for message_id in reminder_ids)
    assert duplicates == EXPECTED_SMTP_DUPLICATES[step]


@pytest.mark.parametrize("step", [STEP_REVOKED, STEP_RECORDED])
def test_sigkill_while_expiring_revokes_once_and_queues_one_result(
    step, state_store, state_clock, kombo_sandbox, platform_standin, smtp_server
):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    _, ids = invited_orders(state_store, kombo_sandbox, settings, invite, ORDERS)
    state_clock.advance(days=14)
    config = _config(state_store, state_clock, platform_standin, smtp_server, job="expire", channel="platform",
                     step=step)  # fmt: skip
    assert run_child(config) == signal.SIGKILL
    first = ids[0]
    assert order_states(state_store)[first] == ("invited" if step == STEP_REVOKED else "cancelled")

    summary = expire_orders(state_store, invite, settings)

    assert summary["expired"] == (ORDERS if step == STEP_REVOKED else ORDERS - 1)
    assert {order_states(state_store)[order_id] for order_id in ids} == {"cancelled"}
    snapshot = platform_standin.admin.invitations()
    assert snapshot["revocations_by_order"] == dict.fromkeys(ids, 1)  # revoked exactly once each
    versions = ResultOutbox(state_store).versions(ids)
    assert {order_id: len(versions[order_id]) for order_id in ids} == dict.fromkeys(ids, 1)
    assert {v[0].status for v in versions.values()} == {"CANCELLED"}
