"""Failures of the invitation channels, on SQLite and PostgreSQL: retries with backoff across runs, `failed`
after max_attempts with the reason, a malformed e-mail failing only its order, expired leases re-claimed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kombo_sync.intake import dispatch_invitations, poll_orders
from kombo_sync.invites import InviterConfigurationError, Inviters
from kombo_sync.invites.base import InvitationRequest, InvitationResult, Inviter, PermanentInvitationError
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.orders import OrderRepository
from tests.integration.intake_helpers import (
    email_inviter,
    intake_kombo_client,
    inviters,
    make_settings,
    new_order,
    order_states,
    platform_creations,
    platform_inviter,
    register,
    window,
)


def test_platform_down_is_retried_with_backoff_across_runs_then_failed_with_its_reason(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = make_settings(retry_backoff_seconds=60, max_attempts=3)
    (integration,) = register(state_store, kombo_sandbox)
    (order_id,) = kombo_sandbox.admin.bulk_create_orders(integration, 1)
    client = intake_kombo_client(kombo_sandbox)
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    poll_orders(state_store, client, settings, window())
    platform_standin.admin.set_knobs(failure_rate=1.0)
    repo = OrderRepository(state_store)

    first = dispatch_invitations(state_store, client, invite, settings)
    record = repo.get(order_id)
    assert first["retry_later"] == 1 and record.state == "received" and record.attempts == 1
    assert record.next_attempt_at == state_clock.current + timedelta(seconds=60)
    assert "HTTP 503" in record.last_error

    # Not due yet: the next run leaves it alone.
    assert dispatch_invitations(state_store, client, invite, settings)["claimed"] == 0
    state_clock.advance(61)
    dispatch_invitations(state_store, client, invite, settings)
    record = repo.get(order_id)
    assert record.attempts == 2 and record.next_attempt_at == state_clock.current + timedelta(seconds=120)

    state_clock.advance(121)
    last = dispatch_invitations(state_store, client, invite, settings)
    record = repo.get(order_id)
    assert last["failed"] == 1 and record.state == "failed"
    assert record.last_error.startswith("gave up after 3 attempts") and "503" in record.last_error
    assert platform_creations(platform_standin) == {}


def test_platform_recovering_invites_on_the_next_attempt(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = make_settings(retry_backoff_seconds=30)
    (integration,) = register(state_store, kombo_sandbox)
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 3)
    client = intake_kombo_client(kombo_sandbox)
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    poll_orders(state_store, client, settings, window())
    platform_standin.admin.set_knobs(failure_rate=1.0)
    assert dispatch_invitations(state_store, client, invite, settings)["retry_later"] == 3
    platform_standin.admin.set_knobs(failure_rate=0.0)
    state_clock.advance(31)
    assert dispatch_invitations(state_store, client, invite, settings)["invited"] == 3
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)
    assert {OrderRepository(state_store).get(i).attempts for i in ids} == {2}


def test_smtp_temporary_failure_and_outage_are_retried_and_sent_once(
    state_store, state_clock, kombo_sandbox, smtp_server
):
    settings = make_settings(retry_backoff_seconds=10)
    (integration,) = register(state_store, kombo_sandbox, channel="email")
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 2)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    invite = inviters(settings, email=email_inviter(smtp_server, settings))

    smtp_server.fail_next(2)  # 451 for both
    assert dispatch_invitations(state_store, client, invite, settings)["retry_later"] == 2
    assert "451" in OrderRepository(state_store).get(ids[0]).last_error
    assert smtp_server.messages() == []

    smtp_server.stop()  # the server is down: connection refused
    state_clock.advance(11)
    assert dispatch_invitations(state_store, client, invite, settings)["retry_later"] == 2
    assert "unavailable" in OrderRepository(state_store).get(ids[0]).last_error


def test_smtp_back_up_delivers_each_message_once(state_store, state_clock, kombo_sandbox, smtp_server):
    settings = make_settings(retry_backoff_seconds=10)
    (integration,) = register(state_store, kombo_sandbox, channel="email")
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 3)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    invite = inviters(settings, email=email_inviter(smtp_server, settings))
    smtp_server.fail_next(1)
    first = dispatch_invitations(state_store, client, invite, settings)
    assert (first["invited"], first["retry_later"]) == (2, 1)
    state_clock.advance(11)
    assert dispatch_invitations(state_store, client, invite, settings)["invited"] == 1
    counts = smtp_server.count_by_message_id()
    assert len(counts) == 3 and set(counts.values()) == {1}
    assert {f"<kombo-invitation.{i}@provider.example.com>" for i in ids} == set(counts)


def test_a_malformed_candidate_email_fails_that_order_only(
    state_store, kombo_sandbox, platform_standin, smtp_server
):
    settings = make_settings()
    (on_platform,) = register(state_store, kombo_sandbox)
    (by_email,) = register(state_store, kombo_sandbox, channel="email")
    bad = [
        new_order(kombo_sandbox, integration, candidate={"email": address})["id"]
        for integration, address in ((on_platform, "not-an-email"), (by_email, "two@@example.com"))
    ]
    good = [new_order(kombo_sandbox, integration)["id"] for integration in (on_platform, by_email)]
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    invite = inviters(
        settings, platform=platform_inviter(platform_standin), email=email_inviter(smtp_server, settings)
    )
    summary = dispatch_invitations(state_store, client, invite, settings)
    assert (summary["invited"], summary["failed"]) == (2, 2)
    states = order_states(state_store)
    assert [states[i] for i in bad] == ["failed", "failed"] and [states[i] for i in good] == [
        "invited",
        "invited",
    ]
    assert OrderRepository(state_store).get(bad[0]).last_error.startswith("candidate e-mail is malformed")
    assert set(platform_creations(platform_standin)) == {good[0]}
    assert len(smtp_server.messages()) == 1


class Refusing:
    """A channel that refuses every order for good."""

    channel = "platform"

    def send(self, order: InvitationRequest, idempotency_key: str) -> InvitationResult:
        raise PermanentInvitationError(
            "platform refused the invitation: HTTP 422 (invalid_request)", channel="platform"
        )


def test_a_permanent_channel_error_fails_the_order_at_once(state_store, kombo_sandbox):
    settings = make_settings(max_attempts=5)
    (integration,) = register(state_store, kombo_sandbox)
    (order_id,) = kombo_sandbox.admin.bulk_create_orders(integration, 1)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    summary = dispatch_invitations(state_store, client, inviters(settings, platform=Refusing()), settings)
    record = OrderRepository(state_store).get(order_id)
    assert summary["failed"] == 1 and record.state == "failed" and record.attempts == 1
    assert "HTTP 422" in record.last_error


def test_a_dead_workers_claim_expires_and_the_order_is_sent_with_the_same_key(
    state_store, state_clock, kombo_sandbox, platform_standin
):
    settings = make_settings(lease_seconds=60)
    (integration,) = register(state_store, kombo_sandbox)
    ids = kombo_sandbox.admin.bulk_create_orders(integration, 2)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())
    repo = OrderRepository(state_store)
    (dead_claim,) = repo.claim_orders_for_invite("worker-that-died", 60, 1)
    # The dead worker got as far as the platform before it died.
    platform_inviter(platform_standin).send(
        InvitationRequest(
            dead_claim.order_id, integration, dead_claim.package_id, dead_claim.candidate_email or ""
        ),
        dead_claim.order_id,
    )
    invite = inviters(settings, platform=platform_inviter(platform_standin))
    assert dispatch_invitations(state_store, client, invite, settings)["invited"] == 1  # the other order only
    assert repo.get(dead_claim.order_id).state == "inviting"

    state_clock.advance(61)
    assert dispatch_invitations(state_store, client, invite, settings)["invited"] == 1
    assert repo.get(dead_claim.order_id).attempts == 2
    assert platform_creations(platform_standin) == dict.fromkeys(ids, 1)
    assert platform_standin.admin.invitations()["requests_by_order"][dead_claim.order_id] == 2


def test_a_channel_without_its_connection_holds_back_only_its_orders(
    state_store, kombo_sandbox, platform_standin
):
    settings = make_settings()
    (by_platform,) = register(state_store, kombo_sandbox)
    (by_email,) = register(state_store, kombo_sandbox, channel="email")
    platform_ids = kombo_sandbox.admin.bulk_create_orders(by_platform, 2)
    email_ids = kombo_sandbox.admin.bulk_create_orders(by_email, 2)
    client = intake_kombo_client(kombo_sandbox)
    poll_orders(state_store, client, settings, window())

    def no_smtp_connection(channel: str, _settings: PipelineSettings) -> Inviter:
        raise InviterConfigurationError("channel 'email' needs the Airflow connection 'kombo_smtp'")

    invite = Inviters(
        settings, prebuilt={"platform": platform_inviter(platform_standin)}, factory=no_smtp_connection
    )
    with pytest.raises(InviterConfigurationError, match="kombo_smtp"):
        dispatch_invitations(state_store, client, invite, settings)
    assert platform_creations(platform_standin) == dict.fromkeys(platform_ids, 1)
    repo = OrderRepository(state_store)
    assert [(repo.get(i).state, repo.get(i).attempts) for i in email_ids] == [
        ("received", 0),
        ("received", 0),
    ]
