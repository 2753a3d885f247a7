"""SIGKILL in the middle of a reconcile, then the job runs again: every invitation is revoked exactly once and
every cancelled order ends `cancelled`.

A forked child (its own state store, Kombo client and platform channel) runs the job with a hook that kills the
process when the first order reaches the chosen step: right after the platform revoked the invitation (the
state store has not recorded it: the order is still `invited`), or right after the order was recorded
`cancelled`. The parent then runs the job again.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from types import SimpleNamespace
from typing import Any

import pytest

from kombo_sync.reconcile import STEP_RECORDED, STEP_REVOKED, reconcile_orders
from kombo_sync.state.store import StateStore
from tests.integration.intake_helpers import intake_kombo_client, order_states
from tests.integration.reconcile_helpers import channels, invited_orders, reconcile_settings

CANCELLED_IN_ATS = 3


def _child(config: dict[str, Any]) -> None:
    store = StateStore(config["state_url"])
    settings = reconcile_settings()
    sandbox = SimpleNamespace(api_url=config["api_url"], api_key=config["api_key"])
    platform = SimpleNamespace(url=config["platform_url"], api_key=config["platform_key"])

    def on_step(step: str, order_id: str) -> None:
        if step == config["step"]:
            os.kill(os.getpid(), signal.SIGKILL)

    reconcile_orders(
        store, intake_kombo_client(sandbox), channels(settings, platform=platform), settings, on_step=on_step
    )


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
            raise AssertionError("the child's reconcile hung")
        time.sleep(0.01)


@pytest.mark.parametrize("step", [STEP_REVOKED, STEP_RECORDED])
def test_sigkill_between_revoking_and_recording_converges_on_the_next_run(
    step, state_store, kombo_sandbox, platform_standin
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    _, ids = invited_orders(state_store, kombo_sandbox, settings, invite, CANCELLED_IN_ATS + 1)
    cancelled, still_open = ids[:CANCELLED_IN_ATS], ids[CANCELLED_IN_ATS]
    for order_id in cancelled:
        kombo_sandbox.admin.cancel_order(order_id)
    config = {
        "step": step,
        "state_url": state_store.url,
        "api_url": kombo_sandbox.api_url,
        "api_key": kombo_sandbox.api_key,
        "platform_url": platform_standin.url,
        "platform_key": platform_standin.api_key,
    }
    assert run_child(config) == signal.SIGKILL

    first = cancelled[0]  # orders are checked in id order: the first one died at `step`
    after_kill = platform_standin.admin.invitations()
    assert after_kill["revocations_by_order"] == {first: 1}
    expected_state = "invited" if step == STEP_REVOKED else "cancelled"
    assert order_states(state_store)[first] == expected_state

    summary = reconcile_orders(state_store, intake_kombo_client(kombo_sandbox), invite, settings)

    remaining = CANCELLED_IN_ATS if step == STEP_REVOKED else CANCELLED_IN_ATS - 1
    assert summary["cancelled"] == remaining
    if step == STEP_REVOKED:  # revoked again: the platform's answer says it already was
        assert summary["revocations"]["already_revoked"] == 1
    states = order_states(state_store)
    assert {order_id: states[order_id] for order_id in ids} == {
        **dict.fromkeys(cancelled, "cancelled"),
        still_open: "invited",
    }
    final = platform_standin.admin.invitations()
    assert final["revocations_by_order"] == dict.fromkeys(cancelled, 1)  # exactly once each
    assert final["revoke_requests_by_order"][first] == (2 if step == STEP_REVOKED else 1)
