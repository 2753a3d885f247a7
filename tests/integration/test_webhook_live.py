"""A live `airflow api-server` serving the plugin, receiving webhooks the Kombo sandbox signs and sends.

One api-server per module (about 10-20 s to start). Its webhook secrets come from the Airflow connection
`kombo_webhook` (password = current secret, `previous_secrets` = the one being rotated out), its state store from
`kombo_state` (a SQLite file this test reads too), the inline flow's channel from `kombo_platform`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kombo_sync.kombo.signatures import SIGNATURE_HEADER, sign
from kombo_sync.state.events import WebhookEventLog
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import consume_wakeups, pending_wakeups
from sandbox.platform_app import PlatformSettings
from sandbox.testing import run_platform_standin
from tests.airflow_support import ensure_airflow_db
from tests.support.webhooks import (
    KOMBO_EXAMPLES,
    LiveAirflow,
    encode,
    openapi_examples,
    order_event,
    signed,
)

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SECRET = "live-current-webhook-secret"
OLD_SECRET = "live-previous-webhook-secret"
PLATFORM_KEY = "live-platform-key"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("live-platform") / "warehouse.db"
    server = run_platform_standin(
        settings=PlatformSettings(warehouse_url=f"sqlite:///{warehouse}", api_key=PLATFORM_KEY)
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def state_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('live-state') / 'state.db'}"


def _base_env(state_url: str, platform) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_KOMBO_STATE": json.dumps(
            {"conn_type": "sqlite", "host": state_url.removeprefix("sqlite:///")}
        ),
        "AIRFLOW_CONN_KOMBO_PLATFORM": json.dumps(
            {"conn_type": "http", "host": platform.url, "password": PLATFORM_KEY}
        ),
        "KOMBO_WEBHOOK_SECRET": "",
        "KOMBO_WEBHOOK_SECRETS": "",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def live(state_url, platform, tmp_path_factory):
    ensure_airflow_db()
    env = _base_env(state_url, platform)
    env["AIRFLOW_CONN_KOMBO_WEBHOOK"] = json.dumps(
        {"conn_type": "generic", "password": SECRET, "extra": {"previous_secrets": [OLD_SECRET]}}
    )
    server = LiveAirflow(
        Path(os.environ["AIRFLOW_HOME"]),
        env=env,
        log_dir=tmp_path_factory.mktemp("live-logs"),
        migrate=False,
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def store(live, state_url):
    store = StateStore(state_url)
    store.ensure_migrated()
    yield store
    store.dispose()


@pytest.fixture
def sandbox(kombo_sandbox, live):
    kombo_sandbox.set_webhook(live.webhook_url, secret=SECRET)
    return kombo_sandbox


@pytest.fixture
def http():
    with httpx.Client(timeout=10.0) as client:
        yield client


def assert_rejection(delivery, *words):
    assert delivery["status_code"] == 422, delivery
    assert delivery["json"]["status"] == "ORDER_REJECTED" and set(delivery["json"]) == {"status", "message"}
    for word in words:
        assert word in delivery["json"]["message"]
    # Kombo (the sandbox) took it as a rejection: the order is REJECTED there, with our message.
    assert delivery["order"]["status"] == "REJECTED"


def new_integration(sandbox, **kwargs):
    created = sandbox.admin.create_integration(tool="greenhouse", **kwargs)
    return created["id"], created.get("webhook")


# Integrations ----------------------------------------------------------------------------------------------


def test_integration_created_registers_it_and_requests_a_package_sync(sandbox, store):
    consume_wakeups(store, "integrations")
    integration_id, delivery = new_integration(sandbox, origin_id="customer-7")
    assert delivery["status_code"] == 200, delivery
    record = IntegrationRepository(store).get(integration_id)
    assert record is not None and record.customer_key == "customer-7" and record.status == "ACTIVE"
    assert wakeups_settle(store, topic="integrations") == 1


def test_state_changes_and_deletion_maintain_the_registry(sandbox, store):
    integration_id, _ = new_integration(sandbox)
    sandbox.admin.set_integration_state(integration_id, status="INVALID")
    assert IntegrationRepository(store).get(integration_id).status == "INVALID"
    rejected = sandbox.admin.create_order(integration_id, "pkg-1")
    assert_rejection(rejected["webhook"] | {"order": sandbox.admin.get_order(rejected["id"])}, "not active")

    sandbox.admin.set_integration_state(integration_id, status="ACTIVE")
    accepted = sandbox.admin.create_order(integration_id, "pkg-1")
    assert accepted["webhook"]["status_code"] == 200
    assert OrderRepository(store).get(accepted["id"]).state == "received"

    sandbox.admin.delete_integration(integration_id, emit_webhook=True)
    record = IntegrationRepository(store).get(integration_id)
    assert record.status == "DELETED"
    # All work for it stops: its waiting order will not be invited, and new orders are refused.
    assert OrderRepository(store).get(accepted["id"]).state == "cancelled"


# assessment:order-received ---------------------------------------------------------------------------------


def wakeups_settle(store, timeout: float = 10.0, topic: str = "orders") -> int:
    """Pending wake-ups of `topic` once the api-server's coalescing window (KOMBO_WEBHOOK_WAKEUP_WINDOW_MS, 200 ms)
    has passed with nothing new: the count seen twice in a row, 0.5 s apart (its writer thread requests them
    after the answer)."""
    deadline = time.monotonic() + timeout
    seen = pending_wakeups(store, topic)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = pending_wakeups(store, topic)
        if now == seen and now > 0:
            return now
        seen = now
    return seen


def test_accepted_order_is_recorded_once_and_wakes_the_intake(sandbox, store):
    integration_id, _ = new_integration(sandbox)
    consume_wakeups(store, "orders")
    order = sandbox.admin.create_order(integration_id, "pkg-1")
    delivery = order["webhook"]
    assert delivery["status_code"] == 200 and delivery["json"]["status"] == "ACCEPTED"
    record = OrderRepository(store).get(order["id"])
    assert (record.state, record.first_seen_via, record.integration_id) == (
        "received",
        "webhook",
        integration_id,
    )
    # The wake-up is written just after the answer, by the worker's wake-up thread (kombo_sync.wakeups).
    assert wakeups_settle(store) == 1
    assert sandbox.admin.get_order(order["id"])["status"] == "OPEN"

    # Kombo delivers at least once: the same event again gets the same answer and changes nothing.
    again = sandbox.admin.redeliver_webhook(delivery["event_id"])
    assert (again["status_code"], again["json"]) == (200, delivery["json"])
    assert OrderRepository(store).get(order["id"]) == record
    assert wakeups_settle(store) == 1


def test_rule_unknown_integration(sandbox):
    integration_id, delivery = new_integration(sandbox, emit_webhook=False)
    assert delivery is None
    order = sandbox.admin.create_order(integration_id, "pkg-1")
    assert_rejection(order["webhook"] | {"order": sandbox.admin.get_order(order["id"])}, "not known")


def test_rule_deleted_integration(sandbox):
    integration_id, _ = new_integration(sandbox)
    sandbox.admin.delete_integration(integration_id, emit_webhook=True)
    # The sandbox refuses orders for a deleted integration, so the event is sent verbatim.
    event = order_event(integration_id=integration_id)
    delivery = sandbox.admin.send_webhook(
        "assessment:order-received", data=event["data"], apply_rejection=False
    )
    assert delivery["status_code"] == 422 and "removed" in delivery["json"]["message"]


def test_rule_disabled_integration(sandbox, store):
    integration_id, _ = new_integration(sandbox)
    IntegrationRepository(store).set_enabled(integration_id, False)
    order = sandbox.admin.create_order(integration_id, "pkg-1")
    assert_rejection(order["webhook"] | {"order": sandbox.admin.get_order(order["id"])}, "switched off")


def test_rule_package_not_entitled(sandbox, store):
    integration_id, _ = new_integration(sandbox)
    IntegrationRepository(store).set_settings(integration_id, {"published_package_ids": ["pkg-python"]})
    refused = sandbox.admin.create_order(integration_id, "pkg-cobol")
    assert_rejection(refused["webhook"] | {"order": sandbox.admin.get_order(refused["id"])}, "'pkg-cobol'")
    allowed = sandbox.admin.create_order(integration_id, "pkg-python")
    assert allowed["webhook"]["status_code"] == 200


def test_rule_active_duplicate(sandbox):
    integration_id, _ = new_integration(sandbox)
    candidate = {"email": "jane.roe@example.com", "first_name": "Jane", "last_name": "Roe"}
    application = {"remote_id": "app-1"}
    first = sandbox.admin.create_order(integration_id, "pkg-1", candidate=candidate, application=application)
    assert first["webhook"]["status_code"] == 200
    second = sandbox.admin.create_order(integration_id, "pkg-1", candidate=candidate, application=application)
    assert_rejection(second["webhook"] | {"order": sandbox.admin.get_order(second["id"])}, first["id"])


@pytest.mark.parametrize("email", ["jane@localhost", "jane@acme.invalid", "jane.roe.example.com"])
def test_rule_email_cannot_receive_an_invitation(sandbox, email):
    integration_id, _ = new_integration(sandbox)
    order = sandbox.admin.create_order(integration_id, "pkg-1", candidate={"email": email})
    assert_rejection(order["webhook"] | {"order": sandbox.admin.get_order(order["id"])}, "e-mail address")


# inline-assessment:order-received --------------------------------------------------------------------------


def test_inline_order_answers_with_the_platform_invitation_url(sandbox, platform, store):
    integration_id, _ = new_integration(sandbox)
    delivery = sandbox.admin.send_webhook("inline-assessment:order-received", integration_id=integration_id)
    assert delivery["status_code"] == 200, delivery
    url = delivery["json"]["assessment_url"]
    assert url.startswith("http")
    order_id = delivery["order"]["id"]
    record = OrderRepository(store).get(order_id)
    assert record.state == "invited" and record.invitation_url == url and record.channel == "platform"
    invitations = platform.admin.invitations()
    assert order_id in json.dumps(invitations)


def test_inline_order_when_the_platform_fails_is_not_rejected(sandbox, platform, store):
    integration_id, _ = new_integration(sandbox)
    platform.admin.set_knobs(failure_rate=1.0)
    try:
        delivery = sandbox.admin.send_webhook(
            "inline-assessment:order-received", integration_id=integration_id
        )
    finally:
        platform.admin.set_knobs(failure_rate=0.0)
    assert delivery["status_code"] == 503, delivery
    assert delivery["order"]["status"] == "OPEN"  # Kombo keeps it for the poll
    assert OrderRepository(store).get(delivery["order"]["id"]).state == "received"
    # Kombo retries the delivery: now the platform works and the candidate gets the link.
    again = sandbox.admin.redeliver_webhook(delivery["event_id"])
    assert again["status_code"] == 200 and again["json"]["assessment_url"]


# Security and bad input, as any sender could send them ------------------------------------------------------


def test_signature_is_checked(sandbox, live, store):
    integration_id, _ = new_integration(sandbox)
    forged = sandbox.admin.send_webhook(
        "assessment:order-received", integration_id=integration_id, bad_signature=True
    )
    assert forged["status_code"] == 401
    assert WebhookEventLog(store).get(forged["event_id"]) is None
    assert OrderRepository(store).get(forged["order"]["id"]) is None
    # During a rotation the previous secret is still accepted; any other is not.
    sandbox.set_webhook(live.webhook_url, secret=OLD_SECRET)
    assert (
        sandbox.admin.send_webhook("assessment:order-received", integration_id=integration_id)["status_code"]
        == 200
    )
    sandbox.set_webhook(live.webhook_url, secret="a-retired-secret")
    assert (
        sandbox.admin.send_webhook("assessment:order-received", integration_id=integration_id)["status_code"]
        == 401
    )


def test_bad_input_gets_a_clear_4xx_and_records_nothing(live, http, store):
    url = live.webhook_url
    body, headers = signed(order_event(), SECRET)
    assert http.post(url, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    assert http.post(url, content=body, headers={**headers, "Content-Type": "text/plain"}).status_code == 415
    too_big = b'{"pad":"' + b"x" * (1024 * 1024) + b'"}'
    response = http.post(
        url,
        content=too_big,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(too_big, SECRET)},
    )
    assert response.status_code == 413
    not_json = b"{not json"
    response = http.post(
        url,
        content=not_json,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(not_json, SECRET)},
    )
    assert response.status_code == 400 and response.json()["error"] == "INVALID_JSON"
    broken = order_event()
    del broken["data"]["candidate"]["email"]
    body, headers = signed(broken, SECRET)
    response = http.post(url, content=body, headers=headers)
    assert response.status_code == 400 and response.json()["fields"] == ["data.candidate.email"]
    assert WebhookEventLog(store).get(broken["id"]) is None
    assert "Traceback" not in response.text


def test_unknown_event_type_is_200_recorded_and_ignored(live, http, store):
    body, headers = signed(
        {"id": "evt-live-unknown", "type": "sync-finished", "data": {"sync_id": "x"}}, SECRET
    )
    response = http.post(live.webhook_url, content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "IGNORED"
    assert WebhookEventLog(store).get("evt-live-unknown").response_status == 200


def test_kombos_own_examples_are_accepted(sandbox, store, http, live):
    examples = openapi_examples()
    assert examples, "docs/kombo/openapi-assessment.json is missing"
    assert set(examples) == set(KOMBO_EXAMPLES)
    IntegrationRepository(store).upsert(
        examples["assessment:order-received"]["data"]["integration_id"], source="admin"
    )
    for index, (event_type, example) in enumerate(sorted(examples.items())):
        # The examples share one event id: each is sent as its own event, with its example data verbatim.
        delivery = sandbox.admin.send_webhook(
            event_type,
            data=copy.deepcopy(example["data"]),
            event_id=f"{example['id']}-{index}",
            apply_rejection=False,
        )
        assert delivery["status_code"] == 200, (event_type, delivery)


def test_fuzz_against_the_live_endpoint_finds_no_5xx(live, http):
    statuses: list[int] = []
    base = order_event()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        path=st.sampled_from(
            ["id", "type", "data", "data.id", "data.candidate", "data.candidate.email", "data.job"]
        ),
        value=st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just("\x00"),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
            ),
            max_leaves=10,
        ),
        raw=st.none() | st.binary(max_size=64),
    )
    def run(path, value, raw):
        event = copy.deepcopy(base)
        event["id"] = f"fuzz-{len(statuses)}"
        *parents, last = path.split(".")
        node = event
        for part in parents:
            node = node[part]
        node[last] = value
        body = raw if raw is not None else encode(event)
        response = http.post(
            live.webhook_url,
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, SECRET)},
        )
        statuses.append(response.status_code)
        assert response.status_code < 500, (response.status_code, response.text)
        assert "Traceback" not in response.text

    run()
    assert len(statuses) >= 60 and set(statuses) & {400}


# No secret, no service -------------------------------------------------------------------------------------


def test_without_any_secret_every_request_is_503_and_the_log_says_why(
    state_url, platform, tmp_path_factory, http
):
    server = LiveAirflow(
        Path(os.environ["AIRFLOW_HOME"]),
        env=_base_env(state_url, platform),
        log_dir=tmp_path_factory.mktemp("live-nosecret-logs"),
        migrate=False,
    ).start()
    try:
        body, headers = signed(order_event(), SECRET)
        for content, request_headers in (
            (body, headers),
            (b"junk", {}),
            (b"{}", {"Content-Type": "application/json"}),
        ):
            response = http.post(server.webhook_url, content=content, headers=request_headers)
            assert response.status_code == 503
            assert response.json()["error"] == "WEBHOOK_DISABLED"
    finally:
        server.stop()
    log = server.log_text()
    assert "no webhook secret configured" in log and "kombo_webhook" in log
    assert SECRET not in log
