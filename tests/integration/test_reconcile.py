"""The reconcile job against the Kombo sandbox and the platform stand-in over real HTTP, on SQLite and
PostgreSQL: orders cancelled in the ATS have their invitation revoked once and are cancelled; what Kombo holds
from us is recorded sent; a cancelled order's later results are never sent."""

from __future__ import annotations

import logging

from kombo_sync.reconcile import reconcile_orders
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.writeback.job import enqueue_results, run_writeback, send_pending
from tests.integration.intake_helpers import intake_kombo_client, order_states, platform_creations
from tests.integration.reconcile_helpers import channels, enqueue_result, invited_orders, reconcile_settings
from tests.integration.writeback_helpers import (
    applied_bodies,
    put_count,
    result_row,
    wb_settings,
    window,
    write_rows,
)


def revocations(platform) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return dict(platform.admin.invitations()["revocations_by_order"])


def test_orders_cancelled_or_rejected_in_the_ats_are_revoked_once_and_cancelled(
    state_store, kombo_sandbox, platform_standin, caplog
):
    settings = reconcile_settings(progress_seconds=0.001)
    invite = channels(settings, platform=platform_standin)
    integration, ids = invited_orders(state_store, kombo_sandbox, settings, invite, 5)
    cancelled, still_open = ids[:2], ids[2:]
    for order_id in cancelled:
        kombo_sandbox.admin.cancel_order(order_id)
    client = intake_kombo_client(kombo_sandbox)

    with caplog.at_level(logging.INFO):
        summary = reconcile_orders(state_store, client, invite, settings)

    assert summary["pages"] == 3  # 5 orders, 2 per page
    assert (summary["checked"], summary["still_open"], summary["cancel"], summary["cancelled"]) == (
        5,
        3,
        2,
        2,
    )
    assert summary["revocations"]["revoked"] == 2
    assert summary["revoke_failed"] == 0 and summary["integrations_failed"] == {}
    states = order_states(state_store)
    assert {order_id: states[order_id] for order_id in ids} == {
        **dict.fromkeys(cancelled, "cancelled"),
        **dict.fromkeys(still_open, "invited"),
    }
    assert revocations(platform_standin) == dict.fromkeys(cancelled, 1)
    reason = OrderRepository(state_store).get(cancelled[0]).last_error  # type: ignore[union-attr]
    assert reason is not None and "cancelled in the ATS" in reason and "revoked" in reason
    assert "reconcile progress: page 3, 5 order(s) checked so far" in caplog.text
    # Progress and outcome lines name ids and counts, never the candidate.
    order = kombo_sandbox.admin.get_order(cancelled[0])
    for secret in (
        order["candidate"]["email"],
        order["candidate"]["first_name"],
        order["candidate"]["last_name"],
    ):
        assert secret and secret not in caplog.text

    # The next run checks only what is still invited, and revokes nothing again.
    again = reconcile_orders(state_store, client, invite, settings)
    assert (again["checked"], again["still_open"], again["cancelled"]) == (3, 3, 0)
    assert revocations(platform_standin) == dict.fromkeys(cancelled, 1)
    assert sum(platform_creations(platform_standin).values()) == 5  # nobody invited twice


def test_a_cancelled_order_s_later_result_is_not_writable_and_never_sent(
    state_store, kombo_sandbox, platform_standin
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (cancelled, open_order) = invited_orders(state_store, kombo_sandbox, settings, invite, 2)
    kombo_sandbox.admin.cancel_order(cancelled)
    client = intake_kombo_client(kombo_sandbox)
    reconcile_orders(state_store, client, invite, settings)
    kombo_sandbox.admin.clear_requests()

    # The candidate had already started: the platform still reports a result later.
    late_hash, _ = enqueue_result(state_store, integration, cancelled)
    enqueue_result(state_store, integration, open_order)
    sent = send_pending(state_store, client, wb_settings())

    assert (sent["sent"], sent["not_writable"]) == (1, 1)
    late = ResultOutbox(state_store).get(cancelled, late_hash)
    assert late is not None and (late.state, late.last_error_code) == ("not_writable", "ORDER_CANCELLED")
    assert put_count(kombo_sandbox) == 1  # only the open order's result went to Kombo
    assert applied_bodies(kombo_sandbox, cancelled) == []


def test_a_result_kombo_holds_after_a_lost_reply_is_recorded_sent_not_sent_again(
    state_store, kombo_sandbox, platform_standin
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (order_id,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    payload_hash, payload = enqueue_result(state_store, integration, order_id)
    outbox = ResultOutbox(state_store)
    # The PUT landed but its reply was lost: the outbox holds the version as "maybe applied", due again later.
    (item,) = outbox.claim_batch("lost-reply", 10, 60)
    client = intake_kombo_client(kombo_sandbox)
    client.put_result(integration, order_id, payload)
    far = state_store.now().replace(year=state_store.now().year + 1)
    assert outbox.mark_retry(order_id, payload_hash, None, "timeout", None, far, maybe_applied=True)
    assert kombo_sandbox.admin.get_order(order_id)["status"] == "COMPLETED"

    summary = reconcile_orders(state_store, client, invite, settings)

    assert (summary["result_landed"], summary["cancel"]) == (1, 0)
    row = outbox.get(order_id, payload_hash)
    assert row is not None and row.state == "sent"
    assert order_states(state_store)[order_id] == "invited"  # written back, not cancelled
    assert revocations(platform_standin) == {}
    kombo_sandbox.admin.clear_requests()
    assert send_pending(state_store, client, wb_settings())["claimed"] == 0
    assert put_count(kombo_sandbox) == 0
    # Written back: later runs no longer ask Kombo about it.
    assert reconcile_orders(state_store, client, invite, settings)["checked"] == 0


def test_email_orders_are_only_marked_cancelled(state_store, kombo_sandbox, smtp_server):
    settings = reconcile_settings()
    invite = channels(settings, smtp=smtp_server)
    _, (cancelled, still_open) = invited_orders(
        state_store, kombo_sandbox, settings, invite, 2, channel="email"
    )
    kombo_sandbox.admin.cancel_order(cancelled)

    summary = reconcile_orders(state_store, intake_kombo_client(kombo_sandbox), invite, settings)

    assert summary["cancelled"] == 1 and summary["revocations"]["not_revocable"] == 1
    assert order_states(state_store) == {cancelled: "cancelled", still_open: "invited"}
    reason = OrderRepository(state_store).get(cancelled).last_error  # type: ignore[union-attr]
    assert reason is not None and "not_revocable" in reason


def test_one_integration_on_request_and_a_deleted_integration_without_asking_kombo(
    state_store, kombo_sandbox, platform_standin
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    first, (first_order,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    second, (second_order,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    kombo_sandbox.admin.cancel_order(first_order)
    kombo_sandbox.admin.cancel_order(second_order)
    client = intake_kombo_client(kombo_sandbox)

    only_second = reconcile_orders(state_store, client, invite, settings, integration_ids=[second])
    assert (only_second["checked"], only_second["cancelled"]) == (1, 1)
    assert order_states(state_store)[first_order] == "invited"

    preview = reconcile_orders(state_store, client, invite, settings, dry_run=True)
    assert (preview["checked"], preview["cancel"], preview["cancelled"]) == (1, 1, 0)
    assert order_states(state_store)[first_order] == "invited"
    assert revocations(platform_standin) == {second_order: 1}

    IntegrationRepository(state_store).mark_deleted(first)
    kombo_sandbox.admin.clear_requests()
    summary = reconcile_orders(state_store, client, invite, settings)
    assert summary["cancelled"] == 1
    assert "deleted" in (OrderRepository(state_store).get(first_order).last_error or "")  # type: ignore[union-attr]
    assert kombo_sandbox.admin.requests(limit=100) == []  # nothing asked of Kombo for a deleted integration
    assert revocations(platform_standin) == {first_order: 1, second_order: 1}


def test_unreadable_integrations_and_unreachable_platform_leave_orders_for_the_next_run(
    state_store, kombo_sandbox, platform_standin
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (order_id,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    kombo_sandbox.admin.cancel_order(order_id)
    platform_standin.admin.set_knobs(failure_rate=1.0)

    summary = reconcile_orders(state_store, intake_kombo_client(kombo_sandbox), invite, settings)
    assert (summary["cancel"], summary["revoke_failed"], summary["cancelled"]) == (1, 1, 0)
    assert order_states(state_store)[order_id] == "invited"

    platform_standin.admin.set_knobs(failure_rate=0.0)
    kombo_sandbox.admin.set_integration_state(integration, status="INACTIVE")
    blocked = reconcile_orders(state_store, intake_kombo_client(kombo_sandbox), invite, settings)
    assert list(blocked["integrations_failed"]) == [integration] and blocked["not_checked"] == 1

    kombo_sandbox.admin.set_integration_state(integration, status="ACTIVE")
    done = reconcile_orders(state_store, intake_kombo_client(kombo_sandbox), invite, settings)
    assert done["cancelled"] == 1 and order_states(state_store)[order_id] == "cancelled"
    assert revocations(platform_standin) == {order_id: 1}


def test_the_write_back_reads_a_cancelled_order_s_result_as_not_writable_and_sends_nothing(
    state_store, kombo_sandbox, platform_standin, warehouse_engine
):
    settings = reconcile_settings()
    invite = channels(settings, platform=platform_standin)
    _, (cancelled, open_order) = invited_orders(state_store, kombo_sandbox, settings, invite, 2)
    kombo_sandbox.admin.cancel_order(cancelled)
    client = intake_kombo_client(kombo_sandbox)
    assert reconcile_orders(state_store, client, invite, settings)["cancelled"] == 1
    write_rows(warehouse_engine, [result_row(cancelled), result_row(open_order)])
    kombo_sandbox.admin.clear_requests()

    preview = enqueue_results(state_store, warehouse_engine, wb_settings(), dry_run=True, **window())
    actions = {item["order_id"]: item["action"] for item in preview["previews"]}
    assert actions == {cancelled: "not_writable", open_order: "send"}

    summary = run_writeback(state_store, warehouse_engine, client, wb_settings(), **window())
    assert (summary["read"]["not_writable"], summary["send"]["not_writable"], summary["send"]["sent"]) == (
        1,
        1,
        1,
    )
    assert put_count(kombo_sandbox) == 1
    assert applied_bodies(kombo_sandbox, cancelled) == []
