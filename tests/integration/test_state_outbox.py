"""ResultOutbox on SQLite and PostgreSQL: anti-join, supersede, claims with leases, dead letters and replay."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.mapping import payload_hash

INTEGRATION = "lever:abc"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def entry(order_id: str, score: float, updated: datetime | None = T0) -> OutboxEntry:
    payload = {"status": "COMPLETED", "result_url": f"https://r.example/{order_id}", "score": score}
    return OutboxEntry(order_id, INTEGRATION, payload_hash(payload), payload, updated)


@pytest.fixture
def outbox(state_store: StateStore) -> ResultOutbox:
    return ResultOutbox(state_store)


def states(outbox: ResultOutbox, order_id: str, *entries: OutboxEntry) -> list[str | None]:
    found = [outbox.get(order_id, e.payload_hash) for e in entries]
    return [item.state if item else None for item in found]


def test_hash_is_canonical() -> None:
    assert payload_hash({"a": 1, "b": [1, 2]}) == payload_hash({"b": [1, 2], "a": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})


def test_enqueue_is_an_anti_join(outbox: ResultOutbox) -> None:
    rows = [entry("o1", 90), entry("o2", 70)]
    assert outbox.enqueue(rows) == 2
    assert outbox.enqueue(rows) == 0
    assert outbox.enqueue([tuple(rows[0])]) == 0  # plain tuples work too
    assert outbox.counts_by_state()["pending"] == 2
    item = outbox.get("o1", rows[0].payload_hash)
    assert item is not None
    assert (item.integration_id, item.payload_json["score"], item.source_updated_at) == (INTEGRATION, 90, T0)


def test_newer_payload_supersedes_pending_and_dead(outbox: ResultOutbox) -> None:
    v1, v2, v3 = (
        entry("o1", 50, T0),
        entry("o1", 60, T0 + timedelta(hours=1)),
        entry("o1", 70, T0 + timedelta(hours=2)),
    )
    assert outbox.enqueue([v1]) == 1
    assert outbox.enqueue([v2]) == 1
    assert states(outbox, "o1", v1, v2) == ["superseded", "pending"]
    [claimed] = outbox.claim_batch("w", 10, 60)
    assert claimed.payload_hash == v2.payload_hash
    assert outbox.mark_dead("o1", v2.payload_hash, "REMOTE.INPUT_INVALID", "bad score")
    assert outbox.enqueue([v3]) == 1
    assert states(outbox, "o1", v1, v2, v3) == ["superseded", "superseded", "pending"]
    assert outbox.dead_letters() == []


def test_an_older_payload_arriving_late_is_not_sent(outbox: ResultOutbox) -> None:
    new, old = entry("o1", 80, T0 + timedelta(hours=1)), entry("o1", 40, T0)
    assert outbox.enqueue([new]) == 1
    assert outbox.enqueue([old]) == 0
    assert states(outbox, "o1", new, old) == ["pending", "superseded"]
    # Within one batch the newest version wins too, whatever the order.
    a, b = entry("o2", 1, T0 + timedelta(minutes=5)), entry("o2", 2, T0)
    assert outbox.enqueue([a, b]) == 1
    assert states(outbox, "o2", a, b) == ["pending", None]


def test_a_reverted_payload_comes_back(outbox: ResultOutbox) -> None:
    first, second = entry("o1", 50, T0), entry("o1", 60, T0 + timedelta(hours=1))
    outbox.enqueue([first])
    outbox.enqueue([second])
    reverted = first._replace(source_updated_at=T0 + timedelta(hours=2))
    assert outbox.enqueue([reverted]) == 1
    assert states(outbox, "o1", first, second) == ["pending", "superseded"]


def test_claim_lease_and_mark_sent(outbox: ResultOutbox, state_clock: Any) -> None:
    outbox.enqueue([entry("o1", 90), entry("o2", 80)])
    first = outbox.claim_batch("w1", 1, lease_seconds=60)
    assert [(i.order_id, i.state, i.attempts, i.lease_owner) for i in first] == [("o1", "sending", 1, "w1")]
    state_clock.advance(30)
    assert [i.order_id for i in outbox.claim_batch("w2", 10, 60)] == ["o2"]
    assert outbox.claim_batch("w3", 10, 60) == []
    state_clock.advance(31)  # o1's lease expired, o2's did not
    [again] = outbox.claim_batch("w3", 10, 60)
    assert (again.order_id, again.attempts, again.lease_owner) == ("o1", 2, "w3")
    assert outbox.mark_retry("o1", again.payload_hash, "X", "late", None, state_clock(), owner="w1") is False
    assert outbox.mark_sent("o1", again.payload_hash) is True
    assert outbox.mark_sent("o1", again.payload_hash) is False
    assert outbox.sent_payload_hashes("o1") == {again.payload_hash}
    assert outbox.sent_payload_hashes("o2") == set()
    sent = outbox.get("o1", again.payload_hash)
    assert sent is not None and sent.sent_at == state_clock() and sent.lease_owner is None
    assert outbox.enqueue([entry("o1", 90)]) == 0  # already sent: never queued again


def test_a_retry_takes_over_the_results_its_killed_try_was_sending(
    outbox: ResultOutbox, state_clock: Any
) -> None:
    outbox.enqueue([entry("o1", 90), entry("o2", 80)])
    killed, other_run = (
        "writeback:scheduled__1:send_results:1:h:1",
        "writeback:scheduled__2:send_results:1:h:2",
    )
    [sending] = outbox.claim_batch(killed, 1, lease_seconds=300)
    outbox.claim_batch(other_run, 1, lease_seconds=300)
    retry = "writeback:scheduled__1:send_results:2:h:3"
    assert outbox.claim_batch(retry, 10, 300) == []
    assert outbox.expire_leases_of_earlier_tries("writeback:scheduled__1:send_results:", retry) == 1
    [again] = outbox.claim_batch(retry, 10, 300)
    # Taken over like any abandoned send: the killed try may have reached Kombo.
    assert (again.order_id, again.attempts, again.maybe_applied) == (sending.order_id, 2, True)


def test_retry_waits_until_due(outbox: ResultOutbox, state_clock: Any) -> None:
    outbox.enqueue([entry("o1", 90)])
    [item] = outbox.claim_batch("w", 10, 60)
    retry_at = state_clock() + timedelta(minutes=2)
    assert outbox.mark_retry(
        "o1", item.payload_hash, "PLATFORM.RATE_LIMIT_EXCEEDED", "429", "https://log", retry_at
    )
    stored = outbox.get("o1", item.payload_hash)
    assert stored is not None
    assert (stored.state, stored.last_error_code, stored.log_url, stored.next_attempt_at) == (
        "pending",
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "https://log",
        retry_at,
    )
    assert outbox.claim_batch("w", 10, 60) == []
    state_clock.advance(minutes=2)
    [again] = outbox.claim_batch("w", 10, 60)
    assert again.attempts == 2
    assert outbox.mark_retry("o1", item.payload_hash, None, None, None, retry_at, owner="w") is True


def test_only_one_version_of_an_order_is_in_flight(outbox: ResultOutbox, state_clock: Any) -> None:
    v1, v2 = entry("o1", 50, T0), entry("o1", 60, T0 + timedelta(hours=1))
    outbox.enqueue([v1])
    [sending] = outbox.claim_batch("w1", 10, 60)
    assert outbox.enqueue([v2]) == 1
    assert outbox.claim_batch("w2", 10, 60) == []  # v1 is still in flight
    state_clock.advance(61)
    [claimed] = outbox.claim_batch("w2", 10, 60)
    assert claimed.payload_hash == v2.payload_hash  # the stale in-flight v1 is not re-sent
    assert outbox.mark_sent("o1", v2.payload_hash)
    assert states(outbox, "o1", v1, v2) == ["superseded", "sent"]
    assert outbox.mark_sent("o1", sending.payload_hash) is False


def test_dead_letters_not_writable_and_requeue(outbox: ResultOutbox) -> None:
    outbox.enqueue([entry("o1", 1), entry("o2", 2), entry("o3", 3)])
    items = {item.order_id: item for item in outbox.claim_batch("w", 10, 60)}
    assert outbox.mark_dead(
        "o1", items["o1"].payload_hash, "REMOTE.INPUT_INVALID", "score out of range", owner="w"
    )
    assert outbox.mark_not_writable(
        "o2", items["o2"].payload_hash, "ATS.JOB_CLOSED", "order not OPEN", "https://l"
    )
    assert outbox.mark_dead("o1", items["o1"].payload_hash, "X", "again") is False
    letters = outbox.dead_letters()
    assert sorted((i.order_id, i.state, i.last_error_code) for i in letters) == [
        ("o1", "dead", "REMOTE.INPUT_INVALID"),
        ("o2", "not_writable", "ATS.JOB_CLOSED"),
    ]
    assert outbox.counts_by_state() == {
        "pending": 0,
        "sending": 1,
        "sent": 0,
        "dead": 1,
        "not_writable": 1,
        "superseded": 0,
        "discarded": 0,
    }
    assert outbox.requeue(["o1", "o2", "o3", "unknown"]) == 2
    assert outbox.dead_letters() == []
    requeued = outbox.get("o1", items["o1"].payload_hash)
    assert requeued is not None and (requeued.state, requeued.attempts) == ("pending", 0)
    assert sorted(i.order_id for i in outbox.claim_batch("w", 10, 60)) == ["o1", "o2"]


def test_concurrent_claimers_never_share_a_result(
    outbox: ResultOutbox, make_state_store: Callable[[], StateStore]
) -> None:
    entries = [entry(f"o{n:03d}", n) for n in range(150)]
    assert outbox.enqueue(entries) == 150
    boxes = [ResultOutbox(make_state_store()) for _ in range(2)]
    barrier = threading.Barrier(4)

    def claim_all(worker: int) -> list[str]:
        barrier.wait()
        got: list[str] = []
        while batch := boxes[worker % 2].claim_batch(f"w{worker}", 9, 300):
            got.extend(item.order_id for item in batch)
        return got

    with ThreadPoolExecutor(4) as pool:
        flat = [order_id for got in pool.map(claim_all, range(4)) for order_id in got]
    assert len(flat) == len(set(flat)) == 150
    assert outbox.counts_by_state()["sending"] == 150


def test_mark_sent_many_in_one_transaction(outbox: ResultOutbox, state_clock: Any) -> None:
    old, new = entry("o1", 1, T0), entry("o1", 2, T0 + timedelta(hours=1))
    outbox.enqueue([old, entry("o2", 5)])
    [first, _second] = outbox.claim_batch("w", 10, 60)
    assert outbox.mark_dead("o1", first.payload_hash, "X", "failed once")
    state_clock.advance(1)
    outbox.enqueue([new])
    outbox.claim_batch("w", 10, 60)
    keys = [("o1", new.payload_hash), ("o2", entry("o2", 5).payload_hash), ("o3", "nope")]
    assert outbox.mark_sent_many(keys) == set(keys[:2])
    assert outbox.mark_sent_many(keys) == set()
    assert states(outbox, "o1", old, new) == ["superseded", "sent"]
    assert outbox.counts_by_state()["sent"] == 2


def test_mark_sent_many_costs_the_same_few_statements_for_one_result_or_many(
    outbox: ResultOutbox, state_store: StateStore
) -> None:
    # The sender records hundreds of deliveries a second through this: one read of the orders' versions and
    # one batched UPDATE per kind, never statements per result.
    import sqlalchemy as sa

    older = [entry(f"o{n}", 1, T0) for n in range(60)]
    outbox.enqueue(older)
    assert len(outbox.claim_batch("w", 100, 60)) == 60  # in flight: a newer version leaves them alone
    newer = [entry(f"o{n}", 2, T0 + timedelta(hours=1)) for n in range(60)]
    outbox.enqueue(newer)
    assert outbox.counts_by_state()["sending"] == 60
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    sa.event.listen(state_store.engine, "before_cursor_execute", count)
    try:
        keys = [(e.order_id, e.payload_hash) for e in newer]
        assert outbox.mark_sent_many(keys[:1]) == set(keys[:1])
        one = len(statements)
        statements.clear()
        assert outbox.mark_sent_many([*keys[1:], ("o1", "unknown")]) == set(keys[1:])
        many = len(statements)
    finally:
        sa.event.remove(state_store.engine, "before_cursor_execute", count)
    assert many == one and statements.count("UPDATE") == 2, statements
    counts = outbox.counts_by_state()
    assert (counts["sent"], counts["superseded"], counts["sending"]) == (60, 60, 0)


def test_mark_sent_many_follows_the_keys_in_order_like_mark_sent(
    outbox: ResultOutbox, state_clock: Any
) -> None:
    # Two versions of one order in one call: the first marked supersedes the older, which is then not sent.
    old, new = entry("o1", 1, T0), entry("o1", 2, T0 + timedelta(hours=1))
    outbox.enqueue([old])
    assert [item.order_id for item in outbox.claim_batch("w", 10, 60)] == ["o1"]  # old is sending
    state_clock.advance(1)
    outbox.enqueue([new])  # pending; the old one in flight is left alone
    assert states(outbox, "o1", old, new) == ["sending", "pending"]
    keys = [(new.order_id, new.payload_hash), (old.order_id, old.payload_hash)]
    assert outbox.mark_sent_many(keys) == {keys[0]}
    assert states(outbox, "o1", old, new) == ["superseded", "sent"]
    item = outbox.get("o1", new.payload_hash)
    assert item is not None and item.sent_at == state_clock() and item.lease_owner is None
