"""The batch dispatch and the inline flow's one-order dispatch share one send path (issue 13, item 1), on SQLite
and PostgreSQL: the same request (package name included) and the same failure rules (an unexpected channel
error counts an attempt and fails the order after `intake.max_attempts`), where the two used to differ."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kombo_sync.intake import dispatch_invitations, invite_order_now
from kombo_sync.invites import Inviters
from kombo_sync.invites.base import (
    InvitationOrder,
    InvitationResult,
    PermanentInvitationError,
    RetriableInvitationError,
)
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore
from tests.integration.intake_helpers import make_settings

PACKAGE = "py-basics"


class Recording:
    """A channel that records what it is asked to send, and answers with a link (or raises ``error``)."""

    def __init__(self, channel: str, error: Exception | None = None) -> None:
        self.channel = channel
        self.error = error
        self.requests: list[InvitationOrder] = []

    def send(self, order: InvitationOrder, idempotency_key: str) -> InvitationResult:
        self.requests.append(order)
        if self.error is not None:
            raise self.error
        return InvitationResult(
            f"inv-{idempotency_key}", f"https://assess.example/{idempotency_key}", self.channel
        )


def _integration(store: StateStore, channel: str) -> str:
    integration_id = f"workday:send-path-{channel}"
    registry = IntegrationRepository(store)
    registry.upsert(integration_id, source="admin", tool="workday", customer_key="cust-0")
    registry.set_invitation_channel(integration_id, channel)
    return integration_id


def _order(integration_id: str, order_id: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "integration_id": integration_id,
        "package_id": PACKAGE,
        "status": "OPEN",
        "candidate": {"remote_id": f"cand-{order_id}", "email": f"{order_id}@candidates.example"},
        "application": {"remote_id": f"app-{order_id}"},
        "job": {"remote_id": "job-1", "name": "Data Engineer"},
    }


def _batch(store: StateStore, inviter: Recording, settings: PipelineSettings) -> dict[str, Any]:
    return dispatch_invitations(store, None, Inviters(settings, {inviter.channel: inviter}), settings)


@pytest.mark.parametrize("channel", ["platform", "email"])
def test_both_paths_build_the_same_request(state_store, channel):
    settings = make_settings(package_names={PACKAGE: "Python basics"})
    integration = _integration(state_store, channel)
    repo = OrderRepository(state_store)

    batch = Recording(channel)
    repo.record_order(_order(integration, "o-batch"), "poll")
    assert _batch(state_store, batch, settings)["invited"] == 1

    inline = Recording(channel)
    result = invite_order_now(state_store, inline, _order(integration, "o-inline"), settings)
    assert result.url == "https://assess.example/o-inline"

    (batch_request,) = batch.requests
    (inline_request,) = inline.requests
    # The package's name goes into e-mails only, in both paths (the inline flow used to send it to every channel).
    expected_name = "Python basics" if channel == "email" else None
    assert batch_request.package_name == inline_request.package_name == expected_name
    assert batch_request.attempt == inline_request.attempt == 1
    assert {repo.get("o-batch").state, repo.get("o-inline").state} == {"invited"}


def test_an_unexpected_channel_error_counts_an_attempt_and_fails_after_max_attempts_in_both_paths(
    state_store, state_clock
):
    settings = make_settings(max_attempts=2, retry_backoff_seconds=60)
    integration = _integration(state_store, "platform")
    repo = OrderRepository(state_store)
    broken = Recording("platform", error=KeyError("surprise"))

    repo.record_order(_order(integration, "o-batch"), "poll")
    first = _batch(state_store, broken, settings)
    assert first["retry_later"] == 1 and first["channel_errors"] == 1
    assert repo.get("o-batch").state == "received" and repo.get("o-batch").attempts == 1
    assert repo.get("o-batch").next_attempt_at == state_clock() + timedelta(seconds=60)
    state_clock.advance(61)  # the batch takes the order again once its backoff is over
    second = _batch(state_store, broken, settings)
    assert second["failed"] == 1
    batch_record = repo.get("o-batch")

    order = _order(integration, "o-inline")
    with pytest.raises(RetriableInvitationError, match="unexpected KeyError from channel platform"):
        invite_order_now(state_store, broken, order, settings)
    assert repo.get("o-inline").state == "received" and repo.get("o-inline").attempts == 1
    # Put back with the same backoff; the inline flow claims it whatever its retry time (a candidate waits).
    backoff = timedelta(seconds=60)
    assert repo.get("o-inline").next_attempt_at == state_clock() + backoff
    with pytest.raises(RetriableInvitationError, match="unexpected KeyError"):
        invite_order_now(state_store, broken, order, settings)
    inline_record = repo.get("o-inline")
    # The inline flow used to put the order back without limit; now it fails it like the batch does.
    with pytest.raises(PermanentInvitationError, match="order is failed"):
        invite_order_now(state_store, broken, order, settings)

    assert batch_record.state == inline_record.state == "failed"
    assert batch_record.attempts == inline_record.attempts == 2
    assert batch_record.last_error == inline_record.last_error
    assert batch_record.last_error == "gave up after 2 attempts: unexpected KeyError from channel platform"
    assert len(broken.requests) == 4
