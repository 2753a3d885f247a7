"""Alert conditions and de-duplication on the state store (SQLite and PostgreSQL), with a hand-moved clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from kombo_sync.alerts.channels import AlertDeliveryError
from kombo_sync.alerts.check import check_and_alert
from kombo_sync.alerts.conditions import (
    dead_letters,
    integrations_failing,
    orders_not_invited,
    quarantined_rows,
)
from kombo_sync.alerts.ledger import AlertLedger
from kombo_sync.alerts.messages import Alert
from kombo_sync.catalog.job import JOB as CATALOG_JOB
from kombo_sync.intake.tasks import POLL_JOB
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.mapping import payload_hash

INTEGRATION = "lever:abc"
LIMIT = 100


class RecordingChannel:
    """A channel that keeps what it was given (or fails, when told to)."""

    def __init__(self, name: str = "memory", fail: bool = False) -> None:
        self.name = name
        self.conn_id = "test"
        self.fail = fail
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.fail:
            raise AlertDeliveryError("HTTP status 500")
        self.sent.append(alert)


def settings(**alerts: Any) -> PipelineSettings:
    values: dict[str, Any] = {"channels": {"email": {"to": ["team@provider.example"]}}}
    values.update(alerts)
    return PipelineSettings.model_validate({"alerts": values})


def order(order_id: str, **candidate: str) -> dict[str, Any]:
    return {"id": order_id, "package_id": "pkg-1", "status": "OPEN", "candidate": candidate}


def record_orders(store: StateStore, *ids: str) -> None:
    OrderRepository(store).record_orders([order(i) for i in ids], "poll", integration_id=INTEGRATION)


def dead_letter(store: StateStore, order_id: str, code: str = "INVALID_INPUT", message: str = "bad") -> str:
    payload = {"status": "COMPLETED", "score": 1, "order": order_id}
    digest = payload_hash(payload)
    outbox = ResultOutbox(store)
    outbox.enqueue([OutboxEntry(order_id, INTEGRATION, digest, payload, None)])
    assert outbox.mark_dead(order_id, digest, code, message, f"https://app.kombo.dev/logs/{order_id}")
    return digest


def finish_run(store: StateStore, job: str, status: str, summary: dict[str, Any]) -> None:
    audit = RunAudit(store)
    audit.finish(audit.start(job, f"run-{job}"), status, summary)


def poll(failed: dict[str, str]) -> dict[str, Any]:
    return {"integrations": 3, "integrations_failed": failed, "orders_seen": 0}


def test_orders_not_invited_after_the_threshold_only(state_store: StateStore, state_clock: Any) -> None:
    record_orders(state_store, "o-old")
    state_clock.advance(minutes=20)
    record_orders(state_store, "o-new")
    alerts = settings(thresholds={"order_not_invited_minutes": 30}).alerts
    assert orders_not_invited(state_store, alerts, state_clock.advance(minutes=9), LIMIT) == []
    found = orders_not_invited(state_store, alerts, state_clock.advance(minutes=1), LIMIT)
    assert [f.subject for f in found] == ["o-old"]
    assert "received for 30 min" in found[0].line
    # Invited orders are no longer a condition, claimed (inviting) ones still are.
    repo = OrderRepository(state_store)
    [claimed] = repo.claim_orders_for_invite("w1", 300, 1, now=state_clock())
    assert claimed.order_id == "o-old"
    [held] = orders_not_invited(state_store, alerts, state_clock(), LIMIT)
    assert "): inviting for 30 min" in held.line
    assert repo.mark_invited("o-old", "w1", "inv-1", None, "platform", None)
    found = orders_not_invited(state_store, alerts, state_clock.advance(minutes=30), LIMIT)
    assert [f.subject for f in found] == ["o-new"]


def test_dead_letters_carry_code_and_log_url_not_the_message(state_store: StateStore) -> None:
    digest = dead_letter(state_store, "o1", code="INVALID_INPUT", message="score for jane@example.com wrong")
    [found] = dead_letters(state_store, settings().alerts, state_store.now(), LIMIT)
    assert found.subject == f"o1:{digest}"
    assert "code INVALID_INPUT" in found.line and "https://app.kombo.dev/logs/o1" in found.line
    assert "jane" not in found.line
    # A code that is free text is not printed.
    dead_letter(state_store, "o2", code="weird code with jane@example.com")
    lines = [f.line for f in dead_letters(state_store, settings().alerts, state_store.now(), LIMIT)]
    assert not any("jane" in line for line in lines)


def test_quarantined_rows_are_ids_and_jobs(state_store: StateStore) -> None:
    jail = Quarantine(state_store)
    first = jail.add("writeback", "o1", "bad e-mail jane@example.com", {"email": "jane@example.com"}, "r1")
    second = jail.add("catalog", "cust/pkg", "missing name", {"name": "Jane"})
    jail.resolve([first])
    [found] = quarantined_rows(state_store, settings().alerts, state_store.now(), LIMIT)
    assert found.subject == str(second) and found.group == "catalog"
    assert "Jane" not in found.line


def test_integration_failing_needs_n_failed_runs_in_a_row(state_store: StateStore, state_clock: Any) -> None:
    alerts = settings(thresholds={"integration_failing_runs": 3}).alerts
    for failed in ({"a:1": "RATE_LIMIT: slow down"}, {}, {"a:1": "X: y"}):
        finish_run(state_store, POLL_JOB, "failed", poll(failed))
        state_clock.advance(minutes=5)
    assert integrations_failing(state_store, alerts, state_clock(), LIMIT) == []
    # A crashed run (no per-integration data) and an unfinished one do not break or extend a streak.
    finish_run(state_store, POLL_JOB, "failed", {"error": "OperationalError"})
    RunAudit(state_store).start(POLL_JOB, "running")
    state_clock.advance(minutes=5)
    finish_run(state_store, POLL_JOB, "failed", poll({"a:1": "ConnectTimeout: x", "b:2": "KOMBO: 1"}))
    state_clock.advance(minutes=5)
    assert integrations_failing(state_store, alerts, state_clock(), LIMIT) == []
    finish_run(
        state_store, POLL_JOB, "failed", poll({"a:1": "RATE_LIMIT: again", "b:2": "REMOTE_UNAVAILABLE: z"})
    )
    found = integrations_failing(state_store, alerts, state_clock.advance(minutes=5), LIMIT)
    assert [f.subject for f in found] == [f"{POLL_JOB}:a:1"]
    assert "last RATE_LIMIT" in found[0].line and "again" not in found[0].line
    finish_run(state_store, POLL_JOB, "failed", poll({"b:2": "REMOTE_UNAVAILABLE: z"}))
    found = integrations_failing(state_store, alerts, state_clock.advance(minutes=5), LIMIT)
    assert [f.subject for f in found] == [f"{POLL_JOB}:b:2"]


def test_integration_failing_in_catalog_runs(state_store: StateStore, state_clock: Any) -> None:
    alerts = settings(thresholds={"integration_failing_runs": 2}).alerts
    problem = {
        "integration_id": "a:1",
        "outcome": "failed",
        "code": "INTEGRATION_INACTIVE",
        "log_url": "https://app.kombo.dev/logs/1",
        "message": "inactive",
    }
    finish_run(
        state_store, CATALOG_JOB, "failed", {"options": {"integration_ids": []}, "problems": [problem]}
    )
    state_clock.advance(hours=1)
    # A manual run for another integration says nothing about a:1.
    finish_run(state_store, CATALOG_JOB, "success", {"options": {"integration_ids": ["b:2"]}, "problems": []})
    state_clock.advance(hours=1)
    finish_run(state_store, CATALOG_JOB, "failed", {"options": {}, "problems": [problem]})
    [found] = integrations_failing(state_store, alerts, state_clock.advance(hours=1), LIMIT)
    assert found.subject == f"{CATALOG_JOB}:a:1"
    assert "INTEGRATION_INACTIVE" in found.line and "https://app.kombo.dev/logs/1" in found.line


def test_check_sends_once_then_repeats_after_the_interval(state_store: StateStore, state_clock: Any) -> None:
    channel = RecordingChannel()
    config = settings(repeat_minutes=60, thresholds={"order_not_invited_minutes": 30})
    record_orders(state_store, "o1", "o2")
    dead_letter(state_store, "d1")
    summary = check_and_alert(state_store, config, now=state_clock.advance(minutes=31), channels=[channel])
    assert {a.kind for a in channel.sent} == {"order_not_invited", "dead_letter"}
    assert summary["kinds"]["order_not_invited"] == {
        "open": 2,
        "alerted": 2,
        "new": 2,
        "repeated": 0,
        "delivery": {"memory:test": "sent"},
    }
    not_invited = next(a for a in channel.sent if a.kind == "order_not_invited")
    assert not_invited.title.startswith("2 new orders not invited") and set(not_invited.ids) == {"o1", "o2"}

    channel.sent.clear()
    record_orders(state_store, "o3")
    check_and_alert(state_store, config, now=state_clock.advance(minutes=10), channels=[channel])
    assert channel.sent == []  # nothing new (o3 is 0 min old), nothing due again

    summary = check_and_alert(state_store, config, now=state_clock.advance(minutes=30), channels=[channel])
    not_invited = next(a for a in channel.sent if a.kind == "order_not_invited")
    assert not_invited.counts == {"new": 1, "repeated": 0, "open": 3}
    channel.sent.clear()

    summary = check_and_alert(state_store, config, now=state_clock.advance(minutes=21), channels=[channel])
    reminders = {a.kind: a for a in channel.sent}
    assert reminders["order_not_invited"].counts == {"new": 0, "repeated": 2, "open": 3}
    assert "still open" in reminders["order_not_invited"].title
    assert reminders["dead_letter"].counts["repeated"] == 1
    assert AlertLedger(state_store).sent("order_not_invited") == {"o1": 2, "o2": 2, "o3": 1}


def test_a_cleared_condition_is_forgotten_and_alerted_again(
    state_store: StateStore, state_clock: Any
) -> None:
    channel = RecordingChannel()
    config = settings(repeat_minutes=0)
    jail = Quarantine(state_store)
    first = jail.add("intake", "o1", "bad", None)
    check_and_alert(state_store, config, now=state_clock(), channels=[channel])
    check_and_alert(state_store, config, now=state_clock.advance(days=3), channels=[channel])
    assert [a.kind for a in channel.sent] == ["quarantined_row"]  # repeat 0: once while it holds
    jail.resolve([first])
    check_and_alert(state_store, config, now=state_clock.advance(minutes=1), channels=[channel])
    assert AlertLedger(state_store).sent("quarantined_row") == {}


def test_undelivered_alert_is_tried_again(state_store: StateStore, state_clock: Any) -> None:
    broken = RecordingChannel(fail=True)
    dead_letter(state_store, "d1")
    summary = check_and_alert(state_store, settings(), now=state_clock(), channels=[broken])
    assert summary["kinds"]["dead_letter"]["alerted"] == 0
    assert summary["kinds"]["dead_letter"]["delivery"] == {"memory:test": "failed: HTTP status 500"}
    assert AlertLedger(state_store).sent("dead_letter") == {}
    working = RecordingChannel()
    check_and_alert(state_store, settings(), now=state_clock.advance(minutes=1), channels=[broken, working])
    assert [a.kind for a in working.sent] == ["dead_letter"]
    # One channel took it: it counts as sent, and is not sent again to the working channel.
    check_and_alert(state_store, settings(), now=state_clock.advance(minutes=1), channels=[broken, working])
    assert len(working.sent) == 1


def test_disabled_kinds_and_no_channel(state_store: StateStore, state_clock: Any) -> None:
    dead_letter(state_store, "d1")
    channel = RecordingChannel()
    off = settings(kinds={"dead_letter": False})
    assert (
        "dead_letter" not in check_and_alert(state_store, off, now=state_clock(), channels=[channel])["kinds"]
    )
    assert channel.sent == []
    nothing = PipelineSettings()
    assert check_and_alert(state_store, nothing, now=state_clock(), channels=[channel]) == {
        "enabled": False,
        "kinds": {},
    }


def test_a_broken_condition_does_not_stop_the_others(
    state_store: StateStore, state_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombo_sync.alerts import conditions

    def broken(*_: Any) -> Sequence[Any]:
        raise RuntimeError("database went away")

    monkeypatch.setitem(conditions.CONDITIONS, "order_not_invited", broken)
    dead_letter(state_store, "d1")
    channel = RecordingChannel()
    summary = check_and_alert(state_store, settings(), now=state_clock(), channels=[channel])
    assert summary["kinds"]["order_not_invited"] == {"error": "RuntimeError"}
    assert [a.kind for a in channel.sent] == ["dead_letter"]


def test_concurrent_claims_win_each_subject_once(state_store: StateStore, make_state_store: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    now = state_store.now()
    subjects = [f"o{i}" for i in range(300)]
    ledgers = [AlertLedger(make_state_store()) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        claims = list(
            pool.map(
                lambda ledger: ledger.claim("order_not_invited", subjects, now=now, repeat=None), ledgers
            )
        )
    won = [subject for claim in claims for subject in claim.subjects]
    assert sorted(won) == sorted(subjects)


def test_a_naive_now_is_taken_as_utc(state_store: StateStore, state_clock: Any) -> None:
    dead_letter(state_store, "d1")
    channel = RecordingChannel()
    naive = state_clock().replace(tzinfo=None)
    assert check_and_alert(state_store, settings(), now=naive, channels=[channel])["kinds"]["dead_letter"][
        "alerted"
    ]


def test_a_huge_backlog_is_read_in_a_bounded_way(state_store: StateStore, state_clock: Any) -> None:
    jail = Quarantine(state_store)
    ids = [jail.add("writeback", f"o{i}", "bad", None) for i in range(5)]
    channel = RecordingChannel()
    summary = check_and_alert(state_store, settings(), now=state_clock(), channels=[channel], max_subjects=3)
    assert summary["kinds"]["quarantined_row"] == {
        "open": 3,
        "alerted": 3,
        "more": True,
        "new": 3,
        "repeated": 0,
        "delivery": {"memory:test": "sent"},
    }
    [alert] = channel.sent
    assert "Open in total: more than 3 quarantined rows." in alert.text()
    assert alert.ids == tuple(str(i) for i in reversed(ids[2:]))  # the newest are tracked
    # Without the full list nothing is taken as cleared.
    jail.resolve(ids[2:])
    check_and_alert(state_store, settings(), now=state_clock.advance(minutes=1), channels=[channel])
    assert set(AlertLedger(state_store).sent("quarantined_row")) == {str(i) for i in ids[:2]}
