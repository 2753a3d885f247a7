"""Exactly one invitation per order under concurrency, on SQLite and PostgreSQL: overlapping intake runs, the
webhook and the poll recording (and inviting) the same order at once, and a task that fails and is retried."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kombo_sync.intake import STEP_SENT, dispatch_invitations, invite_order_now, poll_orders
from kombo_sync.state.orders import OrderRepository
from tests.integration.intake_helpers import (
    email_inviter,
    intake_kombo_client,
    invitation_rows,
    inviters,
    make_settings,
    new_order,
    order_states,
    platform_creations,
    platform_inviter,
    register,
    run_cycle,
    window,
)


def run_together(count: int, job: Any) -> list[Any]:
    """Start `count` calls of `job(index)` at the same instant (a barrier) and return their results."""
    barrier = threading.Barrier(count)

    def start(index: int) -> Any:
        barrier.wait()
        return job(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(start, range(count)))


@pytest.mark.parametrize("channel", ["platform", "email"])
def test_overlapping_intake_runs_invite_each_order_once(
    channel, state_store, make_state_store, kombo_sandbox, platform_standin, smtp_server
):
    settings = make_settings(claim_batch_size=7, send_concurrency=4)
    integrations = register(state_store, kombo_sandbox, 4, channel=channel)
    ids = [i for integration in integrations for i in kombo_sandbox.admin.bulk_create_orders(integration, 15)]

    def intake_run(index: int) -> dict[str, Any]:
        store = make_state_store()  # its own engine and pool, like another worker process
        invite = inviters(
            settings, platform=platform_inviter(platform_standin), email=email_inviter(smtp_server, settings)
        )
        return run_cycle(store, intake_kombo_client(kombo_sandbox), invite, settings, owner=f"run-{index}")[1]

    summaries = run_together(4, intake_run)
    assert sum(summary["invited"] for summary in summaries) == len(ids) == 60
    assert sum(summary["lease_lost"] for summary in summaries) == 0
    assert set(order_states(state_store).values()) == {"invited"}
    assert set(invitation_rows(state_store)) == set(ids)
    if channel == "platform":
        # Not merely deduplicated by the platform: no order was even sent twice.
        assert platform_standin.admin.invitations()["requests_by_order"] == dict.fromkeys(ids, 1)
    else:
        assert sorted(smtp_server.count_by_message_id().values()) == [1] * len(ids)


def test_webhook_and_poll_recording_the_same_order_at_once(
    state_store, make_state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    orders = [new_order(kombo_sandbox, integration) for _ in range(20)]
    webhook_data = [{**order, "integration_id": integration} for order in orders]

    def actor(index: int) -> Any:
        store = make_state_store()
        if index == 0:  # the webhook: records each order, then the inline flow invites it
            results = []
            for data in webhook_data:
                OrderRepository(store).record_order(data, "webhook")
                results.append(invite_order_now(store, platform_inviter(platform_standin), data, settings))
            return results
        invite = inviters(settings, platform=platform_inviter(platform_standin))
        return run_cycle(store, intake_kombo_client(kombo_sandbox), invite, settings, owner="poll")

    inline_results, _ = run_together(2, actor)
    ids = [order["id"] for order in orders]
    repo = OrderRepository(state_store)
    records = [repo.get(i) for i in ids]
    assert all(record.state == "invited" for record in records)
    assert {record.first_seen_via for record in records} <= {"webhook", "poll"}
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)
    assert platform_standin.admin.invitations()["requests_by_order"] == dict.fromkeys(ids, 1)
    # The inline flow answers with the invitation that was actually stored, whoever sent it.
    assert [result.url for result in inline_results] == [record.invitation_url for record in records]


def test_invite_order_now_is_idempotent_and_refuses_closed_orders(
    state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    order = {**new_order(kombo_sandbox, integration), "integration_id": integration}
    inviter = platform_inviter(platform_standin)
    first = invite_order_now(state_store, inviter, order, settings)
    again = invite_order_now(state_store, inviter, order, settings)
    assert first == again and first.url.startswith(platform_standin.url)
    assert platform_standin.admin.invitations()["requests_by_order"] == {order["id"]: 1}

    cancelled = {**new_order(kombo_sandbox, integration), "integration_id": integration}
    OrderRepository(state_store).record_order(cancelled, "webhook")
    OrderRepository(state_store).mark_cancelled(cancelled["id"])
    from kombo_sync.invites.base import PermanentInvitationError

    with pytest.raises(PermanentInvitationError, match="cancelled"):
        invite_order_now(state_store, inviter, cancelled, settings)


class TaskCrash(RuntimeError):
    """The worker dies with an error in the middle of a batch (the task fails and Airflow retries it)."""


def test_a_failed_and_retried_task_sends_no_order_twice(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = make_settings(claim_batch_size=20, send_concurrency=1, lease_seconds=120)
    (integration,) = register(state_store, kombo_sandbox)
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 20)
    client = intake_kombo_client(kombo_sandbox)
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    poll_orders(state_store, client, settings, window())
    sent: list[str] = []

    def crash_on_the_fifth(step: str, order_id: str) -> None:
        if step == STEP_SENT:
            sent.append(order_id)
            if len(sent) == 5:
                raise TaskCrash("worker died after the platform accepted")

    with pytest.raises(TaskCrash):
        dispatch_invitations(state_store, client, invite, settings, owner="try-1", on_step=crash_on_the_fifth)
    states = order_states(state_store)
    assert list(states.values()).count("invited") >= 4

    # Airflow retries the task at once: the crashed try's leases still hold, so nothing of it is touched.
    retry = dispatch_invitations(state_store, client, invite, settings, owner="try-2")
    assert retry["claimed"] == 0
    # Once the leases expire, the next run picks the rest up, with the same idempotency keys.
    state_clock.advance(121)
    later = dispatch_invitations(state_store, client, invite, settings, owner="next-run")
    assert set(order_states(state_store).values()) == {"invited"}
    assert later["invited"] == 20 - list(states.values()).count("invited")
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)
    # The crashed order was sent again (same key) and the platform answered with the same invitation.
    assert platform_standin.admin.invitations()["requests_by_order"][sent[4]] == 2
