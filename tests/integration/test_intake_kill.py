"""SIGKILL at each step of a dispatch, then the job runs again: never a second platform invitation; for SMTP,
which cannot deduplicate, the duplicate window (server accepted, commit not yet done) is counted.

A child process (forked from the test, so it starts in milliseconds; it builds its own state store, Kombo
client and channels) runs the dispatch with a hook that kills the process (`os.kill(os.getpid(), SIGKILL)`)
when the first order reaches the chosen step: after its claim, after the channel accepted it, inside the
commit's transaction before COMMIT, after the commit. The parent then moves the clock past the lease and runs
the job again.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import traceback
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from kombo_sync.intake import (
    STEP_BEFORE_COMMIT,
    STEP_CLAIMED,
    STEP_COMMITTED,
    STEP_SENT,
    dispatch_invitations,
    poll_orders,
)
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.store import StateStore
from tests.integration.intake_helpers import (
    email_inviter,
    intake_kombo_client,
    inviters,
    make_settings,
    order_states,
    platform_creations,
    platform_inviter,
    register,
    window,
)

LEASE_SECONDS = 60
ORDERS = 3
# For SMTP, a kill in the window between "server accepted" and "commit done" re-sends that one message.
KILLED_TRY = "intake:scheduled__2026-01-05:dispatch:1:worker-a:4242"
EXPECTED_SMTP_DUPLICATES = {STEP_CLAIMED: 0, STEP_SENT: 1, STEP_BEFORE_COMMIT: 1, STEP_COMMITTED: 0}


def _child(config: dict[str, Any], ready_fd: int | None = None) -> None:
    """Dispatch with a hook that SIGKILLs this process when the first order reaches `config['step']`; with
    `ready_fd`, write one byte there when the first order is claimed (the parent then kills us itself)."""
    fixed_now = datetime.fromisoformat(config["now"])
    store = StateStore(config["state_url"], clock=lambda: fixed_now)
    settings = make_settings(send_concurrency=1, lease_seconds=LEASE_SECONDS)
    sandbox = SimpleNamespace(api_url=config["api_url"], api_key=config["api_key"])
    platform = SimpleNamespace(url=config["platform_url"], api_key=config["platform_key"])
    smtp = SimpleNamespace(host="127.0.0.1", port=config["smtp_port"])
    invite = inviters(settings, platform=platform_inviter(platform), email=email_inviter(smtp, settings))  # type: ignore[arg-type]
    target = config["step"]
    hook_thread: list[int] = []
    signalled: list[bool] = []

    def kill_on_commit(conn: Any) -> None:
        if threading.get_ident() in hook_thread:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_step(step: str, order_id: str) -> None:
        if ready_fd is not None and step == STEP_CLAIMED and not signalled:
            signalled.append(True)
            os.write(ready_fd, b"!")
        if step != target:
            return
        if step == STEP_BEFORE_COMMIT:
            # Die inside mark_invited's transaction: its UPDATE and INSERT ran, its COMMIT never happens.
            hook_thread.append(threading.get_ident())
            sa.event.listen(store.engine, "commit", kill_on_commit)
            return
        os.kill(os.getpid(), signal.SIGKILL)

    dispatch_invitations(
        store,
        intake_kombo_client(sandbox),
        invite,
        settings,
        owner=config.get("owner", "doomed-worker"),
        on_step=on_step,
    )


def run_child(config: dict[str, Any], *, kill_after: float | None = None, timeout: float = 60.0) -> int:
    """Fork a child running `_child(config)`; with `kill_after`, SIGKILL it that long after its first claim.
    Returns the signal that ended it (0 if it exited by itself)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_fd)
        code = 0
        try:
            _child(config, write_fd if kill_after is not None else None)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(write_fd)
    try:
        if kill_after is not None:
            ready, _, _ = select.select([read_fd], [], [], timeout)
            if ready and os.read(read_fd, 1):
                time.sleep(kill_after)
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the child's dispatch hung")
            time.sleep(0.01)
    finally:
        os.close(read_fd)


def child_config(
    store: StateStore, now: datetime, sandbox: Any, step: str, **channels: Any
) -> dict[str, Any]:
    return {
        "step": step,
        "now": now.isoformat(),
        "state_url": store.url,
        "api_url": sandbox.api_url,
        "api_key": sandbox.api_key,
        "platform_url": channels.get("platform_url", "http://127.0.0.1:9"),
        "platform_key": channels.get("platform_key"),
        "smtp_port": channels.get("smtp_port", 9),
    }


def killed_platform_dispatch(
    step: str,
    state_store: Any,
    state_clock: Any,
    kombo_sandbox: Any,
    platform_standin: Any,
    owner: str | None = None,
) -> tuple[Any, str, list[str], Any]:
    """ORDERS new orders of a platform integration, polled; then a dispatch try (as `owner`) SIGKILLed at `step`.
    Returns (settings, integration id, order ids, Kombo client)."""
    settings = make_settings(lease_seconds=LEASE_SECONDS)
    (integration,) = register(state_store, kombo_sandbox, channel="platform")
    ids = kombo_sandbox.admin.bulk_create_orders(integration, ORDERS)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    config = child_config(
        state_store, state_clock.current, kombo_sandbox, step, platform_url=platform_standin.url,
        platform_key=platform_standin.api_key,
    )  # fmt: skip
    if owner:
        config["owner"] = owner
    assert run_child(config) == signal.SIGKILL
    return settings, integration, ids, client


@pytest.mark.parametrize("step", [STEP_CLAIMED, STEP_SENT])
def test_the_retry_of_a_killed_task_sends_at_once(
    step, state_store, state_clock, kombo_sandbox, platform_standin, smtp_server
):
    """Airflow's retry of the killed try takes over its leases: no wait for them to run out, one invitation."""
    settings, integration, ids, client = killed_platform_dispatch(
        step, state_store, state_clock, kombo_sandbox, platform_standin, owner=KILLED_TRY
    )

    retry = "intake:scheduled__2026-01-05:dispatch:2:worker-b:77"
    repo = OrderRepository(state_store)
    assert repo.expire_leases_of_earlier_tries("intake:scheduled__2026-01-05:dispatch:", retry) == ORDERS
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    again = dispatch_invitations(state_store, client, invite, settings, owner=retry)
    assert again["invited"] == ORDERS
    assert all(repo.get(i).invitation_id for i in ids)
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("channel", ["platform", "email"])
@pytest.mark.parametrize("step", [STEP_CLAIMED, STEP_SENT, STEP_BEFORE_COMMIT, STEP_COMMITTED])
def test_sigkill_at_each_step_then_run_again(
    step, channel, state_store, state_clock, kombo_sandbox, platform_standin, smtp_server
):
    settings = make_settings(lease_seconds=LEASE_SECONDS)
    (integration,) = register(state_store, kombo_sandbox, channel=channel)
    ids = kombo_sandbox.admin.bulk_create_orders(integration, ORDERS)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    config = child_config(
        state_store,
        state_clock.current,
        kombo_sandbox,
        step,
        platform_url=platform_standin.url,
        platform_key=platform_standin.api_key,
        smtp_port=smtp_server.port,
    )
    assert run_child(config) == signal.SIGKILL

    committed = 1 if step == STEP_COMMITTED else 0
    assert list(order_states(state_store).values()).count("invited") == committed
    # The dead worker's leases hold until they expire; then the job, run again, finishes the work.
    invite = inviters(
        settings, platform=platform_inviter(platform_standin), email=email_inviter(smtp_server, settings)
    )
    assert dispatch_invitations(state_store, client, invite, settings, owner="next-run")["claimed"] == 0
    state_clock.advance(LEASE_SECONDS + 1)
    again = dispatch_invitations(state_store, client, invite, settings, owner="next-run")
    assert again["invited"] == ORDERS - committed
    assert set(order_states(state_store).values()) == {"invited"}
    repo = OrderRepository(state_store)
    assert all(repo.get(i).invitation_id for i in ids)

    if channel == "platform":
        assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)
        if step in (STEP_SENT, STEP_BEFORE_COMMIT):  # re-sent with the same key, deduplicated by the platform
            assert sorted(platform_standin.admin.invitations()["requests_by_order"].values()) == [1, 1, 2]
    else:
        counts = smtp_server.count_by_message_id()
        assert len(counts) == ORDERS
        duplicates = sum(count - 1 for count in counts.values())
        print(f"SMTP kill at {step}: {duplicates} duplicate message(s) out of {ORDERS} orders")
        assert duplicates == EXPECTED_SMTP_DUPLICATES[step], counts


def test_random_sigkill_during_a_large_smtp_dispatch_counts_the_window(
    state_store, state_clock, kombo_sandbox, smtp_server
):
    """SIGKILL from outside at arbitrary moments while e-mails go out: how often did a kill land in the window?"""
    settings = make_settings(lease_seconds=LEASE_SECONDS)
    (integration,) = register(state_store, kombo_sandbox, channel="email")
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 60)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    kills = 0
    for delay in (0.05, 0.08, 0.11, 0.14, 0.17, 0.2):
        if set(order_states(state_store).values()) == {"invited"}:
            break
        config = child_config(
            state_store, state_clock.current, kombo_sandbox, "none", smtp_port=smtp_server.port
        )
        kills += run_child(config, kill_after=delay) == signal.SIGKILL
        state_clock.advance(LEASE_SECONDS + 1)
    invite = inviters(settings, email=email_inviter(smtp_server, settings))
    dispatch_invitations(state_store, client, invite, settings, owner="final-run")
    assert set(order_states(state_store).values()) == {"invited"}
    counts = smtp_server.count_by_message_id()
    assert set(counts) == {f"<kombo-invitation.{i}@provider.example.com>" for i in ids}
    duplicates = sum(count - 1 for count in counts.values())
    # One message at a time is in flight (send_concurrency=1 in the child): at most one duplicate per kill.
    assert kills >= 1 and duplicates <= kills
    print(
        f"random SIGKILL: {kills} kill(s) while sending, {duplicates} duplicate e-mail(s) out of {len(ids)} orders"
    )


@pytest.mark.parametrize("kombo_status", ["COMPLETED", "CANCELLED"])
def test_an_order_whose_candidate_finished_before_the_retry_is_invited_not_cancelled(
    kombo_status, state_store, state_clock, kombo_sandbox, platform_standin
):
    """Killed after the platform accepted the invitation, before the commit; the candidate finishes and the
    write-back closes the order in Kombo with the result before the retry. The retry's re-check sees the order
    no longer OPEN, but it was invited: recorded invited (the platform answers with its invitation), not
    cancelled, and the result stays the one Kombo holds."""
    from kombo_sync.writeback.job import send_pending
    from tests.integration.writeback_helpers import expected_payload, result_row, wb_settings

    settings, integration, ids, client = killed_platform_dispatch(
        STEP_SENT, state_store, state_clock, kombo_sandbox, platform_standin, owner=KILLED_TRY
    )
    (finished,) = platform_creations(platform_standin)
    assert order_states(state_store)[finished] == "inviting"

    # The candidate finished; the write-back sends the result while the order is still `inviting`.
    payload = expected_payload(result_row(finished, status=kombo_status.lower()))
    ResultOutbox(state_store).enqueue(
        [OutboxEntry(finished, integration, f"hash-{kombo_status}", payload, None)]
    )
    send_pending(state_store, client, wb_settings())
    sent = ResultOutbox(state_store).get(finished, f"hash-{kombo_status}")
    assert sent is not None and sent.state == "sent"
    assert kombo_sandbox.admin.get_order(finished)["status"] == kombo_status

    retry = "intake:scheduled__2026-01-05:dispatch:2:worker-b:77"
    repo = OrderRepository(state_store)
    assert repo.expire_leases_of_earlier_tries("intake:scheduled__2026-01-05:dispatch:", retry) == ORDERS
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    again = dispatch_invitations(state_store, client, invite, settings, owner=retry)

    assert again["invited"] == ORDERS, again
    assert set(order_states(state_store).values()) == {"invited"}
    record = repo.get(finished)
    assert record is not None and record.invitation_id and record.kombo_status == kombo_status
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)
    assert kombo_sandbox.admin.get_order(finished)["status"] == kombo_status


def test_an_order_cancelled_in_the_ats_before_the_retry_has_its_invitation_revoked(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    """Killed after the platform accepted the invitation, before the commit; the recruiter cancels the order in
    the ATS before the retry. The retry closes it as cancelled and revokes the invitation the killed try sent
    (the reconcile only looks at invited orders, so nothing else would)."""
    settings, integration, ids, client = killed_platform_dispatch(
        STEP_SENT, state_store, state_clock, kombo_sandbox, platform_standin
    )
    (sent,) = platform_creations(platform_standin)
    kombo_sandbox.admin.cancel_order(sent)

    state_clock.advance(LEASE_SECONDS + 1)
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    again = dispatch_invitations(state_store, client, invite, settings, owner="next-run")

    assert again["invited"] == ORDERS - 1, again
    states = order_states(state_store)
    assert states.pop(sent) == "cancelled" and states == dict.fromkeys(set(ids) - {sent}, "invited")
    platform = platform_standin.admin.invitations()
    assert platform["revocations_by_order"] == {sent: 1}
    assert {i["order_id"]: i["status"] for i in platform["invitations"]}[sent] == "revoked"
