"""KomboAlertNotifier with Airflow-like contexts, the messages, the channel payloads and the alerts settings."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, BaseNotifier

from kombo_sync.alerts.channels import (
    AlertDeliveryError,
    EmailAlertChannel,
    WebhookAlertChannel,
    build_channels,
)
from kombo_sync.alerts.ledger import AlertLedger
from kombo_sync.alerts.messages import KINDS, Alert, safe_code, scrub
from kombo_sync.alerts.notifier import KomboAlertNotifier, failed_run_alert
from kombo_sync.settings import DEFAULT_CONFIG_PATH, AlertKinds, PipelineSettings, load_settings
from kombo_sync.state.migrations import SCRIPT_LOCATION
from kombo_sync.state.schema import ALERT_KINDS
from kombo_sync.state.store import StateStore

TEAM = ["data-team@provider.example"]


class RecordingChannel:
    def __init__(self, fail: bool = False) -> None:
        self.name = "memory"
        self.conn_id = "test"
        self.fail = fail
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.fail:
            raise AlertDeliveryError("SMTP SMTPServerDisconnected")
        self.sent.append(alert)


def settings(**alerts: Any) -> PipelineSettings:
    values: dict[str, Any] = {
        "channels": {"email": {"to": TEAM}},
        "airflow_base_url": "https://airflow.example/",
    }
    values.update(alerts)
    return PipelineSettings.model_validate({"alerts": values})


def airflow_context(**extra: Any) -> dict[str, Any]:
    """What the dag-processor hands a DAG's on_failure_callback: the template context of the last task."""
    dag = DAG("kombo_order_intake", schedule=None)
    ti = SimpleNamespace(
        dag_id="kombo_order_intake",
        task_id="dispatch",
        run_id="scheduled__2026-01-05T09:00:00+00:00",
        map_index=-1,
        try_number=3,
        log_url="https://airflow.example/dags/kombo_order_intake/runs/x/tasks/dispatch",
    )
    context: dict[str, Any] = {
        "dag": dag,
        "run_id": ti.run_id,
        "ti": ti,
        "task_instance": ti,
        "dag_run": SimpleNamespace(dag_id=dag.dag_id, run_id=ti.run_id),
        "reason": "task_failure",
        "params": {"integration_ids": []},
    }
    context.update(extra)
    return context


def test_the_notifier_is_an_airflow_notifier() -> None:
    assert isinstance(KomboAlertNotifier(), BaseNotifier)


def test_failed_run_alert_names_dag_run_task_and_what_to_do() -> None:
    context = airflow_context(
        exception=ValueError("candidate jane.doe@example.com has no phone +44 7700 900123")
    )
    subject, alert = failed_run_alert(context, settings().alerts)
    text = alert.text()
    assert subject == "kombo_order_intake/scheduled__2026-01-05T09:00:00+00:00/dispatch"
    assert "DAG: kombo_order_intake" in text and "Run: scheduled__2026-01-05T09:00:00+00:00" in text
    assert "Failed task(s): dispatch" in text and "Reason: task_failure" in text
    assert "Error type: ValueError" in text
    assert (
        "https://airflow.example/dags/kombo_order_intake/runs/scheduled__2026-01-05T09%3A00%3A00%2B00%3A00"
        in text
    )
    assert "What to do: Open the run" in text
    assert "jane" not in text and "7700" not in text


def test_minimal_dag_level_context() -> None:
    # Without a last task instance the dag-processor passes only dag, run_id and reason.
    context = {"dag": DAG("kombo_package_sync", schedule=None), "run_id": "manual__1", "reason": "timed_out"}
    subject, alert = failed_run_alert(context, settings().alerts)
    assert subject == "kombo_package_sync/manual__1"
    assert alert.title == "DAG run failed: kombo_package_sync"
    # A reason that is not a short code (free text) is left out.
    _, alert = failed_run_alert({**context, "reason": "failed for jane@example.com!"}, settings().alerts)
    assert "jane" not in alert.text() and "Reason" not in alert.text()


def test_notifier_called_like_airflow_sends_once_per_run(state_store: StateStore) -> None:
    channel = RecordingChannel()
    notifier = KomboAlertNotifier(settings=settings(), store=state_store, channels=[channel])
    context = airflow_context()
    notifier(context)  # BaseNotifier.__call__: renders template fields, then notify(context)
    notifier(context)  # the DAG-level and the task-level callback of the same failure
    assert [alert.kind for alert in channel.sent] == ["failed_run"]
    assert AlertLedger(state_store).sent("failed_run") == {
        "kombo_order_intake/scheduled__2026-01-05T09:00:00+00:00/dispatch": 1
    }
    notifier(airflow_context(run_id="scheduled__2026-01-05T09:05:00+00:00"))
    assert len(channel.sent) == 2


def test_notifier_never_raises(state_store: StateStore) -> None:
    broken = RecordingChannel(fail=True)
    notifier = KomboAlertNotifier(settings=settings(), store=state_store, channels=[broken])
    notifier(airflow_context())
    result = notifier.send_failed_run(airflow_context())
    assert result["sent"] is False and result["delivery"] == {
        "memory:test": "failed: SMTP SMTPServerDisconnected"
    }
    # Undelivered: the claim was given back, so the next call tries again.
    assert AlertLedger(state_store).sent("failed_run") == {}

    class Exploding:
        name = "boom"

        def send(self, alert: Alert) -> None:
            raise RuntimeError("unexpected")

    KomboAlertNotifier(settings=settings(), store=state_store, channels=[Exploding()])(airflow_context())
    # No state store reachable: sent anyway, without de-duplication.
    working = RecordingChannel()
    unreachable = StateStore("postgresql+psycopg://nobody@127.0.0.1:1/none")
    KomboAlertNotifier(settings=settings(), store=unreachable, channels=[working])(airflow_context())
    assert len(working.sent) == 1


def test_notifier_off_when_disabled() -> None:
    channel = RecordingChannel()
    KomboAlertNotifier(settings=PipelineSettings(), channels=[channel])(airflow_context())
    KomboAlertNotifier(settings=settings(kinds={"failed_run": False}), channels=[channel])(airflow_context())
    assert channel.sent == []


def test_scrub_and_codes() -> None:
    assert scrub("to jane.doe+x@example.co.uk now") == "to [redacted] now"
    assert safe_code("INTEGRATION_INACTIVE") == "INTEGRATION_INACTIVE"
    assert safe_code("not a code") is None and safe_code("a@b.com") is None


def test_webhook_payload_is_slack_compatible() -> None:
    alert = Alert(
        kind="dead_letter", title="1 new dead letter", lines=("- order o1",), action="Replay.", ids=("o1",)
    )
    channel = WebhookAlertChannel(url="https://hooks.example/x", extra_payload={"username": "kombo-sync"})
    assert channel.payload(alert) == {
        "username": "kombo-sync",
        "text": "1 new dead letter\n\n- order o1\n\nWhat to do: Replay.",
    }
    detailed = WebhookAlertChannel(url="https://hooks.example/x", text_field="message", include_details=True)
    body = detailed.payload(alert)
    assert body["message"].startswith("1 new dead letter")
    assert body["kombo_alert"] == {
        "kind": "dead_letter",
        "title": "1 new dead letter",
        "counts": {},
        "ids": ["o1"],
    }


def test_webhook_url_from_an_http_connection() -> None:
    config = settings(channels={"webhook": {"conn_id": "kombo_alerts"}}).alerts
    full = SimpleNamespace(
        host="https://hooks.slack.com/services/T/B/X", schema=None, port=None, password=None
    )
    assert WebhookAlertChannel.from_connection(full, config).url == "https://hooks.slack.com/services/T/B/X"
    parts = SimpleNamespace(
        host="127.0.0.1/hook/a", schema="http", port=8099, password="tok", extra_dejson={}
    )
    channel = WebhookAlertChannel.from_connection(parts, config)
    assert channel.url == "http://127.0.0.1:8099/hook/a" and channel.token == "tok"
    assert "hooks" not in repr(WebhookAlertChannel.from_connection(full, config))  # the URL is a secret


def test_email_message_headers() -> None:
    channel = EmailAlertChannel(host="localhost", port=25, from_email="alerts@provider.example", to=TEAM)
    alert = Alert(kind="quarantined_row", title="2 new quarantined rows awaiting review", lines=("- id 1",))
    message = channel.build_message(alert)
    assert message["To"] == TEAM[0]
    assert message["Subject"] == "[kombo-sync] 2 new quarantined rows awaiting review"
    assert message["X-Kombo-Alert"] == "quarantined_row" and message["Auto-Submitted"] == "auto-generated"


def test_email_channel_reads_the_smtp_connection_like_the_invitations() -> None:
    conn = SimpleNamespace(
        host="smtp.provider.example",
        port=465,
        login="user",
        password="secret",
        extra_dejson={"from_email": "noreply@provider.example", "timeout": 5},
        conn_id="kombo_smtp",
    )
    channel = EmailAlertChannel.from_connection(conn, to=TEAM, subject_prefix="[x]")
    assert (channel.use_ssl, channel.timeout, channel.from_email) == (True, 5.0, "noreply@provider.example")
    assert "secret" not in repr(channel)
    override = EmailAlertChannel.from_connection(conn, to=TEAM, from_email="alerts@provider.example")
    assert override.from_email == "alerts@provider.example"
    with pytest.raises(ValueError, match="from_email"):
        EmailAlertChannel.from_connection(SimpleNamespace(**{**vars(conn), "extra_dejson": {}}), to=TEAM)


def test_build_channels_from_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KOMBO_ALERTS", '{"conn_type": "http", "host": "http://127.0.0.1:9/h"}')
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOMBO_SMTP",
        '{"conn_type": "smtp", "host": "127.0.0.1", "port": 2525, "extra": {"from_email": "a@provider.example"}}',
    )
    config = settings(channels={"email": {"to": TEAM}, "webhook": {"conn_id": "kombo_alerts"}}).alerts
    channels = build_channels(config)
    assert [type(c).__name__ for c in channels] == ["EmailAlertChannel", "WebhookAlertChannel"]
    missing = settings(channels={"webhook": {"conn_id": "not_defined_anywhere"}}).alerts
    assert build_channels(missing) == []


def test_settings_default_off_and_shipped_file_valid() -> None:
    assert PipelineSettings().alerts.enabled is False
    shipped = load_settings(DEFAULT_CONFIG_PATH).alerts
    assert shipped.enabled is False
    assert (
        shipped.thresholds.order_not_invited_minutes == 30
        and shipped.thresholds.integration_failing_runs == 3
    )
    assert settings().alerts.enabled
    assert PipelineSettings.model_validate(
        {"alerts": {"channels": {"webhook": {"conn_id": "x"}}}}
    ).alerts.enabled


def test_kind_names_agree_everywhere() -> None:
    spec = importlib.util.spec_from_file_location("m0006", SCRIPT_LOCATION / "versions" / "0006_alerts.py")
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert tuple(KINDS) == tuple(ALERT_KINDS) == tuple(migration.ALERT_KINDS)
    assert tuple(AlertKinds.model_fields) == tuple(KINDS)
    assert migration.revision == "0006_alerts" and migration.down_revision == "0005_outbox_maybe_applied"
