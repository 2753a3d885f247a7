"""`handle_webhook` without FastAPI: security checks, bad input, dedupe, and what each event type changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from kombo_sync.assets import INTEGRATIONS_TOPIC, ORDERS_TOPIC
from kombo_sync.kombo.signatures import SIGNATURE_HEADER, sign
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.events import WebhookEventLog
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.schema import orders, webhook_events
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import consume_wakeups, pending_wakeups
from kombo_sync.webhooks.handlers import WebhookDeps, WebhookResponse, handle_webhook
from tests.support.webhooks import KOMBO_EXAMPLES, integration_event, order_event, signed

SECRET = "whsec_unit_secret"
INTEGRATION = "workday:CBNMt7dSNCzBdnRTx87dev4E"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    store.migrate()
    yield store
    store.dispose()


def make_deps(store, *, secrets=(SECRET,), settings=None, **kwargs) -> WebhookDeps:
    return WebhookDeps(
        secrets=lambda: secrets, store=store, settings=settings or PipelineSettings(), **kwargs
    )


@pytest.fixture
def deps(store) -> WebhookDeps:
    return make_deps(store)


def register(store, integration_id=INTEGRATION, **kwargs) -> None:
    IntegrationRepository(store).upsert(integration_id, source="admin", category="ASSESSMENT", **kwargs)


def deliver(deps, event, *, secret=SECRET, headers=None) -> WebhookResponse:
    body, signed_headers = signed(event, secret)
    return handle_webhook(body, {**signed_headers, **(headers or {})}, deps)


def event_count(store) -> int:
    with store.transaction(readonly=True) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one()


def order_count(store) -> int:
    with store.transaction(readonly=True) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()


# Security and bad input ------------------------------------------------------------------------------------


def test_no_secret_configured_answers_503_to_everything(store):
    deps = make_deps(store, secrets=())
    for body, headers in (signed(order_event(), SECRET), (b"garbage", {}), (b"x" * 2_000_000, {})):
        response = handle_webhook(body, headers, deps)
        assert response.status_code == 503
        assert response.body["error"] == "WEBHOOK_DISABLED"
    assert event_count(store) == 0


def test_body_over_the_cap_is_413(store):
    settings = PipelineSettings.model_validate({"webhook": {"max_body_bytes": 2048}})
    deps = make_deps(store, settings=settings)
    event = order_event()
    event["data"]["job"]["description"] = "x" * 4000
    assert deliver(deps, event).status_code == 413
    assert event_count(store) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json"])
def test_wrong_content_type_is_415(deps, content_type):
    body, headers = signed(order_event(), SECRET)
    headers.pop("Content-Type")
    if content_type is not None:
        headers["Content-Type"] = content_type
    assert handle_webhook(body, headers, deps).status_code == 415


def test_content_type_with_charset_and_any_header_case_is_accepted(deps, store):
    register(store)
    body = json.dumps(order_event()).encode()
    headers = {
        "content-type": "Application/JSON; charset=utf-8",
        SIGNATURE_HEADER.lower(): sign(body, SECRET),
    }
    assert handle_webhook(body, headers, deps).status_code == 200


@pytest.mark.parametrize("signature", [None, "", "not-a-signature", sign(b"other body", SECRET)])
def test_missing_or_wrong_signature_is_401_and_changes_nothing(deps, store, signature):
    body, headers = signed(order_event(), SECRET)
    headers.pop(SIGNATURE_HEADER)
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    response = handle_webhook(body, headers, deps)
    assert response.status_code == 401
    assert event_count(store) == 0 and order_count(store) == 0


def test_signature_with_another_secret_is_401(deps):
    assert deliver(deps, order_event(), secret="someone-else").status_code == 401


def test_every_configured_secret_is_accepted_during_rotation(store):
    register(store)
    deps = make_deps(store, secrets=("new-secret", "old-secret"))
    assert deliver(deps, order_event(email="a@gmail.com"), secret="old-secret").status_code == 200
    assert deliver(deps, order_event(email="b@gmail.com"), secret="new-secret").status_code == 200
    assert deliver(deps, order_event(email="c@gmail.com"), secret="retired-secret").status_code == 401


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b'{"id": NaN}', b"\xff\xfe{}", b'{"id": 1e999, "type": "x", "data": {}}'],
)
def test_not_json_is_400(deps, store, body):
    response = deliver(deps, body)
    assert response.status_code == 400
    assert response.body["error"] == "INVALID_JSON"
    assert event_count(store) == 0


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_400(deps, body):
    response = deliver(deps, body)
    assert response.status_code == 400
    assert response.body["fields"] == ["$"]


def _without(event, dotted):
    *parents, last = dotted.split(".")
    node = event
    for part in parents:
        node = node[part]
    del node[last]
    return event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_without(order_event(), "id"), "id"),
        (_without(order_event(), "type"), "type"),
        (_without(order_event(), "data"), "data"),
        (_without(order_event(), "data.candidate.email"), "data.candidate.email"),
        (_without(order_event(), "data.package_id"), "data.package_id"),
        (_without(order_event(), "data.integration_id"), "data.integration_id"),
        (_without(order_event(), "data.job"), "data.job"),
        (_without(integration_event("integration-created", INTEGRATION), "data.end_user"), "data.end_user"),
        (
            _without(integration_event("integration-deleted", INTEGRATION), "data.deleted_at"),
            "data.deleted_at",
        ),
        (_without(integration_event("integration-state-changed", INTEGRATION), "data.state"), "data.state"),
    ],
)
def test_schema_violation_is_400_naming_the_field(deps, store, event, field):
    response = deliver(deps, event)
    assert response.status_code == 400
    assert field in response.body["fields"]
    assert field in response.body["message"]
    assert event_count(store) == 0 and order_count(store) == 0


def test_wrong_types_are_400_naming_the_field(deps):
    event = order_event()
    event["data"]["candidate"] = "john"
    response = deliver(deps, event)
    assert response.status_code == 400 and response.body["fields"] == ["data.candidate"]
    event = order_event()
    event["data"]["job"]["hiring_team"] = [{"hiring_team_roles": "RECRUITER"}]
    response = deliver(deps, event)
    assert response.status_code == 400
    assert response.body["fields"] == ["data.job.hiring_team.0.hiring_team_roles"]


def test_schema_error_does_not_echo_candidate_data(deps):
    event = order_event(email="secret.person@gmail.com")
    event["data"]["candidate"]["first_name"] = {"nested": "secret.person@gmail.com"}
    response = deliver(deps, event)
    assert response.status_code == 400
    assert "secret.person" not in json.dumps(response.body)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.update(id="x" * 300), "id"),
        (lambda e: e.update(type="t" * 101), "type"),
        (lambda e: e["data"].update(id="o" * 256), "data.id"),
        (lambda e: e["data"].update(package_id="p" * 256), "data.package_id"),
        (lambda e: e["data"]["candidate"].update(first_name="nul\x00byte"), "data.candidate.first_name"),
        (lambda e: e["data"]["job"].update(name="\ud800"), "data.job.name"),
    ],
)
def test_values_no_database_can_store_are_400(deps, store, mutate, field):
    event = order_event()
    mutate(event)
    response = deliver(deps, event)
    assert response.status_code == 400
    assert response.body["fields"] == [field]
    assert event_count(store) == 0


def test_absurd_nesting_is_400(deps):
    body = b'{"id":"e","type":"x","data":{"a":' + b"[" * 200 + b"]" * 200 + b"}}"
    assert deliver(deps, body).status_code == 400


# Dedupe -----------------------------------------------------------------------------------------------------


def test_redelivered_event_gets_the_same_answer_and_changes_nothing(deps, store):
    register(store)
    event = order_event()
    first = deliver(deps, event)
    assert first.status_code == 200
    assert consume_wakeups(store, ORDERS_TOPIC) == 1
    before = OrderRepository(store).get(event["data"]["id"])
    # Even if the world changed since (the integration is now gone), a redelivery gets the first answer.
    IntegrationRepository(store).mark_deleted(INTEGRATION)
    again = deliver(deps, event)
    assert (again.status_code, again.body) == (first.status_code, first.body)
    assert OrderRepository(store).get(event["data"]["id"]) == before
    assert pending_wakeups(store, ORDERS_TOPIC) == 0
    assert event_count(store) == 1 and order_count(store) == 1


def test_redelivered_rejection_gets_the_same_422(deps, store):
    event = order_event()  # integration unknown
    first = deliver(deps, event)
    assert first.status_code == 422
    register(store)
    again = deliver(deps, event)
    assert (again.status_code, again.body) == (422, first.body)


def test_concurrent_delivery_of_an_event_in_progress_is_409_then_retried_when_stale(deps, store, clock):
    register(store)
    event = order_event()
    WebhookEventLog(store).record_or_get(event["id"], event["type"])  # another worker is on it
    response = deliver(deps, event)
    assert response.status_code == 409 and "Retry-After" in response.headers
    assert order_count(store) == 0
    clock.now += timedelta(minutes=5)  # that worker died without answering
    assert deliver(deps, event).status_code == 200
    assert order_count(store) == 1


# assessment:order-received ---------------------------------------------------------------------------------


def test_accepted_order_is_recorded_and_wakes_the_intake(deps, store):
    register(store)
    event = order_event()
    response = deliver(deps, event)
    assert response.status_code == 200
    assert response.body["status"] == "ACCEPTED"
    record = OrderRepository(store).get(event["data"]["id"])
    assert record is not None
    assert (record.state, record.first_seen_via, record.integration_id) == (
        "received",
        "webhook",
        INTEGRATION,
    )
    assert pending_wakeups(store, ORDERS_TOPIC) == 1


def test_order_already_recorded_by_the_poll_is_accepted_without_change(deps, store):
    register(store)
    event = order_event()
    OrderRepository(store).record_order(event["data"], "poll")
    response = deliver(deps, event)
    assert response.status_code == 200 and response.body["already_known"] is True
    record = OrderRepository(store).get(event["data"]["id"])
    assert (record.state, record.first_seen_via) == ("received", "poll")


def test_a_new_event_for_a_rejected_order_is_rejected_again(deps, store):
    event = order_event()
    first = deliver(deps, event)
    assert first.status_code == 422
    register(store)
    again = deliver(deps, {**event, "id": "another-event-id"})
    assert (again.status_code, again.body) == (422, first.body)


def test_order_not_open_is_not_recorded(deps, store):
    register(store)
    response = deliver(deps, order_event(status="CANCELLED"))
    assert response.status_code == 200 and response.body["status"] == "IGNORED"
    assert order_count(store) == 0


# inline-assessment:order-received --------------------------------------------------------------------------


def test_inline_order_answers_the_assessment_url(store):
    register(store)
    calls = []

    def invite_now(store_, inviter, order, settings):
        calls.append(order.id)
        return f"https://assess.example.com/start/{order.id}"

    deps = make_deps(store, inviter=object(), invite_now=invite_now)
    event = order_event(event_type="inline-assessment:order-received")
    response = deliver(deps, event)
    assert response.status_code == 200
    assert response.body == {"assessment_url": f"https://assess.example.com/start/{event['data']['id']}"}
    assert OrderRepository(store).get(event["data"]["id"]) is not None
    assert deliver(deps, event).body == response.body  # redelivery: stored answer, no second invite
    assert calls == [event["data"]["id"]]


@pytest.mark.parametrize("failure", ["raises", "returns_none", "slow"])
def test_inline_failure_is_503_not_422_and_retried_on_redelivery(store, failure):
    register(store)
    outcome = {"url": None}

    def invite_now(store_, inviter, order, settings):
        if outcome["url"]:
            return outcome["url"]
        if failure == "raises":
            raise ConnectionError("platform down")
        if failure == "slow":
            import time

            time.sleep(1.5)
        return None

    settings = PipelineSettings.model_validate({"webhook": {"inline_timeout_seconds": 0.5}})
    deps = make_deps(store, inviter=object(), invite_now=invite_now, settings=settings)
    event = order_event(event_type="inline-assessment:order-received")
    response = deliver(deps, event)
    assert response.status_code == 503
    assert response.body.get("status") != "ORDER_REJECTED"
    # The order is kept for the intake, and the intake is woken to retry it.
    assert OrderRepository(store).get(event["data"]["id"]).state == "received"
    assert pending_wakeups(store, ORDERS_TOPIC) == 1
    outcome["url"] = "https://assess.example.com/x"
    assert deliver(deps, event).body == {"assessment_url": "https://assess.example.com/x"}


def test_inline_without_a_configured_channel_is_503(store):
    register(store)
    response = deliver(make_deps(store), order_event(event_type="inline-assessment:order-received"))
    assert response.status_code == 503


# Integration events ----------------------------------------------------------------------------------------


def test_integration_created_registers_and_requests_a_package_sync(deps, store):
    response = deliver(deps, integration_event("integration-created", "greenhouse:abc", origin_id="cust-1"))
    assert response.status_code == 200
    record = IntegrationRepository(store).get("greenhouse:abc")
    assert (record.status, record.category, record.customer_key, record.source) == (
        "ACTIVE",
        "ASSESSMENT",
        "cust-1",
        "webhook",
    )
    assert consume_wakeups(store, INTEGRATIONS_TOPIC) == 1
    # The same integration announced again (another event id) is not "new": no second sync request.
    deliver(deps, integration_event("integration-created", "greenhouse:abc"))
    assert pending_wakeups(store, INTEGRATIONS_TOPIC) == 0


def test_non_assessment_integration_is_registered_without_a_package_sync(deps, store):
    assert (
        deliver(deps, integration_event("integration-created", "personio:x", category="HRIS")).status_code
        == 200
    )
    assert IntegrationRepository(store).get("personio:x").category == "HRIS"
    assert pending_wakeups(store, INTEGRATIONS_TOPIC) == 0


def test_state_changed_tracks_status_and_reactivation_requests_a_sync(deps, store):
    register(store, "lever:abc")
    deliver(deps, integration_event("integration-state-changed", "lever:abc", state="INACTIVE"))
    assert IntegrationRepository(store).get("lever:abc").status == "INACTIVE"
    assert pending_wakeups(store, INTEGRATIONS_TOPIC) == 0
    rejected = deliver(deps, order_event(integration_id="lever:abc"))
    assert rejected.status_code == 422 and "not active" in rejected.body["message"]
    deliver(deps, integration_event("integration-state-changed", "lever:abc", state="ACTIVE"))
    assert IntegrationRepository(store).get("lever:abc").status == "ACTIVE"
    assert pending_wakeups(store, INTEGRATIONS_TOPIC) == 1


def test_unknown_state_value_keeps_the_status(deps, store):
    register(store, "lever:abc")
    response = deliver(deps, integration_event("integration-state-changed", "lever:abc", state="PAUSED"))
    assert response.status_code == 200
    assert IntegrationRepository(store).get("lever:abc").status == "ACTIVE"


def test_integration_deleted_stops_all_work_for_it(deps, store):
    register(store)
    open_event = order_event(email="a@gmail.com")
    assert deliver(deps, open_event).status_code == 200
    assert deliver(deps, integration_event("integration-deleted", INTEGRATION)).status_code == 200
    record = IntegrationRepository(store).get(INTEGRATION)
    assert record.status == "DELETED" and record.deleted_at is not None
    # Its waiting order will not be invited, and no new order is taken.
    assert OrderRepository(store).get(open_event["data"]["id"]).state == "cancelled"
    later = deliver(deps, order_event(email="b@gmail.com"))
    assert later.status_code == 422 and "removed" in later.body["message"]
    # A late state change does not bring it back.
    deliver(deps, integration_event("integration-state-changed", INTEGRATION, state="ACTIVE"))
    assert IntegrationRepository(store).get(INTEGRATION).status == "DELETED"


def test_deleting_an_unknown_integration_remembers_it_as_deleted(deps, store):
    assert deliver(deps, integration_event("integration-deleted", "lever:gone")).status_code == 200
    assert IntegrationRepository(store).get("lever:gone").status == "DELETED"


def test_unknown_event_type_is_200_recorded_and_ignored(deps, store):
    response = deliver(deps, {"id": "evt-unknown", "type": "data-changed", "data": {"anything": [1, 2]}})
    assert response.status_code == 200 and response.body["status"] == "IGNORED"
    event = WebhookEventLog(store).get("evt-unknown")
    assert event is not None and event.type == "data-changed" and event.response_status == 200
    assert order_count(store) == 0


# Kombo's own examples --------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(KOMBO_EXAMPLES))
def test_kombo_examples_are_accepted(store, event_type):
    register(store)  # the order examples' integration
    deps = make_deps(store, inviter=object(), invite_now=lambda *args: "https://assess.example.com/x")
    response = deliver(deps, KOMBO_EXAMPLES[event_type])
    assert response.status_code == 200, response.body
