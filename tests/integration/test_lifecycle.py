"""Reminders and expiry against the Kombo sandbox, the platform stand-in and the local SMTP server over real
HTTP/SMTP, on SQLite and PostgreSQL, the store's clock moved forward hour by hour as the hourly DAG would see it:
a candidate who never starts gets exactly the configured reminders, then the order is CANCELLED in Kombo with the
expiry attribute and the invitation revoked; never a reminder to a cancelled, expired, finished or erased order; a
result that arrives after the expiry is not_writable, not sent."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from kombo_sync.console.queries import ConsoleQueries
from kombo_sync.housekeeping.retention import order_ended_before
from kombo_sync.lifecycle import expire_orders, send_reminders
from kombo_sync.lifecycle.job import EXPIRY_LABEL
from kombo_sync.reconcile import reconcile_orders
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.state.schema import orders
from kombo_sync.writeback.sender import ORDER_EXPIRED, ResultSender
from tests.integration.intake_helpers import intake_kombo_client, order_states
from tests.integration.lifecycle_helpers import (
    expiry_of,
    lifecycle_settings,
    platform_reminders,
    run_lifecycle,
    sent_reminders,
)
from tests.integration.reconcile_helpers import channels, enqueue_result, invited_orders
from tests.integration.writeback_helpers import fast_client, kombo_result


def _hourly(store, invite, settings, clock, *, days: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Run the lifecycle every hour for `days`; the summed counts."""
    totals: dict[str, int] = {}
    for _ in range(int(days * 24)):
        clock.advance(hours=1)
        expired, reminded = run_lifecycle(store, invite, settings)
        for key in ("expired", "due"):
            totals[f"expire_{key}"] = totals.get(f"expire_{key}", 0) + expired[key]
        for key in ("sent", "not_needed", "failed", "retry_later"):
            totals[key] = totals.get(key, 0) + reminded[key]
    return totals


def _send_results(store, sandbox, settings) -> dict:  # type: ignore[no-untyped-def]
    return ResultSender(store, fast_client(sandbox), settings.writeback).run()


def test_platform_never_started_candidate_gets_the_reminders_then_expires(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (silent, cancelled, finished, erased) = invited_orders(
        state_store, kombo_sandbox, settings, invite, 4
    )
    enqueue_result(state_store, integration, finished)  # finished: a result is in the outbox
    with state_store.transaction() as conn:  # erased on request (still invited): no e-mail, no reminder
        conn.execute(sa.update(orders).where(orders.c.id == erased).values(erased_at=state_clock()))

    totals = _hourly(state_store, invite, settings, state_clock, days=3)
    assert sent_reminders(state_store) == {silent: [1], cancelled: [1]}
    # The recruiter cancels one order in the ATS; the reconcile revokes its invitation: no more reminders.
    kombo_sandbox.admin.cancel_order(cancelled)
    assert (
        reconcile_orders(state_store, intake_kombo_client(kombo_sandbox), invite, settings)["cancelled"] == 1
    )

    totals = _hourly(state_store, invite, settings, state_clock, days=11.5)
    assert sent_reminders(state_store) == {silent: [1, 2], cancelled: [1]}
    assert platform_reminders(platform_standin) == {silent: [1, 2], cancelled: [1]}
    assert platform_standin.admin.invitations()["reminder_duplicates"] == []
    assert totals["expire_expired"] == 2  # 14 days after the invitation: the silent one and the erased one
    for order_id in (silent, erased):
        expiry = expiry_of(state_store, order_id)
        assert expiry["state"] == "cancelled" and expiry["expired_at"] is not None
        assert expiry["last_error"].startswith("expired: no result within 14 days")
    assert order_states(state_store)[finished] == "invited"  # its result is on its way: never expired
    revocations = platform_standin.admin.invitations()["revocations_by_order"]
    assert revocations == {silent: 1, erased: 1, cancelled: 1}

    # Further runs change nothing: no reminder to an expired order, no second expiry.
    quiet = _hourly(state_store, invite, settings, state_clock, days=2)
    assert (quiet["sent"], quiet["expire_expired"]) == (0, 0)
    assert platform_reminders(platform_standin) == {silent: [1, 2], cancelled: [1]}

    # The write-back sends the expiry exactly once: Kombo shows the order CANCELLED with the expiry attribute.
    summary = _send_results(state_store, kombo_sandbox, settings)
    assert summary["sent"] >= 2
    result = kombo_result(kombo_sandbox, silent)
    assert result is not None and result["status"] == "CANCELLED"
    (attribute,) = result["attributes"]
    assert attribute["type"] == "TEXT" and attribute["label"] == EXPIRY_LABEL
    assert "expired on" in attribute["value"] and "14 days after the invitation" in attribute["value"]
    assert kombo_sandbox.admin.get_order(silent)["status"] == "CANCELLED"

    # A result that arrives after the expiry is not_writable, never sent.
    late_hash, _ = enqueue_result(state_store, integration, silent, seed=7)
    _send_results(state_store, kombo_sandbox, settings)
    late = ResultOutbox(state_store).get(silent, late_hash)
    assert late is not None and late.state == "not_writable"
    assert kombo_result(kombo_sandbox, silent) == result
    # The expired order has ended for retention (at its expiry).
    with state_store.transaction(readonly=True) as conn:
        ended = conn.execute(sa.select(orders.c.id).where(order_ended_before(state_clock()))).scalars().all()
    assert {silent, erased} <= set(ended)
    # The console's order page shows the reminders and the expiry.
    history = ConsoleQueries(state_store).order_history(silent)
    assert [(r["number"], r["state"]) for r in history.reminders] == [(1, "sent"), (2, "sent")]
    assert history.orders[0]["expired_at"] is not None


def test_a_late_result_queued_before_the_expiry_was_sent_does_not_replace_it(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = lifecycle_settings(reminders=False)
    invite = channels(settings, platform=platform_standin)
    integration, (order_id,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    state_clock.advance(days=14)
    assert expire_orders(state_store, invite, settings)["expired"] == 1
    late_hash, _ = enqueue_result(state_store, integration, order_id, seed=3)  # before the write-back ran

    _send_results(state_store, kombo_sandbox, settings)
    _send_results(state_store, kombo_sandbox, settings)

    late = ResultOutbox(state_store).get(order_id, late_hash)
    assert late is not None and (late.state, late.last_error_code) == ("not_writable", ORDER_EXPIRED)
    expiry_hash = expiry_of(state_store, order_id)["expiry_payload_hash"]
    assert ResultOutbox(state_store).get(order_id, expiry_hash).state == "sent"  # type: ignore[union-attr]
    assert kombo_result(kombo_sandbox, order_id)["status"] == "CANCELLED"  # type: ignore[index]


def test_a_candidate_who_finished_just_before_the_expiry_is_not_expired(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    _, (order_id,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    platform_standin.admin.simulate(order_ids=[order_id], cancel_rate=0)  # finished on the platform
    state_clock.advance(days=14)
    summary = expire_orders(state_store, invite, settings)
    assert (summary["expired"], summary["finished_meanwhile"]) == (0, 1)
    assert order_states(state_store)[order_id] == "invited"


def test_an_order_cancelled_in_the_ats_before_its_expiry_is_cancelled_not_expired(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    """The recruiter cancelled one order in the ATS since the last reconcile: the expiry asks Kombo first, so that
    order gets its invitation revoked and is closed as cancelled with no result of ours (Kombo shows it as the
    recruiter left it); the other is expired as usual. A dry run counts and changes nothing."""
    settings = lifecycle_settings(reminders=False)
    invite = channels(settings, platform=platform_standin)
    integration, (cancelled, silent) = invited_orders(state_store, kombo_sandbox, settings, invite, 2)
    kombo_sandbox.admin.cancel_order(cancelled)
    state_clock.advance(days=14)
    client = intake_kombo_client(kombo_sandbox)

    dry = expire_orders(state_store, invite, settings, client=client, dry_run=True)
    assert (dry["due"], dry["left_open_in_ats"], dry["expired"], dry["cancelled"]) == (2, 1, 0, 0)
    assert order_states(state_store) == {cancelled: "invited", silent: "invited"}

    summary = expire_orders(state_store, invite, settings, client=client)
    counts = (summary["due"], summary["left_open_in_ats"], summary["cancelled"], summary["expired"])
    assert counts == (2, 1, 1, 1)
    assert order_states(state_store) == {cancelled: "cancelled", silent: "cancelled"}
    assert expiry_of(state_store, cancelled)["expired_at"] is None
    assert "cancelled in the ATS" in (expiry_of(state_store, cancelled)["last_error"] or "")
    assert expiry_of(state_store, silent)["expired_at"] is not None
    assert platform_standin.admin.invitations()["revocations_by_order"] == {cancelled: 1, silent: 1}

    _send_results(state_store, kombo_sandbox, settings)
    assert kombo_result(kombo_sandbox, cancelled) is None  # nothing of ours on the recruiter's cancellation
    assert kombo_result(kombo_sandbox, silent)["status"] == "CANCELLED"  # type: ignore[index]
    assert kombo_sandbox.admin.get_order(cancelled)["status"] == "CANCELLED"


def test_email_reminders_each_once_from_the_owned_templates_then_expiry(
    state_store, state_clock, kombo_sandbox, smtp_server
):
    settings = lifecycle_settings(reminder_days=[1, 3], expiry_days=4)
    invite = channels(settings, smtp=smtp_server)
    _, ids = invited_orders(state_store, kombo_sandbox, settings, invite, 2, channel="email")
    _hourly(state_store, invite, settings, state_clock, days=5)

    assert sent_reminders(state_store) == {order_id: [1, 2] for order_id in ids}
    counts = smtp_server.count_by_message_id()
    domain = "provider.example.com"
    for order_id in ids:
        assert counts[f"<kombo-invitation.{order_id}@{domain}>"] == 1
        assert counts[f"<kombo-reminder-1.{order_id}@{domain}>"] == 1
        assert counts[f"<kombo-reminder-2.{order_id}@{domain}>"] == 1
        assert expiry_of(state_store, order_id)["state"] == "cancelled"
    subjects = [entry["subject"] for entry in smtp_server.messages()]
    assert sum(subject.startswith("Reminder:") for subject in subjects) == 4


def test_reminders_switched_off_for_an_integration(state_store, state_clock, kombo_sandbox, platform_standin):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    quiet, _ = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    settings = lifecycle_settings(integrations={quiet: {"reminder_days": []}})
    state_clock.advance(days=6)
    assert send_reminders(state_store, invite, settings, owner="t")["due"] == 0
    assert platform_reminders(platform_standin) == {}


@pytest.mark.parametrize("dry_run", [True])
def test_a_dry_run_counts_and_changes_nothing(
    state_store, state_clock, kombo_sandbox, platform_standin, dry_run
):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    _, (reminded, expiring) = invited_orders(state_store, kombo_sandbox, settings, invite, 2)
    with state_store.transaction() as conn:
        conn.execute(
            sa.update(orders)
            .where(orders.c.id == expiring)
            .values(invited_at=state_clock() - timedelta(days=20))
        )
    state_clock.advance(days=2)
    assert expire_orders(state_store, invite, settings, dry_run=dry_run)["due"] == 1
    assert send_reminders(state_store, invite, settings, owner="t", dry_run=dry_run)["due"] == 1
    assert sent_reminders(state_store) == {}
    assert order_states(state_store)[expiring] == "invited"
    assert platform_standin.admin.invitations()["revoke_requests_by_order"] == {}


def test_a_deleted_integrations_orders_are_left_to_the_reconcile(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = lifecycle_settings()
    invite = channels(settings, platform=platform_standin)
    integration, (order_id,) = invited_orders(state_store, kombo_sandbox, settings, invite, 1)
    IntegrationRepository(state_store).mark_deleted(integration)
    state_clock.advance(days=15)
    expired, reminded = run_lifecycle(state_store, invite, settings)
    assert (expired["checked"], reminded["checked"]) == (0, 0)
    assert order_states(state_store)[order_id] == "invited"
    assert platform_reminders(platform_standin) == {}
