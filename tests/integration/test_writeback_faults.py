"""The fault test of issue 5: the sandbox answers 20% 5xx, 10% 429, 5% timeouts and 5% lost responses, on every
method (the read-backs too). Repeated runs must converge to: every completed result in the warehouse present at
Kombo exactly as mapped, no order written with two different payloads, nothing in the outbox left unsent
without a recorded reason. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from kombo_sync.writeback.job import run_writeback
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

RESULTS = 100
MAX_RUNS = 6


def test_repeated_runs_converge_under_5xx_429_timeouts_and_lost_responses(
    state_store, warehouse_engine, kombo_sandbox
):
    first, ids = new_orders(state_store, kombo_sandbox, RESULTS // 2)
    second, more = new_orders(state_store, kombo_sandbox, RESULTS - RESULTS // 2)
    ids += more
    rows = [result_row(order_id, T0 - timedelta(seconds=index)) for index, order_id in enumerate(ids)]
    for row in rows[::5]:
        row.update(status="cancelled", score=None, max_score=None)
    write_rows(warehouse_engine, rows)
    kombo_sandbox.admin.set_knobs(
        error_rate=0.10,  # 503 REMOTE.SERVICE_UNAVAILABLE
        bare_503_rate=0.10,  # 503 from the load balancer, no JSON
        throttle_rate=0.10,  # 429 PLATFORM.RATE_LIMIT_EXCEEDED
        timeout_rate=0.05,  # hangs past the client's timeout, nothing applied
        timeout_hang_seconds=1.5,
        lost_response_rate=0.05,  # applied, then the connection drops
        seed=20260105,
    )
    settings = wb_settings(max_concurrency=16, claim_batch_rows=20, max_attempts=20)

    runs = []
    with fast_client(kombo_sandbox, timeout=1.0, max_retries=2) as client:
        for _ in range(MAX_RUNS):
            runs.append(run_writeback(state_store, warehouse_engine, client, settings, **window()))
            states = [row["state"] for row in outbox_rows(state_store)]
            if states.count("sent") == RESULTS and set(states) <= {"sent", "superseded"}:
                break
    kombo_sandbox.admin.set_knobs(
        error_rate=0, bare_503_rate=0, throttle_rate=0, timeout_rate=0, lost_response_rate=0
    )

    faults = kombo_sandbox.admin.stats()["faults"]
    assert faults.get("error") and faults.get("bare_503") and faults.get("throttle")
    assert faults.get("timeout") and faults.get("lost_response"), faults
    # Converged: every result sent, and each one at Kombo exactly as mapped, written with one payload only.
    outbox = outbox_rows(state_store)
    sends = [{k: v for k, v in run["send"].items() if k != "dead_letters"} for run in runs]
    assert {row["order_id"] for row in outbox if row["state"] == "sent"} == set(ids), sends
    for row in rows:
        assert kombo_result(kombo_sandbox, row["order_id"]) == expected_payload(row)
        assert len(applied_bodies(kombo_sandbox, row["order_id"])) == 1
    # Nothing left behind without a reason: no row waiting or in flight, every other row explains itself.
    for row in outbox:
        assert row["state"] in ("sent", "superseded") or (
            row["last_error_code"] and row["last_error_message"]
        )
        assert row["state"] not in ("pending", "sending")
    assert len(runs) < MAX_RUNS
    print(f"converged in {len(runs)} run(s): {sends}; sandbox faults {faults}")
