"""The console's queries over a seeded state store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from kombo_sync.console.queries import ConsoleQueries, recent_order_counts
from kombo_sync.state.store import StateStore
from tests.support.console import (
    CANDIDATE_EMAIL,
    DISABLED,
    HEALTHY,
    LOG_URL,
    UNHEALTHY,
    seed_console_state,
)


def test_overview_counts_each_integration_and_puts_the_unhealthy_first(state_store: StateStore) -> None:
    seed_console_state(state_store, state_store.now())
    rows = ConsoleQueries(state_store).overview()
    assert [row["integration_id"] for row in rows] == [DISABLED, UNHEALTHY, HEALTHY]
    by_id = {row["integration_id"]: row for row in rows}

    healthy = by_id[HEALTHY]
    assert healthy["health"] == "ok" and healthy["problems"] == ""
    assert (healthy["customer"], healthy["tool"], healthy["status"], healthy["enabled"]) == (
        "Healthy GmbH",
        "greenhouse",
        "ACTIVE",
        True,
    )
    assert healthy["packages"] == 2 and healthy["packages_published_at"] is not None
    assert healthy["last_poll_at"] is not None
    # today: the invited order and the one just received; this week also the one from 3 days ago.
    assert (healthy["week_invited"], healthy["week_received"]) == (1, 2)
    assert healthy["results_written_7d"] == 1 and healthy["dead_letters"] == 0

    troubled = by_id[UNHEALTHY]
    assert troubled["health"] == "unhealthy"
    assert (troubled["week_failed"], troubled["week_rejected"], troubled["dead_letters"]) == (1, 1, 2)
    assert troubled["quarantined"] == 1
    assert troubled["last_error"].startswith("result: INTEGRATION.INACTIVE")
    assert troubled["last_error_log_url"] == LOG_URL
    assert "2 dead letter(s)" in troubled["problems"] and "1 quarantined row(s)" in troubled["problems"]

    assert "not served" in by_id[DISABLED]["problems"]


def test_overview_counts_recent_orders_from_the_reception_time_index(state_store: StateStore) -> None:
    now = state_store.now()
    query = recent_order_counts(now, now - timedelta(days=7))
    explain = "EXPLAIN QUERY PLAN " if state_store.dialect == "sqlite" else "EXPLAIN "
    with state_store.transaction(readonly=True) as conn:
        if state_store.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # an empty table: ask whether it *can*
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(explain + str(compiled)))
    assert "ix_orders_received_at_integration_id" in plan, plan


def test_dead_letters_and_quarantine_hide_candidate_data_unless_allowed(state_store: StateStore) -> None:
    seeded = seed_console_state(state_store, state_store.now())
    queries = ConsoleQueries(state_store)
    letters = queries.dead_letters()
    assert sorted(letter["order_id"] for letter in letters) == sorted(seeded.dead_orders)
    assert {letter["code"] for letter in letters} == {"INTEGRATION.INACTIVE"}
    assert {letter["log_url"] for letter in letters} == {LOG_URL}
    assert all(letter["first_attempt_at"] and letter["last_attempt_at"] for letter in letters)
    assert queries.dead_letters(integration_id=HEALTHY) == []

    [row] = queries.quarantine()
    assert row["id"] == seeded.quarantine_id and row["integration_id"] == UNHEALTHY
    assert CANDIDATE_EMAIL not in row["reason"] and "[e-mail hidden]" in row["reason"]
    assert "row_json" not in row
    assert CANDIDATE_EMAIL in queries.quarantine(with_candidates=True)[0]["reason"]


def test_order_lookup_by_order_invitation_or_application_id(state_store: StateStore) -> None:
    seeded = seed_console_state(state_store, state_store.now())
    queries = ConsoleQueries(state_store)
    for term in (seeded.invited_order, seeded.invitation_id, seeded.application_id):
        history = queries.order_history(term)
        assert [order["id"] for order in history.orders] == [seeded.invited_order], term
        assert [invitation["external_id"] for invitation in history.invitations] == [seeded.invitation_id]
        assert [event["response_status"] for event in history.webhooks] == [200]
        assert [version["state"] for version in history.versions] == ["sent"]
        assert "candidate_email" not in history.orders[0]
    shown = queries.order_history(seeded.invited_order, with_candidates=True).orders[0]
    assert (shown["candidate_email"], shown["candidate_name"]) == (CANDIDATE_EMAIL, "Ada Lovelace")

    dead = queries.order_history(seeded.dead_orders[0])
    assert dead.versions[0]["code"] == "INTEGRATION.INACTIVE" and dead.versions[0]["log_url"] == LOG_URL
    assert queries.order_history("nothing-like-this").orders == []


def test_webhook_log_shows_answers_without_candidate_data(state_store: StateStore) -> None:
    seeded = seed_console_state(state_store, state_store.now())
    queries = ConsoleQueries(state_store)
    events = queries.webhook_log()
    assert [event["id"] for event in events] == [seeded.rejected_event, "evt-accepted-1"]
    assert events[0]["response_status"] == 422 and "ORDER_REJECTED" in events[0]["answer"]
    assert [event["id"] for event in queries.webhook_log(status=422)] == [seeded.rejected_event]
    assert CANDIDATE_EMAIL not in repr(events)


def test_funnel_counts_the_seeded_orders_results_and_webhooks(state_store: StateStore) -> None:
    seed_console_state(state_store, state_store.now())
    queries = ConsoleQueries(state_store)
    week = queries.funnel("7d")
    # Five orders this week (the erased one is 40 days old); one invited; three results queued, one sent.
    assert week.totals == {"received": 5, "invited": 1, "finished": 3, "written_back": 1}
    assert week.webhook_statuses == {200: 1, 422: 1}
    assert sum(week.invite_latency) == 1 and sum(week.writeback_lag) == 1
    # Invited about 30 minutes after it was received (the seed's clock and the store's are a moment apart).
    assert week.invite_latency[2] == 1 and 25 * 60 < (week.invite_latency_avg_s or 0) < 35 * 60
    assert len(week.buckets) in (7, 8) and all(len(row["bucket"]) == 10 for row in week.buckets)
    assert sum(row["received"] for row in week.buckets) == 5
    assert sum(row["webhooks_422"] for row in week.buckets) == 1

    month = queries.funnel("30d")
    assert month.totals["received"] == 5 and month.totals["invited"] == 1

    today = queries.funnel("today")
    assert all(len(row["bucket"]) == 13 for row in today.buckets)  # per hour
    assert today.totals["received"] <= 4 and today.totals["finished"] == 3


def test_funnel_reads_orders_from_the_funnel_index(state_store: StateStore) -> None:
    """The order counts and latency of a period come from the reception time index (with invited_at) alone."""
    seed_console_state(state_store, state_store.now())
    with state_store.transaction(readonly=True) as conn:
        if state_store.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        since = (state_store.now() - timedelta(days=7)).replace(tzinfo=None).isoformat(sep=" ")
        sql = "SELECT count(*), count(invited_at) FROM orders WHERE received_at >= '" + since + "'"
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(explain + sql))
    assert "ix_orders_received_at_integration_id" in plan, plan


def test_run_history_and_erasures_hold_no_candidate_data(state_store: StateStore) -> None:
    seeded = seed_console_state(state_store, state_store.now())
    queries = ConsoleQueries(state_store)
    found = queries.run_history()
    assert [(run["job"], run["status"]) for run in found] == [("writeback", "failed"), ("intake", "success")]
    assert found[0]["summary"] == "sent=1, dead=2" and found[0]["duration_s"] is not None
    assert [run["job"] for run in queries.run_history(job="intake")] == ["intake"]
    assert queries.run_jobs() == ["intake", "writeback"]

    [erasure] = queries.erasures()
    assert (erasure["kind"], erasure["requested_by"], erasure["order_count"]) == ("request", "admin", 1)
    assert erasure["reason"] == "candidate asked (ticket 7)" and "orders_erased=1" in erasure["counts"]
    assert seeded.erased_order not in repr(erasure) and "grace.hopper" not in repr(erasure)


def test_overview_marks_integrations_whose_newest_poll_failed(state_store: StateStore) -> None:
    from kombo_sync.console.queries import POLL_JOB
    from kombo_sync.intake.tasks import POLL_JOB as INTAKE_POLL_JOB
    from kombo_sync.state.audit import RunAudit

    assert POLL_JOB == INTAKE_POLL_JOB
    seed_console_state(state_store, state_store.now())
    audit = RunAudit(state_store)
    failing = audit.start(POLL_JOB, "scheduled__1")
    audit.finish(
        failing,
        "failed",
        {
            "integrations_polled": 3,
            "integrations_failed": {HEALTHY: "REMOTE.AUTHENTICATION_FAILED: token revoked"},
        },
    )
    by_id = {row["integration_id"]: row for row in ConsoleQueries(state_store).overview()}
    assert by_id[HEALTHY]["health"] == "unhealthy"
    assert "last poll failed" in by_id[HEALTHY]["problems"]
    assert by_id[HEALTHY]["last_error"] == "poll: REMOTE.AUTHENTICATION_FAILED: token revoked"
    assert "last poll failed" not in by_id[UNHEALTHY]["problems"]

    # A later poll that read the integration clears the mark.
    healed = audit.start(POLL_JOB, "scheduled__2")
    audit.finish(healed, "success", {"integrations_polled": 3, "integrations_failed": {}})
    by_id = {row["integration_id"]: row for row in ConsoleQueries(state_store).overview()}
    assert by_id[HEALTHY]["health"] == "ok" and by_id[HEALTHY]["problems"] == ""
