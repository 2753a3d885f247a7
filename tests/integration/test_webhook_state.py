"""The webhook handlers on the real state databases (SQLite and PostgreSQL): concurrency, dedupe, fuzzing."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kombo_sync.settings import PipelineSettings
from kombo_sync.state.events import WebhookEventLog
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.schema import orders, webhook_events
from kombo_sync.wakeups import consume_wakeups, pending_wakeups, request_wakeup
from kombo_sync.webhooks.handlers import WebhookDeps, handle_webhook
from tests.support.webhooks import KOMBO_EXAMPLES, encode, integration_event, order_event, signed

SECRET = "whsec_state"
INTEGRATION = "workday:CBNMt7dSNCzBdnRTx87dev4E"


def deps_for(store) -> WebhookDeps:
    return WebhookDeps(secrets=lambda: [SECRET], store=store, settings=PipelineSettings())


def deliver(store, event):
    body, headers = signed(event, SECRET)
    return handle_webhook(body, headers, deps_for(store))


def count(store, table) -> int:
    with store.transaction(readonly=True) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


@pytest.fixture
def registered(state_store):
    IntegrationRepository(state_store).upsert(INTEGRATION, source="admin", category="ASSESSMENT")
    return state_store


def test_order_flow_and_redelivery(registered):
    store = registered
    event = order_event()
    first = deliver(store, event)
    assert first.status_code == 200
    again = deliver(store, event)
    assert (again.status_code, again.body) == (first.status_code, first.body)
    assert OrderRepository(store).get(event["data"]["id"]).state == "received"
    assert count(store, orders) == 1 and count(store, webhook_events) == 1
    assert consume_wakeups(store, "orders") == 1


def test_rules_on_this_database(registered):
    store = registered
    assert deliver(store, order_event(email="Jane@Example.com")).status_code == 200
    duplicate = deliver(store, order_event(email="jane@example.com"))
    assert duplicate.status_code == 422 and duplicate.body["status"] == "ORDER_REJECTED"
    unknown = deliver(store, order_event(integration_id="lever:unknown"))
    assert unknown.status_code == 422


def test_integration_events_on_this_database(state_store):
    store = state_store
    assert deliver(store, integration_event("integration-created", "lever:x")).status_code == 200
    assert pending_wakeups(store, "integrations") == 1
    assert deliver(store, order_event(integration_id="lever:x")).status_code == 200
    assert deliver(store, integration_event("integration-deleted", "lever:x")).status_code == 200
    assert IntegrationRepository(store).get("lever:x").status == "DELETED"
    assert OrderRepository(store).counts_by_state("lever:x")["cancelled"] == 1


def test_an_accepted_order_is_one_transaction(registered):
    store = registered
    first = order_event(email="first@example.com")
    assert deliver(store, first).status_code == 200  # the intake's wake-up is pending from now on
    seen: Counter[str] = Counter()

    def listener(name):
        return lambda *args, **kwargs: seen.update([name])

    statements: list[str] = []
    hooks = {name: listener(name) for name in ("checkout", "commit", "rollback")}
    hooks["before_cursor_execute"] = lambda _conn, _cursor, statement, *args: statements.append(statement)
    for name, hook in hooks.items():
        sa.event.listen(store.engine, name, hook)
    try:
        event = order_event(email="second@example.com")
        response = deliver(store, event)
    finally:
        for name, hook in hooks.items():
            sa.event.remove(store.engine, name, hook)
    assert response.status_code == 200 and response.body["status"] == "ACCEPTED"
    # Three statements for the order itself: the event, the order, its integration and the duplicate rule's
    # question read in one; the order's insert; the event's insert with its answer. The rest is the intake's
    # wake-up (SQLite: inside the transaction; PostgreSQL: after the commit).
    order_statements = [text.split()[0] for text in statements if " wakeups" not in text]
    order_statements = [word for word in order_statements if word != "PRAGMA"]
    if store.dialect == "sqlite":
        # The read first, in a read-only transaction (no write lock: `BEGIN DEFERRED`), then the write transaction
        # (`BEGIN IMMEDIATE`, sent on the driver's cursor) with the two inserts: two commits.
        assert order_statements == ["BEGIN", "SELECT", "INSERT", "INSERT"], statements
        assert statements[0] == "BEGIN DEFERRED", statements
        assert (seen["checkout"], seen["commit"]) == (2, 2), seen
    else:
        # One transaction; PostgreSQL then reads the wake-up counter on a second, autocommit connection.
        assert order_statements == ["SELECT", "INSERT", "INSERT"], statements
        assert (seen["checkout"], seen["commit"]) == (2, 1), seen
    assert OrderRepository(store).get(event["data"]["id"]).state == "received"
    assert WebhookEventLog(store).get(event["id"]).response_status == 200
    assert pending_wakeups(store, "orders") == 1


def test_same_event_delivered_concurrently_is_processed_once(registered, make_state_store):
    event = order_event()
    body, headers = signed(event, SECRET)
    stores = [make_state_store() for _ in range(6)]
    barrier = threading.Barrier(len(stores))

    def send(store):
        barrier.wait()
        return handle_webhook(body, headers, deps_for(store))

    with ThreadPoolExecutor(len(stores)) as pool:
        answers = list(pool.map(send, stores))
    codes = sorted(answer.status_code for answer in answers)
    # One delivery processes it; the others see it either in progress (409, Kombo retries) or answered.
    assert set(codes) <= {200, 409} and 200 in codes
    assert count(registered, orders) == 1 and count(registered, webhook_events) == 1
    assert deliver(registered, event).status_code == 200


def test_delivery_that_loses_the_race_for_its_event_answers_what_the_first_stored(
    registered, make_state_store, caplog
):
    """A delivery decides while the same event's first delivery is still open; the first commits its answer;
    the second's work is rolled back and it answers with the first's stored answer."""
    caplog.set_level(logging.INFO, logger="kombo_sync.webhooks.transaction")
    event = order_event()
    first_store = make_state_store()
    first_answer = {"status": "ORDER_REJECTED", "message": "decided by the first delivery"}
    holding = threading.Event()
    release = threading.Event()

    def first_delivery() -> None:
        with first_store.transaction() as conn:
            assert WebhookEventLog(first_store).record_answered(
                event["id"], event["type"], INTEGRATION, event["data"]["id"], 422, first_answer, conn=conn
            )
            holding.set()
            release.wait(30)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(first_delivery)
        assert holding.wait(30)
        second = pool.submit(deliver, make_state_store(), event)
        time.sleep(
            0.5
        )  # the second is now waiting at the event's insert (PostgreSQL) or the write lock (SQLite)
        release.set()
        first.result(30)
        answer = second.result(30)
    assert (answer.status_code, answer.body) == (422, first_answer)
    if (
        registered.dialect == "postgresql"
    ):  # SQLite's second delivery waited for the write lock before reading
        assert "a concurrent delivery answered first" in caplog.text
    # The second delivery's order insert was rolled back with the rest of its transaction.
    assert count(registered, orders) == 0 and count(registered, webhook_events) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("state_store", ["postgres"], indirect=True)
def test_connection_broken_in_use_is_retried_once(registered, make_state_store, caplog):
    """The server ended the pooled connection (a restart) while it was in steady use, so it is not pinged:
    the event's first statement fails, and the event is decided again on a new connection."""
    store = registered
    assert deliver(store, order_event(email="warm@example.com")).status_code == 200
    with store.transaction() as conn:
        pids = [conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()]
    with make_state_store().transaction() as conn:
        for pid in pids:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    event = order_event(email="after-restart@example.com")
    answer = deliver(store, event)
    assert answer.status_code == 200 and answer.body["status"] == "ACCEPTED"
    assert "the state store connection broke; trying again" in caplog.text
    assert OrderRepository(store).get(event["data"]["id"]).state == "received"
    assert WebhookEventLog(store).get(event["id"]).response_status == 200


def test_same_order_in_different_events_concurrently_is_recorded_once(registered, make_state_store):
    order_id = "order-raced"
    events = [order_event(order_id=order_id) for _ in range(6)]
    stores = [make_state_store() for _ in events]
    barrier = threading.Barrier(len(stores))

    def send(pair):
        store, event = pair
        barrier.wait()
        body, headers = signed(event, SECRET)
        return handle_webhook(body, headers, deps_for(store))

    with ThreadPoolExecutor(len(stores)) as pool:
        answers = list(pool.map(send, zip(stores, events, strict=True)))
    assert all(answer.status_code == 200 for answer in answers), [a.body for a in answers]
    assert count(registered, orders) == 1
    assert OrderRepository(registered).get(order_id).state == "received"


def test_two_triggerers_never_both_consume_a_wakeup(state_store, make_state_store):
    consumers = [make_state_store(), make_state_store()]
    consumed: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume(store):
        while not stop.is_set():
            got = consume_wakeups(store, "orders")
            if got:
                with lock:
                    consumed.append(got)

    threads = [threading.Thread(target=consume, args=(store,)) for store in consumers]
    for thread in threads:
        thread.start()
    for _ in range(100):
        with state_store.transaction() as conn:
            request_wakeup(state_store, "orders", conn=conn)
    stop.set()
    for thread in threads:
        thread.join()
    consumed.append(consume_wakeups(state_store, "orders"))
    assert sum(consumed) == 100


@pytest.mark.parametrize("event_type", sorted(KOMBO_EXAMPLES))
def test_kombo_examples_on_this_database(registered, event_type):
    deps = WebhookDeps(
        secrets=lambda: [SECRET],
        store=registered,
        settings=PipelineSettings(),
        inviter=object(),
        invite_now=lambda *args: "https://assess.example.com/x",
    )
    body, headers = signed(KOMBO_EXAMPLES[event_type], SECRET)
    assert handle_webhook(body, headers, deps).status_code == 200


text_values = st.text(max_size=30) | st.sampled_from(["\x00", "a\x00b", "\ud800", "x" * 400, "é@ü.de", ""])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | text_values,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text_values, children, max_size=3),
    max_leaves=15,
)


def test_fuzz_on_this_database_finds_no_5xx(registered):
    deps = WebhookDeps(
        secrets=lambda: [SECRET],
        store=registered,
        settings=PipelineSettings(),
        inviter=object(),
        invite_now=lambda *args: "https://assess.example.com/x",
    )
    bases = [
        order_event(),
        *(
            integration_event(t, "lever:fuzz")
            for t in ("integration-created", "integration-state-changed", "integration-deleted")
        ),
    ]

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=st.data())
    def run(data):
        event = data.draw(st.sampled_from(bases))
        event = {**event, "id": data.draw(text_values | st.just("evt")), "data": dict(event["data"])}
        key = data.draw(st.sampled_from(sorted(event["data"])))
        event["data"][key] = data.draw(json_values)
        body = encode(event)
        body, headers = signed(body, SECRET)
        response = handle_webhook(body, headers, deps)
        assert response.status_code < 500, (response.status_code, response.body)

    run()


def test_coalesced_wakeups_follow_the_commits_of_concurrent_orders(registered):
    """With the production window, 60 orders from 6 threads are all recorded, the triggerer is asked to fire
    after the last commit (nothing is lost when it consumes mid-burst), and far fewer wake-ups are written."""
    store = registered
    deps = WebhookDeps(secrets=lambda: [SECRET], store=store, settings=PipelineSettings(), wakeup_window=0.1)
    events = [order_event(email=f"c{index}@example.com") for index in range(60)]
    consumed: list[int] = []

    def send(event):
        body, headers = signed(event, SECRET)
        status = handle_webhook(body, headers, deps).status_code
        if len(consumed) < 3:
            consumed.append(consume_wakeups(store, "orders"))  # the triggerer firing mid-burst
        return status

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(send, events))
    assert statuses == [200] * 60
    assert count(store, orders) == 60
    batcher = deps.wakeups()
    assert batcher is not None
    deadline = threading.Event()
    for _ in range(100):  # within a window or two after the last order
        if pending_wakeups(store, "orders") == 1:
            break
        deadline.wait(0.02)
    assert pending_wakeups(store, "orders") == 1
    assert batcher.writes < 30
