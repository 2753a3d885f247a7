"""An intake cycle against the sandbox over HTTP, on SQLite and PostgreSQL: record, invite (platform and e-mail),
duplicates, orders closed before sending, integration isolation, dry run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kombo_sync.intake import dispatch_invitations, poll_orders
from kombo_sync.intake.window import KIND_INTERVAL, PollWindow
from kombo_sync.state.integrations import IntegrationRepository
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


def test_open_orders_are_recorded_once_and_invited_through_the_platform(
    state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 12, package_id="py-basics")
    client = intake_kombo_client(kombo_sandbox)
    invite = inviters(settings, platform=platform_inviter(platform_standin))

    polled, dispatched = run_cycle(state_store, client, invite, settings)
    assert (polled["orders_seen"], polled["orders_new"], polled["integrations_failed"]) == (12, 12, {})
    assert dispatched["invited"] == 12 and dispatched["claimed"] == 12
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)

    rows = invitation_rows(state_store)
    assert set(rows) == set(ids)
    repo = OrderRepository(state_store)
    record = repo.get(ids[0])
    assert record is not None and record.state == "invited" and record.first_seen_via == "poll"
    assert record.invitation_id == rows[ids[0]]["external_id"] and record.invitation_url.startswith(
        platform_standin.url
    )

    # A second cycle over the same window records nothing new and sends nothing.
    polled, dispatched = run_cycle(state_store, client, invite, settings)
    assert (polled["orders_seen"], polled["orders_new"], dispatched["claimed"]) == (12, 0, 0)
    assert sum(platform_creations(platform_standin).values()) == 12
    assert platform_standin.admin.invitations()["requests_by_order"] == dict.fromkeys(ids, 1)


def test_email_channel_sends_one_rendered_multipart_message_per_order(
    state_store, kombo_sandbox, smtp_server
):
    settings = make_settings(package_names={"py-basics": "Python basics"})
    (integration,) = register(state_store, kombo_sandbox, channel="email")
    created = new_order(
        kombo_sandbox,
        integration,
        "py-basics",
        candidate={"email": "ada.lovelace@example.com", "first_name": "Ada", "last_name": "Lovelace"},
        job={"name": "Data Engineer"},
    )
    order_id = created["id"]
    invite = inviters(settings, email=email_inviter(smtp_server, settings))

    _, dispatched = run_cycle(state_store, intake_kombo_client(kombo_sandbox), invite, settings)
    assert dispatched["invited"] == 1
    (entry,) = smtp_server.messages()
    assert entry["rcpt_tos"] == ["ada.lovelace@example.com"]
    assert entry["message_id"] == f"<kombo-invitation.{order_id}@provider.example.com>"
    message = smtp_server.read(entry)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = f"https://assessments.provider.example/start/{order_id}"
    for body in (text, html):
        assert "Ada" in body and "Data Engineer" in body and "Python basics" in body and link in body
    record = OrderRepository(state_store).get(order_id)
    assert record is not None and record.channel == "email" and record.invitation_url == link
    assert invitation_rows(state_store)[order_id]["external_id"] == entry["message_id"]


def test_package_name_comes_from_kombos_copy_of_the_catalog_when_not_configured(
    state_store, kombo_sandbox, smtp_server
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox, channel="email")
    client = intake_kombo_client(kombo_sandbox)
    client.set_packages(
        integration,
        [{"id": "sql-core", "type": "SKILLS_TEST", "name": "SQL fundamentals", "description": "d"}],
    )
    new_order(kombo_sandbox, integration, "sql-core")
    run_cycle(state_store, client, inviters(settings, email=email_inviter(smtp_server, settings)), settings)
    (entry,) = smtp_server.messages()
    assert entry["subject"].startswith("SQL fundamentals assessment")


def test_orders_outside_the_window_and_not_open_are_not_recorded(
    state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    now = datetime.now(UTC)
    old = new_order(kombo_sandbox, integration, "p", created_at=now - timedelta(hours=5))["id"]
    recent = new_order(kombo_sandbox, integration, "p", created_at=now - timedelta(minutes=30))["id"]
    done = new_order(kombo_sandbox, integration, "p", status="COMPLETED")["id"]
    two_hours = PollWindow(created_after=now - timedelta(hours=2), until=now, kind=KIND_INTERVAL)
    summary = poll_orders(state_store, intake_kombo_client(kombo_sandbox), settings, two_hours)
    assert summary["orders_new"] == 1
    assert set(order_states(state_store)) == {recent}
    assert old not in order_states(state_store) and done not in order_states(state_store)


def test_an_order_cancelled_in_the_ats_before_sending_is_not_invited(
    state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    keep, cancel = kombo_sandbox.admin.bulk_create_orders(integration, 2)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    kombo_sandbox.admin.cancel_order(cancel)  # after the poll recorded it, before the dispatch

    summary = dispatch_invitations(
        state_store, client, inviters(settings, platform=platform_inviter(platform_standin)), settings
    )
    assert (summary["invited"], summary["cancelled"]) == (1, 1)
    assert platform_creations(platform_standin) == {keep: 1}
    record = OrderRepository(state_store).get(cancel)
    assert record is not None and record.state == "cancelled" and record.kombo_status == "CANCELLED"
    assert "CANCELLED" in (record.last_error or "")


def test_duplicate_orders_for_the_same_candidate_and_package_are_not_invited_again(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = make_settings()
    first_integration, second_integration = register(state_store, kombo_sandbox, 2)
    candidate = {"email": "Grace.Hopper@example.com", "first_name": "Grace", "last_name": "Hopper"}
    application = {"remote_id": "app-1"}
    original = new_order(kombo_sandbox, first_integration, "py", candidate=candidate, application=application)
    # The webhook recorded the original a second before the poll sees the repeat.
    OrderRepository(state_store).record_order(original, "webhook", integration_id=first_integration)
    state_clock.advance(1)
    repeat = new_order(
        kombo_sandbox,
        first_integration,
        "py",
        candidate={**candidate, "email": "grace.hopper@example.com"},  # e-mails compare case-insensitively
        application=application,
    )["id"]
    other_package = new_order(
        kombo_sandbox, first_integration, "sql", candidate=candidate, application=application
    )
    other_integration = new_order(
        kombo_sandbox, second_integration, "py", candidate=candidate, application=application
    )

    _, dispatched = run_cycle(
        state_store,
        intake_kombo_client(kombo_sandbox),
        inviters(settings, platform=platform_inviter(platform_standin)),
        settings,
    )
    states = order_states(state_store)
    assert states[original["id"]] == "invited" and states[repeat] == "duplicate"
    assert states[other_package["id"]] == "invited"
    assert states[other_integration["id"]] == "invited"
    assert OrderRepository(state_store).get(repeat).duplicate_of == original["id"]
    assert repeat not in platform_creations(platform_standin)
    assert dispatched["invited"] == 3 and dispatched["duplicate"] == 1


def test_an_erased_candidate_ordered_again_is_a_duplicate_of_the_erased_active_order(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    from kombo_sync.candidate_hash import CandidateHasher
    from kombo_sync.housekeeping.retention import erase_candidates

    hasher = CandidateHasher("intake-test-salt-0123456789")
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    client = intake_kombo_client(kombo_sandbox)
    invite_with = inviters(settings, platform=platform_inviter(platform_standin))
    original = new_order(kombo_sandbox, integration, "py", candidate={"email": "Erased@Example.com"})["id"]
    run_cycle(state_store, client, invite_with, settings, hasher=hasher)
    erase_candidates(state_store, hasher, ["erased@example.com"])
    assert OrderRepository(state_store).get(original).candidate_email is None
    state_clock.advance(1)
    repeat = new_order(kombo_sandbox, integration, "py", candidate={"email": "erased@example.com"})["id"]
    _, dispatched = run_cycle(state_store, client, invite_with, settings, hasher=hasher)
    assert order_states(state_store) == {original: "invited", repeat: "duplicate"}
    assert OrderRepository(state_store).get(repeat).duplicate_of == original
    assert dispatched["duplicate"] == 1 and platform_creations(platform_standin) == {original: 1}


def test_two_orders_for_one_candidate_seen_at_once_give_one_invitation(
    state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    same = {"candidate": {"email": "alan@example.com"}, "application": {"remote_id": "app-7"}}
    pair = [new_order(kombo_sandbox, integration, "py", **same)["id"] for _ in range(2)]
    run_cycle(
        state_store,
        intake_kombo_client(kombo_sandbox),
        inviters(settings, platform=platform_inviter(platform_standin)),
        settings,
    )
    states = order_states(state_store)
    assert sorted(states[i] for i in pair) == ["duplicate", "invited"]
    (invited,) = [i for i in pair if states[i] == "invited"]
    (duplicate,) = [i for i in pair if states[i] == "duplicate"]
    assert OrderRepository(state_store).get(duplicate).duplicate_of == invited
    assert platform_creations(platform_standin) == {invited: 1}


def test_the_duplicate_rule_can_be_switched_off_per_integration(state_store, kombo_sandbox, platform_standin):
    (lenient,) = register(state_store, kombo_sandbox, settings={"duplicate_rule": False})
    (strict,) = register(state_store, kombo_sandbox)
    settings = make_settings()
    candidate = {"email": "same@example.com"}
    for integration in (lenient, strict):
        for _ in range(2):
            new_order(kombo_sandbox, integration, "py", candidate=candidate, application={"remote_id": "a"})
    run_cycle(
        state_store,
        intake_kombo_client(kombo_sandbox),
        inviters(settings, platform=platform_inviter(platform_standin)),
        settings,
    )
    assert OrderRepository(state_store).counts_by_state(lenient)["invited"] == 2
    assert OrderRepository(state_store).counts_by_state(strict)["duplicate"] == 1

    # pipeline.yaml overrides the registry.
    strict_everywhere = make_settings(integrations={lenient: {"duplicate_rule": True}})
    for _ in range(2):
        new_order(kombo_sandbox, lenient, "sql", candidate=candidate, application={"remote_id": "a"})
    run_cycle(
        state_store,
        intake_kombo_client(kombo_sandbox),
        inviters(strict_everywhere, platform=platform_inviter(platform_standin)),
        strict_everywhere,
    )
    assert OrderRepository(state_store).counts_by_state(lenient)["duplicate"] == 1


def test_one_integration_failing_does_not_stop_the_others(state_store, kombo_sandbox, platform_standin):
    settings = make_settings()
    healthy = register(state_store, kombo_sandbox, 2)
    IntegrationRepository(state_store).upsert("workday:not-in-kombo", source="admin")
    for integration in healthy:
        kombo_sandbox.admin.bulk_create_orders(integration, 3)
    polled, dispatched = run_cycle(
        state_store,
        intake_kombo_client(kombo_sandbox),
        inviters(settings, platform=platform_inviter(platform_standin)),
        settings,
    )
    assert list(polled["integrations_failed"]) == ["workday:not-in-kombo"]
    assert "INTEGRATION_NOT_FOUND" in polled["integrations_failed"]["workday:not-in-kombo"]
    assert polled["orders_new"] == 6 and dispatched["invited"] == 6


def test_inactive_integrations_are_neither_polled_nor_invited(state_store, kombo_sandbox, platform_standin):
    settings = make_settings()
    active, disabled = register(state_store, kombo_sandbox, 2)
    for integration in (active, disabled):
        kombo_sandbox.admin.bulk_create_orders(integration, 2)
    registry = IntegrationRepository(state_store)
    # An order of the disabled integration that the webhook recorded earlier is not invited either.
    webhook_order = new_order(kombo_sandbox, disabled, "py")
    OrderRepository(state_store).record_order(webhook_order, "webhook", integration_id=disabled)
    registry.set_enabled(disabled, False)
    polled, dispatched = run_cycle(
        state_store,
        intake_kombo_client(kombo_sandbox),
        inviters(settings, platform=platform_inviter(platform_standin)),
        settings,
    )
    assert polled["integrations"] == 1 and dispatched["invited"] == 2
    assert OrderRepository(state_store).get(webhook_order["id"]).state == "received"


def test_params_limit_the_run_to_chosen_integrations(state_store, kombo_sandbox, platform_standin):
    settings = make_settings()
    chosen, other = register(state_store, kombo_sandbox, 2)
    for integration in (chosen, other):
        kombo_sandbox.admin.bulk_create_orders(integration, 2)
    client = intake_kombo_client(kombo_sandbox)
    polled = poll_orders(state_store, client, settings, window(), integration_ids=[chosen, "workday:unknown"])
    dispatched = dispatch_invitations(
        state_store, client, inviters(settings, platform=platform_inviter(platform_standin)), settings,
        integration_ids=[chosen],
    )  # fmt: skip
    assert polled["integrations"] == 1 and polled["integrations_not_active"] == ["workday:unknown"]
    assert dispatched["invited"] == 2
    assert OrderRepository(state_store).counts_by_state(other)["received"] == 0  # never recorded


def test_dry_run_records_and_sends_nothing(state_store, kombo_sandbox, platform_standin):
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox)
    kombo_sandbox.admin.bulk_create_orders(integration, 4)
    client = intake_kombo_client(kombo_sandbox)
    polled = poll_orders(state_store, client, settings, window(), dry_run=True)
    dispatched = dispatch_invitations(
        state_store,
        client,
        inviters(settings, platform=platform_inviter(platform_standin)),
        settings,
        dry_run=True,
    )
    assert (polled["orders_seen"], polled["orders_new"]) == (4, 4)
    assert order_states(state_store) == {}
    assert dispatched["dry_run"] is True and platform_creations(platform_standin) == {}


def test_a_polled_order_for_a_package_the_customer_was_not_given_is_rejected_not_invited(
    state_store, kombo_sandbox, platform_standin
):
    """The webhook answers such an order 422; when only the poll finds it, the intake closes it the same way."""
    settings = make_settings()
    (integration,) = register(state_store, kombo_sandbox, settings={"published_package_ids": ["py-basics"]})
    served = new_order(kombo_sandbox, integration, "py-basics")["id"]
    refused = new_order(kombo_sandbox, integration, "bg-check")["id"]
    client = intake_kombo_client(kombo_sandbox)
    polled, dispatched = run_cycle(
        state_store, client, inviters(settings, platform=platform_inviter(platform_standin)), settings
    )
    assert (dispatched["invited"], dispatched["rejected"]) == (1, 1)
    assert platform_creations(platform_standin) == {served: 1}
    record = OrderRepository(state_store).get(refused)
    assert record is not None and record.state == "rejected" and record.lease_owner is None
    assert "'bg-check' is not available for your account" in (record.last_error or "")
