"""Issue 10, item 7: the outbox tells the truth under faults. Against the Kombo sandbox over HTTP, with the state
store on SQLite and on PostgreSQL.

A version of a result that got a definite error answer on every attempt (503, 429, a refusal) certainly did not
reach Kombo; one that got no answer (a lost reply, a timeout, a dropped connection) may have. When a later version
finds the order no longer OPEN, only the versions that may have been applied are compared with what Kombo shows.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.limits import RateBudget
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.writeback.job import run_writeback
from kombo_sync.writeback.mapping import payload_hash
from kombo_sync.writeback.sender import DEAD, RETRY, ResultSender
from tests.integration.writeback_helpers import (
    T0,
    applied_bodies,
    expected_payload,
    fast_client,
    kombo_result,
    new_orders,
    outbox_rows,
    result_row,
    wb_settings,
    window,
    write_rows,
)
from tests.support.outbox_check import outbox_matches_kombo

NO_FAULTS = {
    "error_rate": 0,
    "bare_503_rate": 0,
    "throttle_rate": 0,
    "timeout_rate": 0,
    "lost_response_rate": 0,
}


def _faults(**knobs: object) -> dict[str, object]:
    """Sandbox knobs: these faults, every other fault rate zero."""
    return {**NO_FAULTS, **knobs}


def _states(store, order_id: str) -> dict[str, str]:
    """payload score -> outbox state, for the versions of one order."""
    return {
        row["payload_json"]["score"]: row["state"]
        for row in outbox_rows(store)
        if row["order_id"] == order_id
    }


@pytest.mark.parametrize("lost_mode", ["close", "hang"])
def test_a_corrected_result_that_landed_with_a_lost_reply_is_sent_when_the_first_version_only_got_503s(
    state_store, warehouse_engine, kombo_sandbox, lost_mode
):
    _, (order_id,) = new_orders(state_store, kombo_sandbox, 1)
    first = result_row(order_id, score=40.0)
    write_rows(warehouse_engine, [first])
    settings = wb_settings()

    # The first version: every PUT is answered 503, nothing is applied.
    kombo_sandbox.admin.set_knobs(**_faults(error_rate=1.0, fault_methods=["PUT"]))
    with fast_client(kombo_sandbox, timeout=0.5, max_retries=1) as client:
        run = run_writeback(state_store, warehouse_engine, client, settings, **window())
    assert (run["send"]["retry"], run["send"]["sent"]) == (1, 0)
    assert applied_bodies(kombo_sandbox, order_id) == []

    # The warehouse corrects the row; its PUT is applied but the reply is lost, every time.
    corrected = result_row(order_id, T0 + timedelta(minutes=1), score=45.0)
    write_rows(warehouse_engine, [corrected])
    kombo_sandbox.admin.set_knobs(
        **_faults(
            lost_response_rate=1.0,
            lost_response_mode=lost_mode,
            timeout_hang_seconds=5,
            fault_methods=["PUT"],
        )
    )
    with fast_client(kombo_sandbox, timeout=0.5, max_retries=1) as client:
        run = run_writeback(state_store, warehouse_engine, client, settings, **window())

    assert kombo_result(kombo_sandbox, order_id) == expected_payload(corrected)
    assert applied_bodies(kombo_sandbox, order_id) == [expected_payload(corrected)]
    assert (run["send"]["resolved_by_readback"], run["send"]["not_writable"]) == (1, 0), run["send"]
    assert _states(state_store, order_id) == {45.0: "sent", 40.0: "superseded"}
    assert ResultOutbox(state_store).dead_letters() == []


def test_an_earlier_version_that_landed_is_recorded_sent_and_the_correction_not_writable(
    state_store, warehouse_engine, kombo_sandbox
):
    _, (order_id,) = new_orders(state_store, kombo_sandbox, 1)
    first = result_row(order_id, score=40.0)
    write_rows(warehouse_engine, [first])
    settings = wb_settings()

    # The first version is applied, its replies are lost, and reading the order back fails too.
    kombo_sandbox.admin.set_knobs(**_faults(lost_response_rate=1.0, fault_methods=["PUT", "GET"]))
    with fast_client(kombo_sandbox, timeout=0.5, max_retries=1) as client:
        run = run_writeback(state_store, warehouse_engine, client, settings, **window())
    assert run["send"]["retry"] == 1
    assert applied_bodies(kombo_sandbox, order_id) == [expected_payload(first)]
    (row,) = outbox_rows(state_store)
    assert (row["state"], row["maybe_applied"]) == ("pending", True)

    corrected = result_row(order_id, T0 + timedelta(minutes=1), score=45.0)
    write_rows(warehouse_engine, [corrected])
    kombo_sandbox.admin.set_knobs(**NO_FAULTS)
    with fast_client(kombo_sandbox) as client:
        run = run_writeback(state_store, warehouse_engine, client, settings, **window())
        assert run["send"]["not_writable"] == 1
        assert _states(state_store, order_id) == {40.0: "sent", 45.0: "not_writable"}
        (letter,) = ResultOutbox(state_store).dead_letters()
        assert letter.last_error_code == "ORDER_NOT_OPEN"
        assert "holds an earlier version" in (letter.last_error_message or "")

        # Replaying the correction changes nothing: the order already took the first version.
        replay = run_writeback(state_store, warehouse_engine, client, settings, order_ids=[order_id])
    assert replay["replay"]["requeued"] == 1
    assert _states(state_store, order_id) == {40.0: "sent", 45.0: "not_writable"}
    assert applied_bodies(kombo_sandbox, order_id) == [expected_payload(first)]
    assert kombo_result(kombo_sandbox, order_id) == expected_payload(first)


def test_a_read_back_that_finds_the_order_open_clears_what_an_unanswered_version_left_open(
    state_store, warehouse_engine, kombo_sandbox
):
    _, (order_id,) = new_orders(state_store, kombo_sandbox, 1)
    write_rows(warehouse_engine, [result_row(order_id, score=40.0)])
    settings = wb_settings()

    # The first version times out on every PUT (nothing applied, but no answer) and the read-back times out too.
    kombo_sandbox.admin.set_knobs(
        **_faults(timeout_rate=1.0, timeout_hang_seconds=3, fault_methods=["PUT", "GET"])
    )
    with fast_client(kombo_sandbox, timeout=0.3, max_retries=1) as client:
        run = run_writeback(state_store, warehouse_engine, client, settings, **window())
    assert run["send"]["retry"] == 1
    assert [row["maybe_applied"] for row in outbox_rows(state_store)] == [True]

    # The correction: the order is read back OPEN (the first version is not there), then its reply is lost.
    corrected = result_row(order_id, T0 + timedelta(minutes=1), score=45.0)
    write_rows(warehouse_engine, [corrected])
    kombo_sandbox.admin.set_knobs(**_faults(lost_response_rate=1.0, fault_methods=["PUT"]))
    with fast_client(kombo_sandbox, timeout=0.5, max_retries=1) as client:
        run = run_writeback(state_store, warehouse_engine, client, settings, **window())

    assert run["send"]["resolved_by_readback"] == 1, run["send"]
    assert _states(state_store, order_id) == {45.0: "sent", 40.0: "superseded"}
    assert {row["payload_json"]["score"]: row["maybe_applied"] for row in outbox_rows(state_store)} == {
        45.0: True,
        40.0: False,
    }
    assert applied_bodies(kombo_sandbox, order_id) == [expected_payload(corrected)]


def _scripted_client(answers: list[int | None]) -> KomboClient:
    """A client whose PUTs get these answers in turn (None: the connection drops without a reply) and whose
    read-backs are answered 503."""
    script = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method != "PUT":
            return httpx.Response(
                503, json={"status": "error", "error": {"code": "REMOTE.SERVICE_UNAVAILABLE"}}
            )
        status = next(script)
        if status is None:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if status == 200:
            return httpx.Response(200, json={"status": "success", "data": {}, "warnings": []})
        code = {429: "PLATFORM.RATE_LIMIT_EXCEEDED", 400: "PLATFORM.INPUT_INVALID"}.get(status)
        body = {"status": "error", "error": {"code": code, "message": f"HTTP {status}"}} if code else None
        return httpx.Response(status, json=body) if body else httpx.Response(status, text="<html>503</html>")

    return KomboClient(
        "https://kombo.test/v1",
        "key",
        max_retries=len(answers) - 1,
        transport=httpx.MockTransport(handle),
        sleep=lambda seconds: None,
        rate_budget=RateBudget(None, default_pause=0),
    )


@pytest.mark.parametrize(
    ("answers", "kind", "maybe_applied"),
    [
        pytest.param([503, 503, 503], RETRY, None, id="503s-certainly-not-applied"),
        pytest.param([429, 503, 400], DEAD, None, id="refused-after-errors-certainly-not-applied"),
        pytest.param([503, 503, None], RETRY, True, id="lost-last"),
        pytest.param([None, 503, 503], RETRY, True, id="lost-first-then-503s"),
        pytest.param([503, 504, 503], RETRY, True, id="gateway-timeout-undecided"),
    ],
)
def test_every_attempt_of_a_send_decides_whether_the_version_may_have_been_applied(
    state_store, answers, kind, maybe_applied
):
    payload = {"status": "COMPLETED", "result_url": "https://platform.example/r/1", "score": 1.0}
    outbox = ResultOutbox(state_store)
    outbox.enqueue([OutboxEntry("order-1", "workday:x", payload_hash(payload), payload, None)])
    (item,) = outbox.claim_batch("test", 10, 60)
    with _scripted_client(answers) as client:
        sender = ResultSender(state_store, client, wb_settings().writeback, owner="test")
        outcome = sender._send(item)
        sender._record(item, outcome)
    assert (outcome.kind, outcome.maybe_applied) == (kind, maybe_applied)
    stored = outbox.get("order-1", payload_hash(payload))
    assert stored is not None and stored.maybe_applied is bool(maybe_applied)


def test_an_unexpected_error_after_the_put_went_out_leaves_the_version_possibly_applied(state_store):
    def handle(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug below the client, after the request was on its way")

    payload = {"status": "COMPLETED", "result_url": "https://platform.example/r/1", "score": 1.0}
    outbox = ResultOutbox(state_store)
    outbox.enqueue([OutboxEntry("order-1", "workday:x", payload_hash(payload), payload, None)])
    (item,) = outbox.claim_batch("test", 10, 60)
    client = KomboClient("https://kombo.test/v1", "key", max_retries=0, transport=httpx.MockTransport(handle))
    with client:
        sender = ResultSender(state_store, client, wb_settings().writeback, owner="test")
        _, outcome = sender._send_safely(item)
        sender._record(item, outcome)
    assert (outcome.kind, outcome.code, outcome.maybe_applied) == (RETRY, "UNEXPECTED_ERROR", True)
    assert outbox.get("order-1", payload_hash(payload)).maybe_applied is True


def _one_version(store, order_id: str = "order-1", score: float = 1.0) -> tuple[ResultOutbox, str]:
    payload = {"status": "COMPLETED", "result_url": "https://platform.example/r/1", "score": score}
    outbox = ResultOutbox(store)
    outbox.enqueue([OutboxEntry(order_id, "workday:x", payload_hash(payload), payload, None)])
    return outbox, payload_hash(payload)


def test_the_flag_is_set_by_unanswered_sends_and_kept_through_retries_and_replays(state_store, state_clock):
    outbox, key = _one_version(state_store)
    (item,) = outbox.claim_batch("a", 10, 60)
    assert item.maybe_applied is False
    # A definite error answer leaves it as it was; an attempt without an answer sets it.
    assert outbox.mark_retry("order-1", key, "HTTP_503", "503", None, state_store.now(), owner="a")
    assert outbox.get("order-1", key).maybe_applied is False
    outbox.claim_batch("a", 10, 60)
    assert outbox.mark_dead("order-1", key, "X", "gave up", owner="a", maybe_applied=True)
    # A replay resets the attempts, not what Kombo may hold.
    assert outbox.requeue(["order-1"]) == 1
    (item,) = outbox.claim_batch("a", 10, 60)
    assert (item.attempts, item.maybe_applied) == (1, True)
    assert outbox.mark_retry("order-1", key, "HTTP_503", "503", None, state_store.now(), owner="a")
    assert outbox.get("order-1", key).maybe_applied is True
    # A read-back found the order OPEN after the attempts ended: cleared.
    assert outbox.mark_not_applied(["order-1"], owner="a") == 1
    assert outbox.get("order-1", key).maybe_applied is False


def test_a_send_abandoned_by_a_dead_worker_counts_as_possibly_applied(state_store, state_clock):
    outbox, key = _one_version(state_store)
    outbox.claim_batch("dead-worker", 10, 60)
    # Another owner's send (live or abandoned) is not cleared by a read-back: its attempt may be on its way.
    assert outbox.mark_not_applied(["order-1"], owner="other") == 0
    state_clock.advance(seconds=61)
    (item,) = outbox.claim_batch("b", 10, 60)
    assert (item.attempts, item.maybe_applied) == (2, True)
    assert outbox.mark_sent("order-1", key)
    assert outbox.get("order-1", key).maybe_applied is True
    assert outbox.mark_not_applied(["order-1"], owner="b") == 0  # a delivery is never cleared


def test_mark_landed_records_an_earlier_version_as_sent_from_any_state(state_store):
    outbox, first = _one_version(state_store, score=1.0)
    outbox.claim_batch("a", 10, 60)
    outbox.mark_retry("order-1", first, None, "lost", None, state_store.now(), owner="a", maybe_applied=True)
    _, second = _one_version(state_store, score=2.0)  # supersedes the first
    assert outbox.get("order-1", first).state == "superseded"
    assert outbox.mark_landed("order-1", first)
    landed = outbox.get("order-1", first)
    assert (landed.state, landed.maybe_applied, landed.sent_at is not None) == ("sent", True, True)
    assert not outbox.mark_landed("order-1", first)  # already sent
    versions = outbox.versions(["order-1"])["order-1"]
    assert {(v.payload_hash, v.state, v.status, v.may_be_at_kombo) for v in versions} == {
        (first, "sent", "COMPLETED", True),
        (second, "pending", "COMPLETED", False),
    }


def test_migration_0005_marks_rows_written_before_it_as_possibly_applied(state_db_url):
    from alembic import command

    from kombo_sync.state.migrations import alembic_config

    engine = sa.create_engine(state_db_url, poolclass=sa.pool.NullPool)
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0004_duplicate_rule_indexes")
    outbox = sa.table(
        "result_outbox",
        *(sa.column(name) for name in ("order_id", "payload_hash", "integration_id", "payload_json")),
        *(sa.column(name) for name in ("state", "attempts", "created_at", "updated_at")),
    )
    rows = [("fresh", "pending", 0), ("tried", "pending", 2), ("done", "sent", 1), ("old", "superseded", 0)]
    with engine.begin() as conn:
        for order_id, state, attempts in rows:
            conn.execute(
                outbox.insert().values(
                    order_id=order_id,
                    payload_hash="h",
                    integration_id="workday:x",
                    payload_json='{"status": "COMPLETED"}',
                    state=state,
                    attempts=attempts,
                    created_at=now,
                    updated_at=now,
                )
            )
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0005_outbox_maybe_applied")
    with engine.connect() as conn:
        flags = dict(conn.execute(sa.text("SELECT order_id, maybe_applied FROM result_outbox")).all())
    assert {order_id: bool(flag) for order_id, flag in flags.items()} == {
        "fresh": False,
        "tried": True,
        "done": True,
        "old": False,
    }
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004_duplicate_rule_indexes")
    with engine.connect() as conn:
        columns = {column["name"] for column in sa.inspect(conn).get_columns("result_outbox")}
    assert "maybe_applied" not in columns and "attempts" in columns
    engine.dispose()


CONVERGENCE_RESULTS = 300
CONVERGENCE_MAX_RUNS = 25
CORRECTION_ROUNDS = 4


def test_under_lost_replies_timeouts_503s_and_429s_with_corrections_the_outbox_matches_kombo(
    state_store, state_clock, warehouse_engine, kombo_sandbox
):
    """The fault mix of issue 10 over a few hundred results, the warehouse correcting some rows between runs, run
    until drained: then every order's outbox record agrees with what Kombo holds."""
    rng = random.Random(20261130)
    _, ids = new_orders(state_store, kombo_sandbox, CONVERGENCE_RESULTS // 2)
    _, more = new_orders(state_store, kombo_sandbox, CONVERGENCE_RESULTS - CONVERGENCE_RESULTS // 2)
    ids += more
    rows = {
        order_id: result_row(order_id, T0 - timedelta(seconds=index)) for index, order_id in enumerate(ids)
    }
    write_rows(warehouse_engine, list(rows.values()))
    kombo_sandbox.admin.set_knobs(
        **_faults(
            lost_response_rate=0.15,  # applied, then the reply hangs until the client gives up
            lost_response_mode="hang",
            timeout_rate=0.05,  # hangs past the client's timeout, nothing applied
            timeout_hang_seconds=2,
            error_rate=0.10,  # 503 REMOTE.SERVICE_UNAVAILABLE
            bare_503_rate=0.05,  # 503 from the load balancer, no JSON
            throttle_rate=0.05,  # 429 PLATFORM.RATE_LIMIT_EXCEEDED
            seed=20261130,
        )
    )
    # A failed result waits for the next run (the state store's clock moves two hours between runs), so the
    # warehouse's corrections meet versions that failed or are in doubt.
    settings = wb_settings(
        max_concurrency=24, claim_batch_rows=60, max_attempts=100, retry_backoff_seconds=60
    )

    runs = []
    corrected: set[str] = set()
    # One attempt per call: every fault reaches the sender (the client's own retries would hide most of them).
    with fast_client(kombo_sandbox, timeout=1.0, max_retries=0) as client:
        for number in range(1, CONVERGENCE_MAX_RUNS + 1):
            runs.append(run_writeback(state_store, warehouse_engine, client, settings, **window()))
            outbox = outbox_rows(state_store)
            if number > CORRECTION_ROUNDS and not {row["state"] for row in outbox} & {"pending", "sending"}:
                break
            state_clock.advance(hours=2)
            if number <= CORRECTION_ROUNDS:
                # The warehouse corrects results between runs: every one still on its way (its first versions
                # failed, maybe landed without a reply) and a few already delivered.
                waiting = {row["order_id"] for row in outbox if row["state"] == "pending"}
                for order_id in sorted(waiting) + rng.sample(ids, 10):
                    rows[order_id] = result_row(
                        order_id, T0 + timedelta(minutes=number), score=float(rng.randint(0, 100))
                    )
                    corrected.add(order_id)
                write_rows(warehouse_engine, list(rows.values()))
    faults = kombo_sandbox.admin.stats()["faults"]
    kombo_sandbox.admin.set_knobs(**NO_FAULTS)

    sends = [{k: v for k, v in run["send"].items() if k != "dead_letters"} for run in runs]
    violations = outbox_matches_kombo(state_store, kombo_sandbox.admin, ids)
    assert violations == [], "\n".join(violations[:40]) + f"\nruns: {sends}"
    assert len(runs) < CONVERGENCE_MAX_RUNS, sends
    assert all(faults.get(kind) for kind in ("lost_response", "timeout", "error", "bare_503", "throttle")), (
        faults
    )
    # Lost replies were resolved by reading the orders back; nothing became a dead letter.
    assert sum(run["send"]["resolved_by_readback"] for run in runs) > 0, sends
    assert ResultOutbox(state_store).counts_by_state()["dead"] == 0
    # Every order ended with its newest result at Kombo, or with an earlier one that left it not OPEN first.
    expected = {order_id: expected_payload(row) for order_id, row in rows.items()}
    newest = {
        row["order_id"]: row
        for row in outbox_rows(state_store)
        if row["payload_json"] == expected[row["order_id"]]
    }
    assert set(newest) == set(ids)
    for order_id, row in newest.items():
        held = kombo_result(kombo_sandbox, order_id)
        if row["state"] == "sent":
            assert held == row["payload_json"]
        else:
            assert (row["state"], row["last_error_code"]) == ("not_writable", "ORDER_NOT_OPEN"), row
            assert order_id in corrected and held is not None and held != row["payload_json"]
    print(f"converged in {len(runs)} run(s): {sends}; sandbox faults {faults}")
