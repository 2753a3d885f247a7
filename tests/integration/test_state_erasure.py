"""Retention and erasure on SQLite and PostgreSQL, with the store's clock moved forward by hand: what is erased
when, what stays (ids, the salted e-mail hash, exactly-once keys), and the `erasures` record."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from kombo_sync.candidate_hash import CandidateHasher
from kombo_sync.housekeeping.retention import InvalidEmail, erase_candidates, purge
from kombo_sync.intake.duplicates import (
    DuplicateScope,
    candidates_sharing_an_order,
    duplicate_keys,
    older_active_duplicate,
    shared_duplicate_keys,
)
from kombo_sync.settings import RetentionSettings
from kombo_sync.state.audit import Quarantine
from kombo_sync.state.erasures import ErasureLog
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.schema import erasures, orders, quarantine, result_outbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.mapping import payload_hash

INTEGRATION = "workday:erasure"
OTHER_INTEGRATION = "lever:other"
SALT = "a-test-salt-of-enough-length"
SETTINGS = RetentionSettings()  # 90 days after the order ended, 30 days after integration-deleted


def kombo_order(order_id: str, email: str | None = None, integration: str = INTEGRATION) -> dict[str, Any]:
    return {
        "id": order_id,
        "integration_id": integration,
        "package_id": "typescript_test",
        "status": "OPEN",
        "candidate": {
            "remote_id": f"cand-{order_id}",
            "email": email or f"{order_id}.canary@candidates.example",
            "first_name": f"Canaryfirst{order_id}",
            "last_name": f"Canarylast{order_id}",
            "phone": "+49 155 5099 9999",
        },
        "application": {"remote_id": f"app-{order_id}"},
        "job": {
            "remote_id": "job-1",
            "name": "Data Engineer",
            "hiring_team": [{"email": "recruiter@x.example"}],
        },
    }


def dump_tables(store: StateStore) -> str:
    """Every row of the tables that may hold candidate data, as text to search."""
    with store.transaction(readonly=True) as conn:
        rows = [dict(row) for table in (orders, result_outbox, quarantine, erasures)
                for row in conn.execute(sa.select(table)).mappings()]  # fmt: skip
    return json.dumps(rows, default=str)


def invite(repo: OrderRepository, order_id: str) -> None:
    assert repo.claim_order(order_id, "w", 60) is not None
    assert repo.mark_invited(order_id, "w", f"inv-{order_id}", None, "platform", None)


def send_result(store: StateStore, order_id: str, score: float = 80) -> str:
    outbox = ResultOutbox(store)
    payload = {
        "status": "COMPLETED",
        "score": score,
        "attributes": [{"type": "TEXT", "value": "Canary report"}],
    }
    digest = payload_hash(payload)
    outbox.enqueue([OutboxEntry(order_id, INTEGRATION, digest, payload, store.now())])
    assert outbox.mark_sent(order_id, digest)
    return digest


@pytest.fixture
def hasher() -> CandidateHasher:
    return CandidateHasher(SALT)


@pytest.fixture
def repo(state_store: StateStore) -> OrderRepository:
    IntegrationRepository(state_store).upsert(INTEGRATION, source="admin")
    return OrderRepository(state_store)


def test_candidate_data_is_erased_a_retention_time_after_the_order_ended(
    state_store: StateStore, repo: OrderRepository, state_clock: Any, hasher: CandidateHasher
) -> None:
    for order_id in ("rejected", "cancelled", "resulted", "invited", "received"):
        repo.record_order(kombo_order(order_id), "webhook")
    repo.mark_rejected("rejected", "package not entitled")
    repo.mark_cancelled("cancelled")
    invite(repo, "resulted")
    invite(repo, "invited")
    digest = send_result(state_store, "resulted")
    Quarantine(state_store).add(
        "writeback", "resulted", "score above max_score", {"email": "resulted.canary@x"}
    )

    state_clock.advance(days=89, hours=23)
    summary = purge(state_store, SETTINGS, hasher)
    assert summary["retention"]["orders_erased"] == 0  # ended 89 days 23 hours ago: not yet

    state_clock.advance(hours=1)
    summary = purge(state_store, SETTINGS, hasher, run_id="scheduled__x")
    assert summary["retention"] == {
        "orders_erased": 3,
        "orders_hashed": 3,
        "orders_cancelled": 0,
        "result_payloads_erased": 1,
        "quarantine_rows_erased": 1,
    }
    for order_id in ("rejected", "cancelled", "resulted"):
        order = repo.get(order_id)
        assert order is not None and order.erased_at == state_clock()
        assert (order.candidate_email, order.candidate_first_name, order.candidate_last_name) == (
            None,
            None,
            None,
        )
        assert order.candidate_phone is None
        assert order.candidate_email_hash == hasher.email_hash(f"{order_id}.canary@candidates.example")
        assert order.order_json == {
            "id": order_id,
            "integration_id": INTEGRATION,
            "package_id": "typescript_test",
            "status": "OPEN",
            "candidate": {"remote_id": f"cand-{order_id}"},
            "application": {"remote_id": f"app-{order_id}"},
            "job": {"remote_id": "job-1", "name": "Data Engineer"},
            "erased": True,
        }
    # The exactly-once key of the result stays; its payload goes.
    sent = ResultOutbox(state_store).get("resulted", digest)
    assert sent is not None and sent.state == "sent" and sent.payload_json == {"erased": True}
    assert ResultOutbox(state_store).sent_payload_hashes("resulted") == {digest}
    # Orders not ended keep their data: the invited one awaits its result, the received one its invitation.
    for order_id in ("invited", "received"):
        order = repo.get(order_id)
        assert order is not None and order.erased_at is None and order.candidate_email
    text = dump_tables(state_store)
    for order_id in ("rejected", "cancelled", "resulted"):
        assert f"{order_id}.canary" not in text and f"Canaryfirst{order_id}" not in text
    assert "Canary report" not in text  # the sent result's payload

    [record] = ErasureLog(state_store).recent()
    assert (record.kind, record.run_id, record.integration_id) == ("retention", "scheduled__x", None)
    assert sorted(record.order_ids) == ["cancelled", "rejected", "resulted"]
    assert record.counts["orders_erased"] == 3 and "90 day" in record.reason

    # Nothing is erased twice; a second run records nothing.
    assert purge(state_store, SETTINGS, hasher)["retention"]["orders_erased"] == 0
    assert len(ErasureLog(state_store).recent()) == 1


def test_an_order_whose_result_is_still_open_has_not_ended(
    state_store: StateStore, repo: OrderRepository, state_clock: Any, hasher: CandidateHasher
) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    invite(repo, "o1")
    send_result(state_store, "o1", score=70)
    state_clock.advance(days=80)
    # A corrected result is queued: the order is not over until it is written back.
    outbox = ResultOutbox(state_store)
    corrected = {"status": "COMPLETED", "score": 75}
    outbox.enqueue([OutboxEntry("o1", INTEGRATION, payload_hash(corrected), corrected, state_clock())])
    state_clock.advance(days=11)
    assert purge(state_store, SETTINGS, hasher)["retention"]["orders_erased"] == 0
    assert outbox.mark_sent("o1", payload_hash(corrected))
    state_clock.advance(days=89)
    assert purge(state_store, SETTINGS, hasher)["retention"]["orders_erased"] == 0
    state_clock.advance(days=1)
    assert purge(state_store, SETTINGS, hasher)["retention"]["orders_erased"] == 1


def test_a_deleted_integrations_candidates_are_erased_after_its_time(
    state_store: StateStore, repo: OrderRepository, state_clock: Any, hasher: CandidateHasher
) -> None:
    IntegrationRepository(state_store).upsert(OTHER_INTEGRATION, source="admin")
    repo.record_order(kombo_order("gone-1"), "webhook")
    repo.record_order(kombo_order("gone-2"), "webhook")
    repo.record_order(kombo_order("kept", integration=OTHER_INTEGRATION), "webhook")
    invite(repo, "gone-1")  # invited, no result: only the deletion ends it
    IntegrationRepository(state_store).mark_deleted(INTEGRATION)
    state_clock.advance(days=29)
    assert purge(state_store, SETTINGS, hasher)["integrations_erased"] == []

    state_clock.advance(days=1)
    summary = purge(state_store, SETTINGS, hasher, dry_run=True)
    assert summary["integrations_erased"] == [INTEGRATION]
    assert summary["integration_deleted"]["orders_erased"] == 2
    assert repo.get("gone-1").erased_at is None  # type: ignore[union-attr]

    summary = purge(state_store, SETTINGS, hasher)
    assert summary["integrations_erased"] == [INTEGRATION]
    assert summary["integration_deleted"]["orders_erased"] == 2
    assert repo.get("gone-1").candidate_email is None  # type: ignore[union-attr]
    assert repo.get("kept").candidate_email  # type: ignore[union-attr]
    [record] = ErasureLog(state_store).recent(kind="integration_deleted")
    assert record.integration_id == INTEGRATION and sorted(record.order_ids) == ["gone-1", "gone-2"]
    assert purge(state_store, SETTINGS, hasher)["integrations_erased"] == []


def test_erasure_on_request_and_the_duplicate_rule_after_it(
    state_store: StateStore, repo: OrderRepository, state_clock: Any, hasher: CandidateHasher
) -> None:
    IntegrationRepository(state_store).upsert(OTHER_INTEGRATION, source="admin")
    email = "Grace.Hopper@Candidates.example"
    repo.record_order(kombo_order("g1", email), "webhook")
    repo.record_order(kombo_order("g2", email.lower(), integration=OTHER_INTEGRATION), "webhook")
    repo.record_order(kombo_order("someone-else"), "webhook")
    invite(repo, "g1")

    with pytest.raises(InvalidEmail) as invalid:
        erase_candidates(state_store, hasher, [" grace.hopper@candidates.example ", "not-an-address"])
    assert "not-an-address" not in str(invalid.value)
    assert repo.get("g1").candidate_email == email  # type: ignore[union-attr]  # nothing half-erased

    dry = erase_candidates(state_store, hasher, ["grace.hopper@candidates.example"], dry_run=True)
    assert (dry["orders_erased"], dry["candidates_found"]) == (2, 1)
    summary = erase_candidates(
        state_store, hasher, ["grace.hopper@candidates.example"], requested_by="dpo", reason="ticket 42"
    )
    assert summary["orders_erased"] == 2 and summary["orders_cancelled"] == 1  # g2 was not invited yet
    assert summary["orders_hashed"] == 2
    assert repo.get("g2").state == "cancelled"  # type: ignore[union-attr]
    assert repo.get("g1").state == "invited"  # type: ignore[union-attr]  # its result will still be written back
    assert repo.get("someone-else").candidate_email  # type: ignore[union-attr]
    assert "grace" not in dump_tables(state_store).lower()
    [record] = ErasureLog(state_store).recent(kind="request")
    assert (record.requested_by, record.reason, sorted(record.order_ids)) == (
        "dpo",
        "ticket 42",
        ["g1", "g2"],
    )

    again = erase_candidates(state_store, hasher, [email])
    assert (again["orders_erased"], again["orders_already_erased"], again["candidates_found"]) == (0, 2, 1)

    # The same candidate ordered again for the same package: the erased, still active g1 is found by its hash.
    state_clock.advance(60)
    repo.record_order(kombo_order("g3", email), "poll")
    g3 = repo.get("g3")
    assert g3 is not None
    email_hash = hasher.email_hash(email)
    found = older_active_duplicate(
        repo,
        order_id="g3",
        integration_id=INTEGRATION,
        package_id="typescript_test",
        candidate_email=email,
        application_remote_id=None,
        received_at=g3.received_at,
        candidate_email_hash=email_hash,
    )
    assert found == "g1"
    assert email_hash is not None
    shared = candidates_sharing_an_order(
        state_store, INTEGRATION, ["typescript_test"], {email_hash: email.lower()}
    )
    assert duplicate_keys("typescript_test", email, None) & shared
    # Without the hash (no salt configured) the erased order is invisible to the rule.
    assert candidates_sharing_an_order(state_store, INTEGRATION, ["typescript_test"]) == set()
    # A dispatch batch asks for all its integrations at once: the same answer per integration, and the hash of
    # this candidate asked for by another integration matches nothing there.
    batch = shared_duplicate_keys(
        state_store,
        {
            INTEGRATION: DuplicateScope(frozenset({"typescript_test"}), {email_hash: email.lower()}),
            OTHER_INTEGRATION: DuplicateScope(frozenset({"typescript_test"}), {email_hash: email.lower()}),
        },
    )
    assert batch == {INTEGRATION: shared, OTHER_INTEGRATION: set()}


def test_an_erased_order_seen_again_keeps_only_ids(
    state_store: StateStore, repo: OrderRepository, hasher: CandidateHasher
) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    invite(repo, "o1")
    erase_candidates(state_store, hasher, ["o1.canary@candidates.example"])
    repo.record_order(kombo_order("o1"), "poll")  # a backfill lists it again, candidate data and all
    order = repo.get("o1")
    assert order is not None and order.candidate_email is None
    assert "canary" not in json.dumps(order.order_json).lower()


def test_erasure_without_a_salt_still_erases(state_store: StateStore, repo: OrderRepository) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    repo.mark_rejected("o1", "no")
    summary = erase_candidates(state_store, None, ["o1.canary@candidates.example"])
    assert (summary["orders_erased"], summary["orders_hashed"]) == (1, 0)
    order = repo.get("o1")
    assert order is not None and order.candidate_email is None and order.candidate_email_hash is None


def test_retention_zero_days_and_timestamps(
    state_store: StateStore, repo: OrderRepository, state_clock: Any
) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    repo.mark_cancelled("o1")
    settings = RetentionSettings(candidate_data_days=0)
    assert purge(state_store, settings, None)["retention"]["orders_erased"] == 1
    state_clock.advance(timedelta(days=1).total_seconds())
    assert purge(state_store, settings, None)["retention"]["orders_erased"] == 0


def test_migration_0009_keeps_orders_and_goes_back(state_db_url: str) -> None:
    """0009 adds the hash and erasure time to existing orders and the `erasures` table; its downgrade removes
    them and keeps the orders and the duplicate rule's expression index (SQLite copies the table)."""
    from alembic import command

    from kombo_sync.state.migrations import alembic_config

    engine = sa.create_engine(state_db_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0008_console")
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, integration_id, package_id, state, first_seen_via, candidate_email, "
                "order_json, attempts, received_at, updated_at) VALUES ('o1', 'i', 'p', 'received', 'poll', "
                "'a@b.example', '{}', 0, '2026-01-05 09:00:00', '2026-01-05 09:00:00')"
            )
        )
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0009_erasure")
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT candidate_email, candidate_email_hash, erased_at FROM orders")
        ).one()
        assert tuple(row) == ("a@b.example", None, None)
        assert "erasures" in sa.inspect(conn).get_table_names()
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008_console")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert "erasures" not in inspector.get_table_names()
        assert "candidate_email_hash" not in {column["name"] for column in inspector.get_columns("orders")}
        assert conn.execute(sa.text("SELECT candidate_email FROM orders")).scalar_one() == "a@b.example"
        if engine.dialect.name == "sqlite":
            indexes = (
                conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars().all()
            )
        else:
            indexes = (
                conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'orders'"))
                .scalars()
                .all()
            )
        assert "ix_orders_duplicate_email" in indexes
    engine.dispose()


def test_a_large_purge_goes_in_batches_each_recorded(
    state_store: StateStore, repo: OrderRepository, state_clock: Any, hasher: CandidateHasher
) -> None:
    for n in range(7):
        repo.record_order(kombo_order(f"o{n}"), "webhook")
        repo.mark_cancelled(f"o{n}")
    state_clock.advance(days=3)
    summary = purge(state_store, RetentionSettings(candidate_data_days=1, batch_size=3), hasher)
    assert summary["retention"]["orders_erased"] == 7
    records = ErasureLog(state_store).recent()
    assert sorted(len(record.order_ids) for record in records) == [1, 3, 3]
    assert sorted(i for record in records for i in record.order_ids) == [f"o{n}" for n in range(7)]


def test_an_invitation_the_reconcile_cancelled_ends_the_order(
    state_store: StateStore, repo: OrderRepository, state_clock: Any, hasher: CandidateHasher
) -> None:
    repo.record_order(kombo_order("o1"), "webhook")
    invite(repo, "o1")
    state_clock.advance(days=5)
    assert repo.cancel_invitation("o1", reason="cancelled in the ATS")
    state_clock.advance(days=89)
    assert purge(state_store, SETTINGS, hasher)["retention"]["orders_erased"] == 0
    state_clock.advance(days=1)
    assert purge(state_store, SETTINGS, hasher)["retention"]["orders_erased"] == 1
