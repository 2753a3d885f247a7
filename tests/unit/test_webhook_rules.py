"""Rejection rules of `assessment:order-received`: each answers 422 with exactly Kombo's rejection shape."""

from __future__ import annotations

import pytest

from kombo_sync.serving import published_package_ids
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import consume_wakeups, pending_wakeups
from kombo_sync.webhooks.handlers import WebhookDeps, handle_webhook
from kombo_sync.webhooks.rules import RuleContext, load_rule
from tests.support.webhooks import order_event, signed

SECRET = "whsec_rules"
INTEGRATION = "greenhouse:rules"


@pytest.fixture
def store(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def registry(store) -> IntegrationRepository:
    repo = IntegrationRepository(store)
    repo.upsert(INTEGRATION, source="admin", category="ASSESSMENT")
    return repo


def deliver(store, event, settings=None, hasher=None):
    deps = WebhookDeps(
        secrets=lambda: [SECRET], store=store, settings=settings or PipelineSettings(), hasher=hasher
    )
    body, headers = signed(event, SECRET)
    return handle_webhook(body, headers, deps)


def assert_rejected(response, *words):
    assert response.status_code == 422
    assert set(response.body) == {"status", "message"}
    assert response.body["status"] == "ORDER_REJECTED"
    message = response.body["message"]
    assert isinstance(message, str) and 20 < len(message) <= 1000
    for word in words:
        assert word in message
    return message


def assert_rejected_and_recorded(store, response, event, *words):
    message = assert_rejected(response, *words)
    record = OrderRepository(store).get(event["data"]["id"])
    assert record is not None and record.state == "rejected" and record.last_error == message
    assert pending_wakeups(store, "orders") == 0


def test_unknown_integration_is_rejected(store):
    event = order_event(integration_id="lever:never-seen")
    assert_rejected_and_recorded(store, deliver(store, event), event, "not known")


def test_disabled_integration_is_rejected(store, registry):
    registry.set_enabled(INTEGRATION, False)
    event = order_event(integration_id=INTEGRATION)
    assert_rejected_and_recorded(store, deliver(store, event), event, "switched off")


@pytest.mark.parametrize("status", ["INACTIVE", "INVALID"])
def test_inactive_integration_is_rejected(store, registry, status):
    registry.set_status(INTEGRATION, status)
    event = order_event(integration_id=INTEGRATION)
    assert_rejected_and_recorded(store, deliver(store, event), event, "not active", status)


def test_deleted_integration_is_rejected(store, registry):
    registry.mark_deleted(INTEGRATION)
    event = order_event(integration_id=INTEGRATION)
    assert_rejected_and_recorded(store, deliver(store, event), event, "removed")


def test_package_not_published_for_the_customer_is_rejected(store, registry):
    registry.set_settings(INTEGRATION, {"published_package_ids": ["python_test", "sql_test"]})
    event = order_event(integration_id=INTEGRATION, package_id="rust_test")
    assert_rejected_and_recorded(store, deliver(store, event), event, "'rust_test'", "not available")
    allowed = order_event(integration_id=INTEGRATION, package_id="sql_test")
    assert deliver(store, allowed).status_code == 200


def test_package_rule_allows_everything_while_no_published_list_is_known(store, registry):
    assert published_package_ids(registry.get(INTEGRATION)) is None
    assert deliver(store, order_event(integration_id=INTEGRATION, package_id="anything")).status_code == 200


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign",
        "two@@signs.com",
        "john@localhost",
        "john@company.test",
        "john@host.invalid",
        "a b@c.com",
        "",
    ],
)
def test_email_that_cannot_receive_an_invitation_is_rejected(store, registry, email):
    event = order_event(integration_id=INTEGRATION, email=email)
    message = assert_rejected(deliver(store, event), "e-mail address")
    if email:
        assert email not in message  # the recruiter sees the candidate; the message never repeats the address


@pytest.mark.parametrize("email", ["john.doe@gmail.com", "Jürgen.Müller@münchen.de", "x+tag@example.com"])
def test_deliverable_looking_email_is_accepted(store, registry, email):
    assert deliver(store, order_event(integration_id=INTEGRATION, email=email)).status_code == 200


def test_second_active_order_for_the_same_candidate_and_package_is_rejected(store, registry):
    first = order_event(integration_id=INTEGRATION, email="Jane@Gmail.com")
    assert deliver(store, first).status_code == 200
    consume_wakeups(store, "orders")
    second = order_event(integration_id=INTEGRATION, email="jane@gmail.com")
    assert_rejected_and_recorded(
        store, deliver(store, second), second, first["data"]["id"], "already an open order"
    )
    other_package = order_event(integration_id=INTEGRATION, email="jane@gmail.com", package_id="other")
    assert deliver(store, other_package).status_code == 200


def test_duplicate_rule_can_be_switched_off_per_integration(store, registry):
    settings = PipelineSettings.model_validate(
        {"intake": {"integrations": {INTEGRATION: {"duplicate_rule": False}}}}
    )
    assert deliver(store, order_event(integration_id=INTEGRATION), settings).status_code == 200
    assert deliver(store, order_event(integration_id=INTEGRATION), settings).status_code == 200


def test_an_order_no_longer_active_is_not_a_duplicate(store, registry):
    first = order_event(integration_id=INTEGRATION)
    deliver(store, first)
    OrderRepository(store).mark_cancelled(first["data"]["id"])
    assert deliver(store, order_event(integration_id=INTEGRATION)).status_code == 200


def test_an_erased_candidates_active_order_is_still_found_by_its_hash(store, registry):
    """Erased on request while invited: no e-mail left, but the salted hash still makes a repeat a duplicate."""
    from kombo_sync.candidate_hash import CandidateHasher
    from kombo_sync.housekeeping.retention import erase_candidates

    hasher = CandidateHasher("rules-test-salt-0123456789")
    first = order_event(integration_id=INTEGRATION, email="Erased@Example.com")
    assert deliver(store, first, hasher=hasher).status_code == 200
    consume_wakeups(store, "orders")
    repo = OrderRepository(store)
    assert repo.claim_order(first["data"]["id"], "w", 60) is not None
    assert repo.mark_invited(first["data"]["id"], "w", "inv-1", None, "platform", None)
    erase_candidates(store, hasher, ["erased@example.com"])
    assert repo.get(first["data"]["id"]).candidate_email is None
    second = order_event(integration_id=INTEGRATION, email="erased@example.com")
    assert_rejected_and_recorded(store, deliver(store, second, hasher=hasher), second, first["data"]["id"])
    # Without the salt the erased order cannot be matched (documented in docs/lifecycle.md).
    assert (
        deliver(store, order_event(integration_id=INTEGRATION, email="erased@example.com")).status_code == 200
    )


# The team's own rule (settings.webhook.extra_rejection_rule) -------------------------------------------------


def reject_competitor_jobs(order, context: RuleContext):
    """Example rule: no assessments for jobs whose code starts with COMP-."""
    assert context.integration is not None and context.event_type == "assessment:order-received"
    if (order.job.job_code or "").startswith("COMP-"):
        return "Assessments for COMP- requisitions are ordered through the central team, not the ATS."
    return None


def broken_rule(order, context):
    raise KeyError("bug in the team's rule")


def wrong_type_rule(order, context):
    return 42


def test_extra_rule_from_settings_rejects_with_its_message(store, registry):
    settings = PipelineSettings.model_validate(
        {"webhook": {"extra_rejection_rule": f"{__name__}.reject_competitor_jobs"}}
    )
    event = order_event(integration_id=INTEGRATION)
    event["data"]["job"]["job_code"] = "COMP-1"
    assert_rejected(deliver(store, event, settings), "central team")
    assert deliver(store, order_event(integration_id=INTEGRATION), settings).status_code == 200


def test_extra_rule_runs_after_the_builtin_rules(store):
    settings = PipelineSettings.model_validate(
        {"webhook": {"extra_rejection_rule": f"{__name__}.reject_competitor_jobs"}}
    )
    event = order_event(integration_id="lever:unknown")
    event["data"]["job"]["job_code"] = "COMP-1"
    assert_rejected(deliver(store, event, settings), "not known")


@pytest.mark.parametrize(
    "path", [f"{__name__}.broken_rule", f"{__name__}.wrong_type_rule", "no.such.module.rule", "nodots"]
)
def test_broken_extra_rule_never_rejects_the_order(store, registry, path):
    settings = PipelineSettings.model_validate({"webhook": {"extra_rejection_rule": path}})
    event = order_event(integration_id=INTEGRATION)
    response = deliver(store, event, settings)
    # A server-side fault: Kombo keeps the order (not 422), and the poll or a redelivery picks it up.
    assert response.status_code == 503
    assert response.body["status"] != "ORDER_REJECTED"


def test_load_rule_accepts_colon_form():
    assert load_rule(f"{__name__}:reject_competitor_jobs") is reject_competitor_jobs
