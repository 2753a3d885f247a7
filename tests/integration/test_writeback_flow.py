"""The write-back job against the Kombo sandbox over HTTP, with the warehouse and the state store on SQLite and
on PostgreSQL: sent once, incremental with overlap, quarantine, changes while OPEN and after, dead letters and
their replay, lost acknowledgements, dry runs, chosen orders and invitation ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from kombo_sync.state.audit import Quarantine
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.schema import quarantine
from kombo_sync.writeback.job import (
    enqueue_results,
    outbox_report,
    run_writeback,
    send_pending,
)
from kombo_sync.writeback.sender import ResultSender
from kombo_sync.writeback.window import writeback_window
from sandbox.warehouse import TINY_PDF
from tests.integration.writeback_helpers import (
    PLATFORM,
    T0,
    applied_bodies,
    expected_payload,
    fast_client,
    kombo_result,
    new_orders,
    outbox_rows,
    outbox_states,
    put_count,
    result_row,
    wb_settings,
    window,
    write_rows,
)


@pytest.mark.parametrize("send_with", ["asyncio", "threads"])
def test_every_result_reaches_kombo_once_as_mapped_and_a_rerun_sends_nothing(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client, send_with
):
    integration, ids = new_orders(state_store, kombo_sandbox, 12)
    rows = [result_row(order_id, T0 - timedelta(minutes=index)) for index, order_id in enumerate(ids)]
    for row in rows[::2]:  # half the reports come as file bytes (BLOB / BYTEA), half as https links
        row.update(report_url=None, report_bytes=TINY_PDF)
    rows[1].update(status="cancelled", score=None, max_score=None)
    write_rows(warehouse_engine, rows)
    settings = wb_settings(send_with=send_with)
    sender = ResultSender(state_store, fast_kombo_client, settings.writeback)
    assert sender.uses_asyncio is (send_with == "asyncio")

    first = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())

    assert first["read"]["chunks"] == 2  # 12 rows, 7 per chunk
    assert (first["read"]["enqueued"], first["send"]["sent"], first["send"]["dead"]) == (12, 12, 0)
    for row in rows:
        assert kombo_result(kombo_sandbox, row["order_id"]) == expected_payload(row)
    assert kombo_result(kombo_sandbox, ids[0])["attachments"][0]["content_type"] == "application/pdf"
    assert "data" in kombo_result(kombo_sandbox, ids[0])["attachments"][0]
    assert kombo_result(kombo_sandbox, ids[3])["attachments"][0]["data_url"].startswith(PLATFORM)
    assert kombo_sandbox.admin.get_order(ids[1])["status"] == "CANCELLED"
    assert outbox_states(state_store) == {"sent": 12}

    second = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())

    assert (second["read"]["unchanged"], second["read"]["enqueued"], second["send"]["claimed"]) == (12, 0, 0)
    assert put_count(kombo_sandbox) == 12


def test_reads_the_interval_plus_the_overlap_and_sends_late_rows_once(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client
):
    _, (late, too_old, inside, next_interval, last_ms) = new_orders(state_store, kombo_sandbox, 5)
    write_rows(
        warehouse_engine,
        [
            result_row(late, T0 - timedelta(minutes=30)),  # committed after the previous run read its window
            result_row(too_old, T0 - timedelta(minutes=90)),
            result_row(inside, T0 + timedelta(minutes=5)),
            result_row(next_interval, T0 + timedelta(minutes=10)),  # the interval is half-open
            result_row(last_ms, T0 + timedelta(minutes=10) - timedelta(milliseconds=1)),
        ],
    )
    settings = wb_settings()

    def run_interval(start):
        start_at, end_at = writeback_window(
            overlap_minutes=60,
            now=start + timedelta(minutes=11),
            data_interval_start=start,
            data_interval_end=start + timedelta(minutes=10),
            run_type="scheduled",
        )
        read = enqueue_results(
            state_store, warehouse_engine, settings, window_start=start_at, window_end=end_at
        )
        send_pending(state_store, fast_kombo_client, settings)
        return read

    first = run_interval(T0)
    assert first["rows"] == 3
    assert {o for o in (late, too_old, inside, next_interval, last_ms) if kombo_result(kombo_sandbox, o)} == {
        late,
        inside,
        last_ms,
    }

    second = run_interval(T0 + timedelta(minutes=10))
    assert (second["rows"], second["unchanged"], second["enqueued"]) == (4, 3, 1)
    assert kombo_result(kombo_sandbox, next_interval) is not None
    assert kombo_result(kombo_sandbox, too_old) is None
    assert put_count(kombo_sandbox) == 4


def test_bad_rows_are_quarantined_with_their_reason_and_the_batch_goes_on(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client
):
    _, ids = new_orders(state_store, kombo_sandbox, 7)
    good, over_max, plain_http, bad_json, not_done, big_report, negative = ids
    write_rows(
        warehouse_engine,
        [
            result_row(good),
            result_row(over_max, score=120.0, max_score=100.0),
            result_row(plain_http, result_url="http://platform.example/r/1"),
            result_row(bad_json, sub_results='[{"id": "logic", "label": "Logic", "score": 3'),
            result_row(not_done, status="in_progress"),
            result_row(big_report, report_url=None, report_bytes=b"x" * 2048),
            result_row(negative, score=-1.0),
            result_row("order-the-pipeline-never-saw"),
        ],
    )
    settings = wb_settings(max_attachment_bytes=1024)

    summary = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())

    assert (summary["read"]["mapped"], summary["read"]["quarantined"], summary["send"]["sent"]) == (1, 7, 1)
    assert kombo_result(kombo_sandbox, good) is not None
    reasons = {row.source_key: row.reason for row in Quarantine(state_store).list_open("writeback")}
    assert "above max_score" in reasons[over_max]
    assert "https" in reasons[plain_http]
    assert reasons[bad_json].startswith("sub_results")
    assert "completed or cancelled" in reasons[not_done]
    assert "max_attachment_bytes" in reasons[big_report]
    assert "negative" in reasons[negative]
    assert "state store" in reasons["order-the-pipeline-never-saw"]
    assert put_count(kombo_sandbox) == 1

    # The overlap reads the same bad rows again: they are not quarantined twice.
    run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())
    with state_store.transaction(readonly=True) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar_one() == 7


def test_a_change_while_open_is_sent_and_a_change_after_is_not_writable(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client
):
    _, (queued, delivered, cancelled_in_ats) = new_orders(state_store, kombo_sandbox, 3)
    settings = wb_settings()
    write_rows(warehouse_engine, [result_row(queued, score=40.0)])
    # Read but not sent yet (say Kombo was unreachable); then the platform re-scores the candidate.
    enqueue_results(state_store, warehouse_engine, settings, **window())
    rescored = result_row(queued, T0 + timedelta(minutes=1), score=45.0)
    write_rows(warehouse_engine, [rescored, result_row(delivered, score=70.0)])
    run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())
    assert applied_bodies(kombo_sandbox, queued) == [expected_payload(rescored)]
    assert {row["state"] for row in outbox_rows(state_store) if row["order_id"] == queued} == {
        "sent",
        "superseded",
    }

    # The order left OPEN with our first result: a later change is recorded, not sent.
    changed = result_row(delivered, T0 + timedelta(minutes=2), score=75.0)
    write_rows(warehouse_engine, [changed])
    kombo_sandbox.admin.cancel_order(cancelled_in_ats)  # the recruiter cancels before the result comes
    write_rows(warehouse_engine, [result_row(cancelled_in_ats, T0 + timedelta(minutes=2))])
    summary = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())

    assert summary["read"]["not_writable"] == 1  # known before sending: the order already took a result
    assert summary["send"]["not_writable"] == 2
    assert [body["score"] for body in applied_bodies(kombo_sandbox, delivered)] == [70.0]
    assert applied_bodies(kombo_sandbox, cancelled_in_ats) == []
    letters = {letter["order_id"]: letter for letter in outbox_report(state_store)["dead_letters"]}
    assert letters[delivered]["state"] == "not_writable"
    assert letters[delivered]["code"] == "ORDER_NOT_OPEN"
    assert letters[cancelled_in_ats]["code"] == "PLATFORM.INPUT_INVALID"  # Kombo's refusal, with its log
    assert "CANCELLED" in letters[cancelled_in_ats]["message"]
    assert letters[cancelled_in_ats]["log_url"]


def test_permanent_errors_become_dead_letters_and_replay_by_order_ids_or_all(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client
):
    integration, ids = new_orders(state_store, kombo_sandbox, 3)
    rows = [result_row(order_id) for order_id in ids]
    write_rows(warehouse_engine, rows)
    settings = wb_settings()
    kombo_sandbox.admin.set_integration_state(integration, status="INACTIVE")

    summary = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())

    assert summary["send"]["dead"] == 3
    letters = outbox_report(state_store)["dead_letters"]
    assert {letter["code"] for letter in letters} == {"INTEGRATION.INACTIVE"}
    assert all(letter["message"] and letter["log_url"] for letter in letters)

    kombo_sandbox.admin.set_integration_state(integration, status="ACTIVE")
    # A plain re-run reads the same results: nothing new to queue, dead letters stay put until replayed.
    assert (
        run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())["send"]["sent"]
        == 0
    )

    replayed = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, order_ids=[ids[0]])
    assert (replayed["replay"]["requeued"], replayed["send"]["sent"]) == (1, 1)
    assert kombo_result(kombo_sandbox, ids[0]) == expected_payload(rows[0])
    assert kombo_result(kombo_sandbox, ids[1]) is None

    rest = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, replay=True, **window())
    assert (rest["replay"]["requeued"], rest["send"]["sent"]) == (2, 2)
    assert outbox_states(state_store) == {"sent": 3}


def test_lost_acknowledgements_are_resolved_by_reading_the_order_back(
    state_store, warehouse_engine, kombo_sandbox
):
    _, ids = new_orders(state_store, kombo_sandbox, 4)
    rows = [result_row(order_id) for order_id in ids]
    write_rows(warehouse_engine, rows)
    # Every PUT is applied and its reply lost; reads answer normally.
    kombo_sandbox.admin.set_knobs(lost_response_rate=1.0, fault_methods=["PUT"])

    with fast_client(kombo_sandbox, max_retries=1) as client:
        summary = run_writeback(state_store, warehouse_engine, client, wb_settings(), **window())

    assert (summary["send"]["resolved_by_readback"], summary["send"]["sent"], summary["send"]["dead"]) == (
        4,
        0,
        0,
    )
    assert outbox_states(state_store) == {"sent": 4}
    for row in rows:
        assert applied_bodies(kombo_sandbox, row["order_id"]) == [expected_payload(row)]


def test_dry_run_prints_payloads_and_diffs_and_changes_nothing(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client
):
    _, (first, second) = new_orders(state_store, kombo_sandbox, 2)
    write_rows(warehouse_engine, [result_row(first), result_row(second, score=101.0, max_score=100.0)])
    settings = wb_settings()

    preview = run_writeback(
        state_store, warehouse_engine, fast_kombo_client, settings, dry_run=True, **window()
    )

    assert [p["action"] for p in preview["read"]["previews"]] == ["send"]
    assert preview["read"]["previews"][0]["payload"]["score"] == expected_payload(result_row(first))["score"]
    assert "above max_score" in preview["read"]["rejections"][0]["reason"]
    assert preview["send"] == {"dry_run": True, "sent": 0, "outbox": preview["send"]["outbox"]}
    assert outbox_rows(state_store) == []
    assert Quarantine(state_store).list_open() == []
    assert put_count(kombo_sandbox) == 0

    run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())
    write_rows(warehouse_engine, [result_row(first, T0 + timedelta(minutes=1), score=12.0)])
    preview = run_writeback(
        state_store, warehouse_engine, fast_kombo_client, settings, dry_run=True, order_ids=[first]
    )
    (shown,) = preview["read"]["previews"]
    assert shown["action"] == "not_writable"
    assert shown["diff"]["score"][1] == 12.0
    assert put_count(kombo_sandbox) == 1


def test_chosen_orders_are_read_whatever_their_date(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client
):
    _, (old, recent) = new_orders(state_store, kombo_sandbox, 2)
    write_rows(warehouse_engine, [result_row(old, T0 - timedelta(days=30)), result_row(recent)])

    summary = run_writeback(
        state_store,
        warehouse_engine,
        fast_kombo_client,
        wb_settings(),
        order_ids=[old, "not-in-the-warehouse"],
    )

    assert (summary["read"]["rows"], summary["send"]["sent"]) == (1, 1)
    assert summary["read"]["missing_in_warehouse"] == ["not-in-the-warehouse"]
    assert kombo_result(kombo_sandbox, old) is not None
    assert kombo_result(kombo_sandbox, recent) is None


def test_results_keyed_by_invitation_id_are_joined_through_the_state_store(
    state_store, warehouse_engine, kombo_sandbox, fast_kombo_client, tmp_path
):
    _, (order_id,) = new_orders(state_store, kombo_sandbox, 1)
    repository = OrderRepository(state_store)
    (claim,) = repository.claim_orders_for_invite("test", 60, 1)
    assert repository.mark_invited(order_id, "test", "inv-123", "https://x/a", "platform", "inv-123")
    row = result_row(order_id)
    write_rows(warehouse_engine, [row])
    # The team's query knows only the platform's invitation id.
    sql_file = tmp_path / "results.sql"
    sql_file.write_text(
        "SELECT NULL AS order_id, 'inv-123' AS invitation_id, status, score, max_score, completed_at,\n"
        "       result_url, report_url, report_bytes, report_name, report_content_type, sub_results,\n"
        "       attributes, updated_at\n"
        "FROM assessment_results WHERE updated_at >= :window_start AND updated_at < :window_end"
    )
    settings = wb_settings(sql_file=str(sql_file))

    summary = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, **window())
    by_ids = run_writeback(state_store, warehouse_engine, fast_kombo_client, settings, order_ids=[order_id])

    assert summary["send"]["sent"] == 1
    assert kombo_result(kombo_sandbox, order_id) == expected_payload(row)
    assert (by_ids["read"]["rows"], by_ids["read"]["unchanged"]) == (1, 1)
    assert claim.order_id == order_id


@pytest.mark.parametrize("missing", ["status", "result_url"])
def test_a_query_that_breaks_the_column_contract_stops_with_a_clear_message(
    state_store, warehouse_engine, fast_kombo_client, tmp_path, missing
):
    columns = ["order_id", "status", "result_url", "updated_at"]
    columns.remove(missing)
    sql_file = tmp_path / "results.sql"
    sql_file.write_text(
        f"SELECT {', '.join(columns)} FROM assessment_results "
        "WHERE updated_at >= :window_start AND updated_at < :window_end"
    )
    write_rows(warehouse_engine, [result_row("any-order")])
    with pytest.raises(ValueError, match=f"must return the column.*{missing}"):
        enqueue_results(state_store, warehouse_engine, wb_settings(sql_file=str(sql_file)), **window())


def test_sender_records_deliveries_through_the_outbox_repository(state_store, monkeypatch):
    # One writer of result_outbox: the sender marks its deliveries with ResultOutbox.mark_sent_many.
    import kombo_sync.writeback.sender as sender_module
    from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
    from kombo_sync.writeback.mapping import payload_hash

    assert not hasattr(sender_module, "mark_sent_many")
    payloads = {f"o{n}": {"status": "COMPLETED", "score": n} for n in range(30)}
    ResultOutbox(state_store).enqueue(
        [OutboxEntry(order_id, "lever:x", payload_hash(p), p, None) for order_id, p in payloads.items()]
    )
    batches: list[list[tuple[str, str]]] = []
    real_mark_sent_many = ResultOutbox.mark_sent_many

    def spy(self, keys, **kwargs):
        keys = list(keys)
        batches.append(keys)
        return real_mark_sent_many(self, keys, **kwargs)

    monkeypatch.setattr(ResultOutbox, "mark_sent_many", spy)

    class Kombo:
        def put_result(self, integration_id, order_id, payload):
            return []

        def get_orders_by_ids(self, integration_id, order_ids):  # pragma: no cover - nothing to read back
            return []

    summary = sender_module.ResultSender(state_store, Kombo(), wb_settings().writeback).run()
    assert (summary["claimed"], summary["sent"], summary["lease_lost"]) == (30, 30, 0)
    assert sorted(key for batch in batches for key in batch) == sorted(
        (order_id, payload_hash(p)) for order_id, p in payloads.items()
    )
    assert ResultOutbox(state_store).counts_by_state()["sent"] == 30


def test_the_sends_run_with_the_heap_frozen_and_give_it_back(state_store):
    # A full collection over the process's long-lived objects would stop the sends' loop (kombo_sync.heap): the
    # sender freezes what exists when it starts and unfreezes it when it is done, even when a send fails.
    import gc

    import kombo_sync.writeback.sender as sender_module
    from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
    from kombo_sync.writeback.mapping import payload_hash

    gc.unfreeze()  # whatever an earlier test left frozen in this process
    payloads = {f"f{n}": {"status": "COMPLETED", "score": n} for n in range(5)}
    ResultOutbox(state_store).enqueue(
        [OutboxEntry(order_id, "lever:x", payload_hash(p), p, None) for order_id, p in payloads.items()]
    )
    seen: list[int] = []

    class Kombo:
        def put_result(self, integration_id, order_id, payload):
            seen.append(gc.get_freeze_count())
            if order_id == "f3":
                raise RuntimeError("a bug in a send")
            return []

        def get_orders_by_ids(self, integration_id, order_ids):  # pragma: no cover - nothing to read back
            return []

    summary = sender_module.ResultSender(state_store, Kombo(), wb_settings().writeback).run()
    assert summary["claimed"] == 5 and summary["sent"] == 4
    assert len(seen) == 5 and min(seen) > 1_000  # the interpreter's, pytest's and our modules' objects
    assert gc.get_freeze_count() == 0
