"""OrderRepository on SQLite and PostgreSQL: idempotent recording, the state machine, claims with leases."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from kombo_sync.state.orders import (
    _HELD_FOR_INVITE_LOCKED,
    ALLOWED_TRANSITIONS,
    InvalidTransition,
    OrderNotFound,
    OrderRepository,
    SentInvitation,
    active_duplicate_query,
)
from kombo_sync.state.schema import ORDER_STATES, invitations, orders
from kombo_sync.state.store import StateStore

INTEGRATION = "workday:HWUTwvyx2wLoSUHphiWVrp28"


def kombo_order(order_id: str, **overrides: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": order_id,
        "integration_id": INTEGRATION,
        "package_id": "typescript_test",
        "status": "OPEN",
        "candidate": {
            "remote_id": f"cand-{order_id}",
            "email": f"{order_id}@candidates.example",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": "+44 20 0000 0000",
        },
        "application": {"remote_id": f"app-{order_id}"},
        "job": {
            "remote_id": "job-1",
            "name": "Data Engineer",
            "job_code": None,
            "location": None,
            "hiring_team": [],
        },
    }
    order.update(overrides)
    return order


@pytest.fixture
def repo(state_store: StateStore) -> OrderRepository:
    return OrderRepository(state_store)


def test_record_order_is_idempotent_and_first_writer_wins(repo: OrderRepository, state_clock: Any) -> None:
    first = repo.record_order(kombo_order("o1"), "webhook")
    assert (first.created, first.state) == (True, "received")
    received_at = state_clock()
    state_clock.advance(60)
    again = repo.record_order(kombo_order("o1", status="CANCELLED"), "poll")
    assert (again.created, again.state) == (False, "received")
    order = repo.get("o1")
    assert order is not None
    assert order.first_seen_via == "webhook"
    assert order.received_at == received_at
    assert order.kombo_status == "CANCELLED"
    assert order.order_json["status"] == "CANCELLED"
    assert order.updated_at == received_at + timedelta(seconds=60)
    assert (order.candidate_email, order.application_remote_id, order.job_name) == (
        "o1@candidates.example",
        "app-o1",
        "Data Engineer",
    )
    assert repo.counts_by_state()["received"] == 1


def test_poll_orders_take_the_integration_id_from_the_caller(repo: OrderRepository) -> None:
    polled = kombo_order("o1")
    del polled["integration_id"]
    with pytest.raises(ValueError, match="integration_id"):
        repo.record_order(polled, "poll")
    assert repo.record_order(polled, "poll", integration_id=INTEGRATION).created
    order = repo.get("o1")
    assert order is not None and order.integration_id == INTEGRATION
    with pytest.raises(ValueError, match="seen_via"):
        repo.record_order(kombo_order("o2"), "email")


def test_candidate_data_stays_out_of_reprs(repo: OrderRepository) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    order = repo.get("o1")
    claimed = repo.claim_orders_for_invite("w1", 60, 10)
    for text in (repr(order), repr(claimed)):
        assert "o1@candidates.example" not in text and "Lovelace" not in text and "+44" not in text
        assert "o1" in text


def test_webhook_and_poll_record_the_same_orders_at_once(
    repo: OrderRepository, make_state_store: Callable[[], StateStore]
) -> None:
    ids = [f"race{n}" for n in range(15)]
    repos = [OrderRepository(make_state_store()) for _ in range(6)]
    barrier = threading.Barrier(len(repos))

    def record(index: int) -> list[bool]:
        barrier.wait()
        via = "webhook" if index % 2 else "poll"
        return [repos[index].record_order(kombo_order(order_id), via).created for order_id in ids]

    with ThreadPoolExecutor(len(repos)) as pool:
        results = list(pool.map(record, range(len(repos))))
    created_per_order = [sum(result[n] for result in results) for n in range(len(ids))]
    assert created_per_order == [1] * len(ids)
    assert repo.counts_by_state()["received"] == len(ids)


def test_transition_table_is_the_documented_one() -> None:
    assert ALLOWED_TRANSITIONS == {
        ("received", "inviting"),
        ("inviting", "inviting"),  # re-claim after the lease expired
        ("inviting", "invited"),
        ("inviting", "received"),
        ("received", "failed"),
        ("inviting", "failed"),
        ("received", "duplicate"),
        ("inviting", "duplicate"),  # by the lease holder only
        ("received", "rejected"),
        ("inviting", "rejected"),  # by the lease holder only
        ("received", "cancelled"),
        ("inviting", "cancelled"),
        ("invited", "cancelled"),  # cancel_invitation: the reconcile job, after revoking the invitation
    }


def _order_in(repo: OrderRepository, state: str, order_id: str) -> str:
    """Drive a new order into `state` through the repository's own transitions."""
    integration = f"tool:{order_id}"
    repo.record_order(kombo_order(order_id, integration_id=integration), "webhook")
    if state == "received":
        return order_id
    if state in ("inviting", "invited"):
        claimed = repo.claim_orders_for_invite("holder", 300, 1, integration_ids=[integration])
        assert [claim.order_id for claim in claimed] == [order_id]
        if state == "invited":
            assert repo.mark_invited(order_id, "holder", "inv-1", "https://x.example/i", "platform", "inv-1")
        return order_id
    if state == "duplicate":
        repo.record_order(kombo_order(f"{order_id}-original"), "webhook")
        assert repo.mark_duplicate(order_id, f"{order_id}-original")
    elif state == "rejected":
        assert repo.mark_rejected(order_id, "package not entitled")
    elif state == "cancelled":
        assert repo.mark_cancelled(order_id)
    elif state == "failed":
        assert repo.mark_failed(order_id, "no e-mail")
    return order_id


UNFENCED = {
    "failed": lambda repo, order_id: repo.mark_failed(order_id, "gave up"),
    "duplicate": lambda repo, order_id: repo.mark_duplicate(order_id, "someone-else"),
    "rejected": lambda repo, order_id: repo.mark_rejected(order_id, "not entitled"),
    "cancelled": lambda repo, order_id: repo.mark_cancelled(order_id),
}


@pytest.mark.parametrize("target", sorted(UNFENCED))
def test_named_transitions_from_every_state(repo: OrderRepository, target: str) -> None:
    repo.record_order(kombo_order("someone-else"), "webhook")
    for source in ORDER_STATES:
        order_id = _order_in(repo, source, f"{target}-from-{source}")
        if source == "invited" and target == "cancelled":
            # Only `cancel_invitation` (the reconcile job, after revoking) closes an invited order.
            with pytest.raises(InvalidTransition):
                UNFENCED[target](repo, order_id)
            assert repo.cancel_invitation(order_id, reason="cancelled in the ATS") is True
            assert repo.cancel_invitation(order_id, reason="cancelled in the ATS") is False  # repeated
        elif source == "inviting" and target in ("duplicate", "rejected"):
            assert UNFENCED[target](repo, order_id) is False  # someone else holds the lease
            after = repo.get(order_id)
            assert after is not None and after.state == "inviting"
        elif (source, target) in ALLOWED_TRANSITIONS:
            assert UNFENCED[target](repo, order_id) is True
            after = repo.get(order_id)
            assert after is not None and after.state == target
            assert after.lease_owner is None
        elif source == target:
            assert UNFENCED[target](repo, order_id) is False  # repeated: a no-op
        else:
            with pytest.raises(InvalidTransition) as raised:
                UNFENCED[target](repo, order_id)
            assert (raised.value.current, raised.value.target) == (source, target)
            after = repo.get(order_id)
            assert after is not None and after.state == source
    with pytest.raises(OrderNotFound):
        UNFENCED[target](repo, "missing")


@pytest.mark.parametrize("target", ["duplicate", "rejected"])
def test_the_lease_holder_closes_a_claimed_order_directly(repo: OrderRepository, target: str) -> None:
    """No detour through `received` (which logged "released for retry" right before a final state)."""
    repo.record_order(kombo_order("original"), "webhook")
    order_id = _order_in(repo, "inviting", f"claimed-{target}")
    close = {
        "duplicate": lambda owner: repo.mark_duplicate(order_id, "original", owner=owner),
        "rejected": lambda owner: repo.mark_rejected(
            order_id, "Kombo lists the order as REJECTED", owner=owner
        ),
    }[target]
    assert close("stranger") is False
    assert close("holder") is True
    after = repo.get(order_id)
    assert after is not None and after.state == target and after.lease_owner is None


def test_lease_fenced_transitions_from_every_state(repo: OrderRepository, state_store: StateStore) -> None:
    retry_at = state_store.now() + timedelta(minutes=5)
    for source in ORDER_STATES:
        invited_id = _order_in(repo, source, f"invite-from-{source}")
        marked = repo.mark_invited(invited_id, "holder", "inv", "https://x.example/i", "email", "<msg@x>")
        assert marked is (source == "inviting")
        after = repo.get(invited_id)
        assert after is not None and after.state == ("invited" if source == "inviting" else source)

        released_id = _order_in(repo, source, f"release-from-{source}")
        released = repo.release_with_error(released_id, "holder", "platform 503", retry_at)
        assert released is (source == "inviting")
        after = repo.get(released_id)
        assert after is not None and after.state == ("received" if source == "inviting" else source)
    with pytest.raises(OrderNotFound):
        repo.mark_invited("missing", "holder", None, None, "email", None)
    with pytest.raises(OrderNotFound):
        repo.release_with_error("missing", "holder", "x", retry_at)


def test_mark_invited_writes_the_invitation_and_a_stale_owner_cannot(
    repo: OrderRepository, state_store: StateStore, state_clock: Any
) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    [first] = repo.claim_orders_for_invite("worker-a", lease_seconds=60, limit=5)
    assert (first.order_id, first.attempts, first.lease_owner) == ("o1", 1, "worker-a")
    assert first.candidate_email == "o1@candidates.example"
    assert repo.claim_orders_for_invite("worker-b", 60, 5) == []  # lease still held

    state_clock.advance(61)
    [second] = repo.claim_orders_for_invite("worker-b", 60, 5)
    assert (second.order_id, second.attempts, second.lease_owner) == ("o1", 2, "worker-b")

    assert repo.mark_invited("o1", "worker-a", "inv-a", "https://a", "platform", "inv-a") is False
    assert repo.release_with_error("o1", "worker-a", "late", state_clock()) is False
    assert repo.mark_failed("o1", "late", owner="worker-a") is False
    assert repo.mark_invited("o1", "worker-b", "inv-b", "https://b", "platform", "inv-b") is True
    order = repo.get("o1")
    assert order is not None
    assert (order.state, order.invitation_id, order.channel, order.lease_owner) == (
        "invited",
        "inv-b",
        "platform",
        None,
    )
    assert order.invited_at == state_clock()
    with state_store.transaction(readonly=True) as conn:
        rows = conn.execute(sa.select(invitations)).mappings().all()
    assert [(row["order_id"], row["external_id"], row["attempt"], row["channel"]) for row in rows] == [
        ("o1", "inv-b", 2, "platform")
    ]
    assert repo.claim_orders_for_invite("worker-c", 60, 5) == []


def test_an_expired_lease_nobody_took_is_still_honoured(repo: OrderRepository, state_clock: Any) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    repo.claim_orders_for_invite("worker-a", 60, 5)
    state_clock.advance(3600)
    assert repo.mark_invited("o1", "worker-a", "inv", "https://a", "email", "<id@smtp>") is True


def test_a_retry_takes_over_the_orders_its_killed_try_had_claimed(
    repo: OrderRepository, state_clock: Any
) -> None:
    """Only leases of other tries of the same task instance end early; LIKE wildcards in run ids are literal."""
    for order_id in ("o1", "o2", "o3"):
        repo.record_order(kombo_order(order_id), "webhook")
    killed = "intake:manual__50%_off:dispatch:1:host:11"
    repo.claim_orders_for_invite(killed, 300, 1)
    repo.claim_orders_for_invite("intake:manual__50%_off:poll:1:host:12", 300, 1)  # another task
    repo.claim_orders_for_invite("intake:manual__50X_off:dispatch:1:host:13", 300, 1)  # another run
    retry = "intake:manual__50%_off:dispatch:2:host:14"
    assert repo.claim_orders_for_invite(retry, 300, 5) == []

    assert repo.expire_leases_of_earlier_tries("intake:manual__50%_off:dispatch:", retry) == 1
    [taken] = repo.claim_orders_for_invite(retry, 300, 5)
    assert (taken.order_id, taken.attempts, taken.lease_owner) == ("o1", 2, retry)
    # The retry's own lease is not ended by itself, and nothing is left to take over.
    assert repo.expire_leases_of_earlier_tries("intake:manual__50%_off:dispatch:", retry) == 0
    assert repo.mark_invited("o1", killed, "inv", "https://a", "platform", "inv") is False


def test_release_with_error_retries_only_when_due(repo: OrderRepository, state_clock: Any) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    repo.claim_orders_for_invite("w", 60, 5)
    assert repo.release_with_error("o1", "w", "platform answered 503", state_clock() + timedelta(minutes=5))
    order = repo.get("o1")
    assert order is not None
    assert (order.state, order.last_error, order.lease_owner) == ("received", "platform answered 503", None)
    assert repo.claim_orders_for_invite("w", 60, 5) == []
    state_clock.advance(minutes=5)
    [again] = repo.claim_orders_for_invite("w", 60, 5)
    assert again.attempts == 2


def test_cancel_while_inviting_fences_out_the_sender(repo: OrderRepository) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    repo.claim_orders_for_invite("w", 60, 5)
    assert repo.mark_cancelled("o1") is True
    assert repo.mark_invited("o1", "w", "inv", None, "platform", None) is False
    order = repo.get("o1")
    assert order is not None and order.state == "cancelled"


def test_claim_respects_limit_order_and_integrations(repo: OrderRepository, state_clock: Any) -> None:
    for n in range(5):
        repo.record_order(kombo_order(f"a{n}"), "poll")
        state_clock.advance(1)
    repo.record_order(kombo_order("b0", integration_id="personio:other"), "poll")
    assert [c.order_id for c in repo.claim_orders_for_invite("w", 60, 2)] == ["a0", "a1"]
    assert repo.claim_orders_for_invite("w", 60, 10, integration_ids=[]) == []
    assert [
        c.order_id for c in repo.claim_orders_for_invite("w", 60, 10, integration_ids=["personio:other"])
    ] == ["b0"]
    assert [c.order_id for c in repo.claim_orders_for_invite("w", 60, 10)] == ["a2", "a3", "a4"]
    assert repo.counts_by_state(INTEGRATION)["inviting"] == 5
    assert repo.counts_by_state()["inviting"] == 6


@pytest.mark.parametrize("rounds", [4])
def test_concurrent_claimers_never_double_claim(
    repo: OrderRepository, make_state_store: Callable[[], StateStore], rounds: int
) -> None:
    claimers = 4
    repos = [OrderRepository(make_state_store()) for _ in range(2)]
    for round_number in range(rounds):
        integration = f"tool:round{round_number}"
        ids = {f"r{round_number}-{n:03d}" for n in range(200)}
        recorded = repo.record_orders(
            [kombo_order(order_id) for order_id in sorted(ids)], "poll", integration_id=integration
        )
        assert all(result.created for result in recorded)
        barrier = threading.Barrier(claimers)

        def claim_all(worker: int, integration: str = integration) -> list[str]:
            own = repos[worker % len(repos)]
            barrier.wait()
            got: list[str] = []
            while batch := own.claim_orders_for_invite(f"w{worker}", 300, 7, integration_ids=[integration]):
                got.extend(claim.order_id for claim in batch)
            return got

        with ThreadPoolExecutor(claimers) as pool:
            results = list(pool.map(claim_all, range(claimers)))
        flat = [order_id for result in results for order_id in result]
        assert len(flat) == len(set(flat)), "an order was claimed twice"
        assert set(flat) == ids
        counts = repo.counts_by_state(integration)
        assert counts["inviting"] == 200 and counts["received"] == 0
        assert {repo.get(order_id).attempts for order_id in list(ids)[:20]} == {1}  # type: ignore[union-attr]


def test_find_active_duplicate(repo: OrderRepository, state_clock: Any) -> None:
    first = kombo_order(
        "o1", candidate={"email": "Ada.Lovelace@Example.com"}, application={"remote_id": "app-1"}
    )
    repo.record_order(first, "webhook")
    state_clock.advance(1)
    repo.record_order(kombo_order("o2", application={"remote_id": "app-1"}), "webhook")

    def find(email: str = "ada.lovelace@example.COM", **kwargs: Any) -> str | None:
        args = {
            "integration_id": INTEGRATION,
            "package_id": "typescript_test",
            "candidate_email": email,
            "application_remote_id": "app-1",
            "exclude_order_id": "o2",
        }
        args.update(kwargs)
        return repo.find_active_duplicate(**args)

    assert find() == "o1"
    # Same candidate means the same e-mail OR the same ATS application.
    assert find(exclude_order_id="o1") == "o2"  # o2 shares the application
    assert find(package_id="other_test") is None
    assert find(integration_id="personio:x") is None
    assert find(application_remote_id="app-2") == "o1"  # same e-mail, other application
    assert find(application_remote_id=None) == "o1"
    assert find(email="") == "o1"  # same application, no e-mail given
    assert find(email="someone.else@example.com", application_remote_id="app-2") is None
    assert find(email="", application_remote_id=None) is None
    assert repo.mark_duplicate("o2", "o1")
    order = repo.get("o2")
    assert order is not None and (order.state, order.duplicate_of) == ("duplicate", "o1")

    repo.claim_orders_for_invite("w", 60, 5)
    assert repo.mark_invited("o1", "w", "inv", None, "platform", None)
    assert find(exclude_order_id="o3") == "o1"  # invited is still active
    repo.record_order(
        kombo_order("o4", candidate={"email": "x@y.example"}, application={"remote_id": None}), "poll"
    )
    repo.record_order(
        kombo_order("o5", candidate={"email": "X@Y.example"}, application={"remote_id": None}), "poll"
    )
    assert find(email="x@y.example", application_remote_id=None, exclude_order_id="o5") == "o4"
    assert repo.mark_cancelled("o4")
    assert find(email="x@y.example", application_remote_id=None, exclude_order_id="o5") is None


def test_record_orders_records_a_page_in_one_go(repo: OrderRepository) -> None:
    repo.record_order(kombo_order("p2"), "webhook")
    results = repo.record_orders([kombo_order("p1"), kombo_order("p2"), kombo_order("p3")], "poll")
    assert [(r.created, r.state) for r in results] == [
        (True, "received"),
        (False, "received"),
        (True, "received"),
    ]
    seen = repo.get("p2")
    assert seen is not None and seen.first_seen_via == "webhook"


def test_claim_one_given_order(repo: OrderRepository, state_clock: Any) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    repo.claim_orders_for_invite("w", 60, 5)
    repo.release_with_error("o1", "w", "503", state_clock() + timedelta(hours=1))
    claimed = repo.claim_order("o1", "inline", 60)  # not due yet, but the inline flow answers for it now
    assert claimed is not None and (claimed.order_id, claimed.attempts, claimed.lease_owner) == (
        "o1",
        2,
        "inline",
    )
    assert repo.claim_order("o1", "other", 60) is None  # leased
    state_clock.advance(61)
    again = repo.claim_order("o1", "other", 60)
    assert again is not None and again.attempts == 3
    assert repo.mark_invited("o1", "other", "inv", None, "platform", None)
    assert repo.claim_order("o1", "late", 60) is None  # final
    with pytest.raises(OrderNotFound):
        repo.claim_order("missing", "w", 60)


def test_only_an_invited_order_has_its_invitation_cancelled(repo: OrderRepository) -> None:
    """`cancel_invitation` (the reconcile job, after revoking) closes invited orders only; a repeat is a no-op."""
    repo.record_order(kombo_order("someone-else"), "webhook")
    for source in ORDER_STATES:
        order_id = _order_in(repo, source, f"cancel-invitation-from-{source}")
        if source == "invited":
            assert repo.cancel_invitation(order_id, reason="cancelled in the ATS") is True
            after = repo.get(order_id)
            assert after is not None and (after.state, after.last_error) == (
                "cancelled",
                "cancelled in the ATS",
            )
            assert after.invitation_id == "inv-1"  # what was sent stays on record
        elif source == "cancelled":
            assert repo.cancel_invitation(order_id, reason="again") is False
        else:
            with pytest.raises(InvalidTransition):
                repo.cancel_invitation(order_id, reason="cancelled in the ATS")
    with pytest.raises(OrderNotFound):
        repo.cancel_invitation("missing", reason="x")


def test_mark_invited_many_fences_each_order_on_its_own(
    repo: OrderRepository, state_store: StateStore
) -> None:
    """One transaction for a group of sent orders: each is marked invited only if the lease is still ours, with
    its own invitation id, link, channel and `invitations` row; a lost lease or a missing order spoils nothing
    else."""
    held = [_order_in(repo, "inviting", f"group-{n}") for n in range(3)]
    taken = _order_in(repo, "received", "group-taken")
    repo.claim_orders_for_invite("stranger", 300, 1, integration_ids=["tool:group-taken"])
    sent = [
        SentInvitation(
            order_id, "platform" if n else "email", f"inv-{order_id}", f"https://x.example/{n}", None
        )
        for n, order_id in enumerate([*held, taken, "missing"])
    ]
    results = repo.mark_invited_many(sent, "holder")
    assert results == {**dict.fromkeys(held, True), taken: False, "missing": None}
    for n, order_id in enumerate(held):
        after = repo.get(order_id)
        assert after is not None and after.state == "invited" and after.lease_owner is None
        assert (after.invitation_id, after.invitation_url) == (f"inv-{order_id}", f"https://x.example/{n}")
        assert after.channel == ("platform" if n else "email")
    stolen = repo.get(taken)
    assert stolen is not None and stolen.state == "inviting" and stolen.lease_owner == "stranger"
    with state_store.transaction(readonly=True) as conn:
        rows = conn.execute(sa.select(invitations.c.order_id, invitations.c.attempt)).all()
    assert sorted(rows) == sorted((order_id, 1) for order_id in held)
    # Repeated: nothing is ours any more, nothing is written twice.
    assert repo.mark_invited_many(sent[:3], "holder") == dict.fromkeys(held, False)
    with pytest.raises(ValueError, match="once per call"):
        repo.mark_invited_many([sent[0], sent[0]], "holder")


@pytest.mark.postgres
@pytest.mark.parametrize("state_store", ["postgres"], indirect=True)
@pytest.mark.parametrize("by_hash", [False, True], ids=["email+application", "email+hash+application"])
def test_duplicate_lookup_generic_plan_reads_one_candidate_not_the_package(
    repo: OrderRepository, state_store: StateStore, by_hash: bool
) -> None:
    """The webhook's duplicate lookup is a prepared statement: after five executions PostgreSQL may run it with a
    generic plan, chosen without the values. Every branch of that plan must find its candidate through the index
    on its identity column, not read every active order of the package through an index on (integration_id, ...)
    (migration 0013; before it, this plan removed all 400 rows by filter)."""
    # Statistics from when the table was small (a new deployment's first hours), then a busy package.
    with state_store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE orders")
    repo.record_orders([kombo_order(f"bulk{index}") for index in range(400)], "webhook")
    found = active_duplicate_query(
        INTEGRATION,
        "typescript_test",
        "nobody@candidates.example",
        "app-nobody",
        "new-order",
        candidate_email_hash="0" * 64 if by_hash else None,
    )
    assert found is not None
    query, params = found
    compiled = query.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))
    values = [params.get(name, compiled.params.get(name)) for name in compiled.positiontup or ()]
    literals = ", ".join(f"'{value}'" for value in values)  # test data: ids and addresses without quotes
    with state_store.engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        types = ", ".join("text" for _ in values)
        conn.exec_driver_sql(f"PREPARE duplicate_lookup ({types}) AS {compiled}")
        plan = "\n".join(
            row[0]
            for row in conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT TEXT) EXECUTE duplicate_lookup ({literals})"
            )
        )
        conn.exec_driver_sql("DEALLOCATE duplicate_lookup")
    assert "$1" in plan, plan  # the generic plan: parameters, not values
    assert "Rows Removed by Filter" not in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_poll_and_a_dispatch_at_once_do_not_deadlock(
    state_store: StateStore, make_state_store: Any
) -> None:
    """A poll re-recording a page of orders (in Kombo's listing order) while a dispatcher marks some of the same
    orders invited, group by group: both lock the rows in id order, so on PostgreSQL they wait for each other
    instead of deadlocking (the dispatcher's locked read failed with DeadlockDetected when the poll updated the
    page in listing order)."""
    _poll_and_dispatch_at_once(state_store, make_state_store, [f"ord-{n:03d}" for n in range(40)])


# Kombo's ids mix cases; Python's (and a C collation's) order puts "B" before "a", en-US's puts "a" first.
MIXED_CASE_IDS = [f"{prefix}{n:02d}" for n in range(10) for prefix in ("A", "b", "C", "d")]


@pytest.fixture
def linguistic_pg_store(make_pg_database: Callable[..., str], state_clock: Any) -> Iterator[StateStore]:
    """A migrated state store on a PostgreSQL database whose default collation is ICU's en-US."""
    try:
        url = make_pg_database(icu_locale="en-US")
    except sa.exc.DBAPIError as exc:  # a server older than 15, or built without ICU
        reason = f"PostgreSQL cannot create a database with an ICU collation: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires it: {reason}")
        pytest.skip(reason)
    store = StateStore(url, clock=state_clock)
    store.migrate()
    yield store
    store.dispose()


def test_multi_order_writers_lock_in_pythons_order_under_a_linguistic_collation(
    linguistic_pg_store: StateStore,
) -> None:
    """The dispatcher's locked read returns (and so locks) its orders in Python's string order, the order in which
    `record_orders` updates a page, also on a database whose collation orders text otherwise."""
    store = linguistic_pg_store
    repo = OrderRepository(store)
    repo.record_orders([kombo_order(order_id) for order_id in MIXED_CASE_IDS], "poll")
    repo.claim_orders_for_invite("dispatcher", 300, len(MIXED_CASE_IDS))
    with store.transaction() as conn:
        by_collation = list(
            conn.execute(
                sa.select(orders.c.id).where(orders.c.id.in_(MIXED_CASE_IDS)).order_by(orders.c.id)
            ).scalars()
        )
        locked = list(
            conn.execute(_HELD_FOR_INVITE_LOCKED, {"ids": MIXED_CASE_IDS, "owner": "dispatcher"}).scalars()
        )
    assert by_collation != sorted(MIXED_CASE_IDS), "the database's collation orders these ids as Python does"
    assert locked == sorted(MIXED_CASE_IDS)


def test_a_poll_and_a_dispatch_at_once_do_not_deadlock_under_a_linguistic_collation(
    linguistic_pg_store: StateStore, state_clock: Any
) -> None:
    stores: list[StateStore] = []

    def make_store() -> StateStore:
        stores.append(StateStore(linguistic_pg_store.url, clock=state_clock))
        return stores[-1]

    try:
        _poll_and_dispatch_at_once(linguistic_pg_store, make_store, MIXED_CASE_IDS)
    finally:
        for store in stores:
            store.dispose()


def _poll_and_dispatch_at_once(state_store: StateStore, make_state_store: Any, ids: list[str]) -> None:
    repo = OrderRepository(state_store)
    repo.record_orders([kombo_order(order_id) for order_id in ids], "poll")
    assert len(repo.claim_orders_for_invite("dispatcher", 300, len(ids))) == len(ids)
    page = [kombo_order(order_id) for order_id in reversed(ids)]  # the listing's order is not the ids' order
    dispatched = threading.Event()
    polls = 0

    def poll() -> None:
        nonlocal polls
        poller = OrderRepository(make_state_store())
        while not dispatched.is_set() or polls < 3:
            poller.record_orders(page, "poll")
            polls += 1

    def dispatch() -> list[dict[str, bool | None]]:
        dispatcher = OrderRepository(make_state_store())
        try:
            return [
                dispatcher.mark_invited_many(
                    [
                        SentInvitation(order_id, "platform", f"inv-{order_id}", None, None)
                        for order_id in group
                    ],
                    "dispatcher",
                )
                for group in (ids[start : start + 4] for start in range(0, len(ids), 4))
            ]
        finally:
            dispatched.set()

    with ThreadPoolExecutor(max_workers=2) as pool:
        polling = pool.submit(poll)
        marked = pool.submit(dispatch).result(timeout=120)
        polling.result(timeout=120)
    assert [value for group in marked for value in group.values()] == [True] * len(ids)
    assert {repo.get(order_id).state for order_id in ids} == {"invited"}  # type: ignore[union-attr]
    assert polls >= 3
