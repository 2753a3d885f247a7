"""Alerts delivered for real: the local SMTP server (sandbox.smtp) and a local webhook receiver
(sandbox.testing.WebhookRecorder), channels built from Airflow connections given as AIRFLOW_CONN_* variables.

Proves delivery, de-duplication, that a failing channel never raises (and the alert is sent later), and that no
candidate data reaches an alert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG

from kombo_sync.alerts import KomboAlertNotifier, check_and_alert
from kombo_sync.alerts.ledger import AlertLedger
from kombo_sync.intake.tasks import POLL_JOB
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.audit import Quarantine, RunAudit
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.outbox import OutboxEntry, ResultOutbox
from kombo_sync.state.store import StateStore
from kombo_sync.writeback.mapping import payload_hash
from sandbox.smtp import SmtpSandbox, run_in_thread
from sandbox.testing import WebhookRecorder

TEAM = ["data-team@provider.example", "oncall@provider.example"]
INTEGRATION = "greenhouse:canary"
# Candidate data planted everywhere the store keeps it; none of it may appear in an alert.
CANARY_EMAIL = "zebulon.quackenbush@canary-candidate.example"
CANARY_FIRST = "Zebulon"
CANARY_LAST = "Quackenbush"
CANARY_PHONE = "+1 555 0199 4242"
CANARIES = (CANARY_EMAIL, CANARY_FIRST, CANARY_LAST, CANARY_PHONE, "555 0199", "5550199")


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpSandbox]:
    """A local SMTP server (aiosmtpd) that records every accepted message under tmp_path/mailbox."""
    server = run_in_thread(tmp_path / "mailbox")
    yield server
    server.stop()


@pytest.fixture
def alert_connections(
    monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpSandbox, webhook_recorder: WebhookRecorder
) -> PipelineSettings:
    """`kombo_smtp` on the SMTP sandbox and `kombo_alerts_webhook` on the recorder; settings using both."""
    smtp = {
        "conn_type": "smtp",
        "host": smtp_server.host,
        "port": smtp_server.port,
        "extra": {"from_email": "alerts@provider.example", "disable_tls": True, "timeout": 5},
    }
    hook = {"conn_type": "http", "host": f"{webhook_recorder.url}/services/T000/B000/secret"}
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_SMTP", json.dumps(smtp))
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_ALERTS_WEBHOOK", json.dumps(hook))
    return PipelineSettings.model_validate(
        {
            "alerts": {
                "channels": {
                    "email": {"to": TEAM},
                    "webhook": {
                        "conn_id": "kombo_alerts_webhook",
                        "extra_payload": {"username": "kombo-sync"},
                    },
                },
                "thresholds": {"order_not_invited_minutes": 30, "integration_failing_runs": 2},
                "repeat_minutes": 120,
                "airflow_base_url": "https://airflow.provider.example",
            }
        }
    )


def candidate_order(order_id: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "package_id": "pkg-1",
        "status": "OPEN",
        "candidate": {
            "email": CANARY_EMAIL,
            "first_name": CANARY_FIRST,
            "last_name": CANARY_LAST,
            "phone": CANARY_PHONE,
            "remote_id": "cand-1",
        },
        "application": {"remote_id": "app-1"},
        "job": {"remote_id": "job-1", "name": "Engineer"},
    }


def plant_every_condition(store: StateStore, clock: Any) -> None:
    """One subject for each state-based kind, with candidate data in every free-text field the store has."""
    repo = OrderRepository(store)
    repo.record_orders(
        [candidate_order("o-stuck"), candidate_order("o-retrying")], "poll", integration_id=INTEGRATION
    )
    [claimed, _] = repo.claim_orders_for_invite("w1", 300, 2, now=clock())
    error = f"platform refused {CANARY_EMAIL} ({CANARY_FIRST} {CANARY_LAST}, {CANARY_PHONE})"
    assert repo.release_with_error(claimed.order_id, "w1", error, clock() + timedelta(hours=1))
    payload = {"status": "COMPLETED", "score": 3, "note": f"{CANARY_FIRST} {CANARY_LAST}"}
    digest = payload_hash(payload)
    outbox = ResultOutbox(store)
    outbox.enqueue([OutboxEntry("o-dead", INTEGRATION, digest, payload, None)])
    assert outbox.mark_dead(
        "o-dead", digest, "INVALID_INPUT", f"bad score for {CANARY_EMAIL}", "https://kombo.example/l/1"
    )
    Quarantine(store).add(
        "writeback",
        "o-bad",
        f"candidate_email {CANARY_EMAIL!r} is not valid; phone {CANARY_PHONE}",
        {"candidate_email": CANARY_EMAIL, "first_name": CANARY_FIRST, "phone": CANARY_PHONE},
        run_id="scheduled__2026-01-05T09:00:00+00:00",
    )
    audit = RunAudit(store)
    for _ in range(2):
        run = audit.start(POLL_JOB, "scheduled__x")
        audit.finish(
            run, "failed", {"integrations_failed": {INTEGRATION: f"KomboError: {CANARY_EMAIL} rejected"}}
        )
    clock.advance(minutes=31)


def mail_bodies(smtp: SmtpSandbox) -> list[str]:
    """Each message's headers and decoded text (a raw transfer encoding could hide a canary)."""
    texts = []
    for entry in smtp.messages():
        message = smtp.read(entry)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        content = body.get_content()
        assert "What to do:" in content
        texts.append("\n".join(f"{name}: {value}" for name, value in message.items()) + "\n\n" + content)
    return texts


def webhook_bodies(recorder: WebhookRecorder) -> list[str]:
    return [received.body.decode("utf-8") for received in recorder.received]


def assert_no_candidate_data(texts: list[str]) -> None:
    assert texts
    for text in texts:
        for canary in CANARIES:
            assert canary.lower() not in text.lower(), f"candidate data {canary!r} in an alert"


def test_alerts_reach_smtp_and_webhook_once(
    state_store: StateStore,
    state_clock: Any,
    smtp_server: SmtpSandbox,
    webhook_recorder: WebhookRecorder,
    alert_connections: PipelineSettings,
) -> None:
    plant_every_condition(state_store, state_clock)
    summary = check_and_alert(state_store, alert_connections, now=state_clock())
    kinds = ("dead_letter", "order_not_invited", "integration_failing", "quarantined_row")
    assert {kind: summary["kinds"][kind]["alerted"] for kind in kinds} == {
        "dead_letter": 1,
        "order_not_invited": 2,
        "integration_failing": 1,
        "quarantined_row": 1,
    }
    assert summary["channels"] == ["email:kombo_smtp", "webhook:kombo_alerts_webhook"]
    messages = smtp_server.messages()
    assert len(messages) == 4 and all(entry["rcpt_tos"] == TEAM for entry in messages)
    assert sorted(smtp_server.read(entry)["X-Kombo-Alert"] for entry in messages) == sorted(kinds)
    assert {received.path for received in webhook_recorder.received} == {"/services/T000/B000/secret"}
    payloads = [received.json() for received in webhook_recorder.received]
    assert len(payloads) == 4 and all(body["username"] == "kombo-sync" for body in payloads)
    dead = next(body["text"] for body in payloads if "dead letter" in body["text"])
    assert "order o-dead" in dead and "code INVALID_INPUT" in dead and "https://kombo.example/l/1" in dead
    assert "kombo_result_writeback" in dead  # what to do
    stuck = next(body["text"] for body in payloads if "not invited" in body["text"])
    assert "o-stuck" in stuck and "o-retrying" in stuck

    # De-duplication: the same conditions are not sent again within repeat_minutes...
    summary = check_and_alert(state_store, alert_connections, now=state_clock.advance(minutes=60))
    assert len(smtp_server.messages()) == 4 and len(webhook_recorder.received) == 4
    assert all(summary["kinds"][kind]["alerted"] == 0 for kind in kinds)
    # ...and are sent again, as reminders, after it.
    check_and_alert(state_store, alert_connections, now=state_clock.advance(minutes=61))
    assert len(smtp_server.messages()) == 8 and len(webhook_recorder.received) == 8
    assert all("still open" in body["text"] for body in [r.json() for r in webhook_recorder.received[4:]])
    assert_no_candidate_data(mail_bodies(smtp_server) + webhook_bodies(webhook_recorder))


def test_a_failing_channel_never_raises_and_the_alert_follows_later(
    state_store: StateStore,
    state_clock: Any,
    smtp_server: SmtpSandbox,
    webhook_recorder: WebhookRecorder,
    alert_connections: PipelineSettings,
) -> None:
    Quarantine(state_store).add("catalog", "cust/pkg", "missing name", {"x": 1})
    webhook_recorder.respond_with(500, {"error": "down"})
    smtp_server.fail_next(10)
    summary = check_and_alert(state_store, alert_connections, now=state_clock())
    result = summary["kinds"]["quarantined_row"]
    assert result["alerted"] == 0
    assert result["delivery"] == {
        "email:kombo_smtp": "failed: SMTP SMTPDataError (451)",
        "webhook:kombo_alerts_webhook": "failed: HTTP status 500",
    }
    assert AlertLedger(state_store).sent("quarantined_row") == {}
    # The webhook recovers, the mail server stays down: one channel is enough, and the alert is recorded.
    webhook_recorder.clear()  # answers 200 again; forget the refused attempt
    smtp_server.stop()
    summary = check_and_alert(state_store, alert_connections, now=state_clock.advance(minutes=5))
    assert summary["kinds"]["quarantined_row"]["alerted"] == 1
    assert summary["kinds"]["quarantined_row"]["delivery"]["email:kombo_smtp"].startswith("failed: SMTP")
    assert len([r for r in webhook_recorder.received if "quarantined row" in r.json()["text"]]) == 1
    check_and_alert(state_store, alert_connections, now=state_clock.advance(minutes=5))
    assert len([r for r in webhook_recorder.received if "quarantined row" in r.json()["text"]]) == 1


def test_an_unreachable_webhook_does_not_raise(
    state_store: StateStore,
    state_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    alert_connections: PipelineSettings,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_ALERTS_WEBHOOK", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/x"})
    )
    Quarantine(state_store).add("intake", "o1", "bad", None)
    summary = check_and_alert(state_store, alert_connections, now=state_clock())
    assert (
        summary["kinds"]["quarantined_row"]["delivery"]["webhook:kombo_alerts_webhook"]
        == "failed: HTTP ConnectError"
    )
    assert summary["kinds"]["quarantined_row"]["alerted"] == 1  # the e-mail went out


def test_failed_run_notifier_delivers_without_candidate_data(
    state_store: StateStore,
    smtp_server: SmtpSandbox,
    webhook_recorder: WebhookRecorder,
    alert_connections: PipelineSettings,
) -> None:
    dag = DAG("kombo_result_writeback", schedule=None)
    ti = SimpleNamespace(
        dag_id=dag.dag_id, task_id="send", run_id="manual__2026-01-05", map_index=-1, log_url=None
    )
    context = {
        "dag": dag,
        "run_id": ti.run_id,
        "ti": ti,
        "reason": "task_failure",
        "exception": ValueError(f"row for {CANARY_EMAIL} {CANARY_FIRST} {CANARY_LAST} {CANARY_PHONE}"),
        "params": {"order_ids": ["o1"]},
    }
    notifier = KomboAlertNotifier(settings=alert_connections, store=state_store)
    notifier(context)
    notifier(context)
    [mail] = smtp_server.messages()
    assert mail["subject"] == "[kombo-sync] DAG run failed: kombo_result_writeback (task send)"
    [hook] = webhook_recorder.received
    text = hook.json()["text"]
    assert "Run: manual__2026-01-05" in text and "Failed task(s): send" in text
    assert "https://airflow.provider.example/dags/kombo_result_writeback/runs/manual__2026-01-05" in text
    assert_no_candidate_data(mail_bodies(smtp_server) + webhook_bodies(webhook_recorder))


def test_no_alert_carries_candidate_data(
    state_store: StateStore,
    state_clock: Any,
    smtp_server: SmtpSandbox,
    webhook_recorder: WebhookRecorder,
    alert_connections: PipelineSettings,
) -> None:
    detailed = alert_connections.model_copy(deep=True)
    detailed.alerts.channels.webhook.include_details = True
    plant_every_condition(state_store, state_clock)
    check_and_alert(state_store, detailed, now=state_clock())
    assert len(smtp_server.messages()) == 4 and len(webhook_recorder.received) == 4
    assert all("kombo_alert" in received.json() for received in webhook_recorder.received)
    assert_no_candidate_data(mail_bodies(smtp_server) + webhook_bodies(webhook_recorder))


def test_run_alert_checks_builds_everything_from_the_configuration(
    state_store: StateStore,
    smtp_server: SmtpSandbox,
    monkeypatch: pytest.MonkeyPatch,
    alert_connections: PipelineSettings,
) -> None:
    from kombo_sync.alerts import run_alert_checks

    monkeypatch.setenv("KOMBO_STATE_DB_URL", state_store.url)
    Quarantine(state_store).add("intake", "o1", "bad", None)
    summary = run_alert_checks(alert_connections)
    assert summary["kinds"]["quarantined_row"]["alerted"] == 1
    assert len(smtp_server.messages()) == 1
    assert run_alert_checks(PipelineSettings()) == {"enabled": False, "kinds": {}}
    monkeypatch.setenv("KOMBO_STATE_DB_URL", "mysql://nowhere/none")
    assert run_alert_checks(alert_connections)["error"] == "StateStoreError"
