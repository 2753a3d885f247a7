"""Where alerts go: e-mail over an SMTP connection and a JSON webhook (Slack-compatible `text`).

Each channel is built from an Airflow connection at send time, never at DAG parse time. `deliver` sends one alert
through every channel and never raises: a failure is logged with the channel, the connection id and the error's
type or status code only (a webhook URL is a secret; an SMTP error may quote addresses).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from types import SimpleNamespace
from typing import Any, Protocol

import httpx

from kombo_sync.alerts.messages import Alert
from kombo_sync.connections import connection_extras, http_base_url
from kombo_sync.settings import PROJECT_ROOT, AlertSettings

log = logging.getLogger(__name__)

SENT = "sent"
FAILED = "failed"


class AlertChannel(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Deliver one alert; raise on failure."""


class AlertDeliveryError(RuntimeError):
    """A channel could not deliver (the message says why without secrets or message content)."""


@dataclass
class EmailAlertChannel:
    """Alerts as plain-text e-mails to the team, over the SMTP session rules of the invitation channel."""

    host: str
    port: int
    from_email: str
    to: Sequence[str]
    login: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    subject_prefix: str = "[kombo-sync]"
    use_ssl: bool = False
    starttls: str = "auto"
    timeout: float = 30.0
    conn_id: str = "kombo_smtp"
    name: str = "email"

    @classmethod
    def from_connection(
        cls, conn: Any, *, to: Sequence[str], from_email: str | None = None, subject_prefix: str = ""
    ) -> EmailAlertChannel:
        """Read the connection the way the invitation channel does (`EmailInviter.from_connection`), so
        `kombo_smtp` means one thing everywhere; `from_email` overrides its extra."""
        from kombo_sync.invites.email import EmailInviter

        extra = dict(connection_extras(conn))
        if from_email:
            extra["from_email"] = from_email
        view = SimpleNamespace(
            host=conn.host, port=conn.port, login=conn.login, password=conn.password, extra_dejson=extra
        )
        parsed = EmailInviter.from_connection(view, templates_dir=PROJECT_ROOT, url_template="")
        return cls(
            host=parsed.host,
            port=parsed.port,
            from_email=parsed.from_email,
            to=list(to),
            login=conn.login or None,
            password=conn.password or None,
            subject_prefix=subject_prefix,
            use_ssl=parsed.use_ssl,
            starttls=parsed.starttls,
            timeout=parsed.timeout,
            conn_id=getattr(conn, "conn_id", None) or "kombo_smtp",
        )

    def build_message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        message["From"] = Address(display_name="Kombo sync alerts", addr_spec=self.from_email)
        message["To"] = ", ".join(self.to)
        message["Subject"] = alert.subject(self.subject_prefix)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(idstring=f"kombo-alert.{alert.kind}", domain=self._domain)
        message["Auto-Submitted"] = "auto-generated"
        message["X-Kombo-Alert"] = alert.kind
        message.set_content(alert.text())
        return message

    @property
    def _domain(self) -> str:
        return self.from_email.rsplit("@", 1)[-1]

    def send(self, alert: Alert) -> None:
        from kombo_sync.invites.email import EmailInviter, InvitationTemplates

        if not self.to:
            raise AlertDeliveryError("no recipients")
        message = self.build_message(alert)
        # The invitation channel's session set-up (SSL, STARTTLS policy, login, timeout), one home for it.
        session = EmailInviter(
            self.host,
            self.port,
            self.from_email,
            templates=InvitationTemplates(PROJECT_ROOT),
            url_template="",
            login=self.login,
            password=self.password,
            use_ssl=self.use_ssl,
            starttls=self.starttls,  # type: ignore[arg-type]
            timeout=self.timeout,
        )
        try:
            smtp = session._connect()
            try:
                refused = smtp.send_message(message)
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(f"SMTP {type(exc).__name__} ({exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused:
            raise AlertDeliveryError("SMTP recipients refused") from None
        except Exception as exc:
            raise AlertDeliveryError(f"SMTP {type(exc).__name__}") from None
        if refused:
            log.warning("alert e-mail: %s of %s recipient(s) refused", len(refused), len(self.to))


@dataclass
class WebhookAlertChannel:
    """Alerts as a JSON POST: `{"text": ...}` plus fixed fields, optionally `kombo_alert` details."""

    url: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    text_field: str = "text"
    extra_payload: Mapping[str, Any] = field(default_factory=dict)
    include_details: bool = False
    max_ids: int = 20
    timeout: float = 10.0
    conn_id: str = "webhook"
    name: str = "webhook"

    @classmethod
    def from_connection(cls, conn: Any, settings: AlertSettings) -> WebhookAlertChannel:
        """An HTTP connection whose host is the URL (a host without a scheme gets `schema` or https, and the
        port); the password, if any, is sent as a bearer token; extra `headers` are added."""
        webhook = settings.channels.webhook
        url = http_base_url(conn.host, conn.schema, conn.port)
        if not url:
            raise AlertDeliveryError("the webhook connection has no host (the URL)")
        extra = connection_extras(conn)
        raw_headers = extra.get("headers")
        headers: dict[str, Any] = raw_headers if isinstance(raw_headers, dict) else {}
        return cls(
            url=url,
            token=conn.password or None,
            headers={str(k): str(v) for k, v in headers.items()},
            text_field=webhook.text_field,
            extra_payload=dict(webhook.extra_payload),
            include_details=webhook.include_details,
            max_ids=settings.max_ids_per_alert,
            timeout=webhook.timeout_seconds,
            conn_id=getattr(conn, "conn_id", None) or str(webhook.conn_id),
        )

    def payload(self, alert: Alert) -> dict[str, Any]:
        body: dict[str, Any] = {**self.extra_payload, self.text_field: alert.text()}
        if self.include_details:
            body["kombo_alert"] = alert.details(self.max_ids)
        return body

    def send(self, alert: Alert) -> None:
        headers = {"Content-Type": "application/json", **self.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = httpx.post(self.url, json=self.payload(alert), headers=headers, timeout=self.timeout)
        except Exception as exc:
            raise AlertDeliveryError(f"HTTP {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise AlertDeliveryError(f"HTTP status {response.status_code}")


def build_channels(settings: AlertSettings) -> list[AlertChannel]:
    """The configured channels, built from their Airflow connections; a missing or broken connection is logged
    and left out."""
    from kombo_sync.connections import get_connection

    channels: list[AlertChannel] = []
    email = settings.channels.email
    if email.to:
        conn = _connection(get_connection, email.conn_id)
        if conn is None:
            log.error("alerts: e-mail channel skipped, connection %s is not defined", email.conn_id)
        else:
            try:
                channels.append(
                    EmailAlertChannel.from_connection(
                        conn, to=email.to, from_email=email.from_email, subject_prefix=email.subject_prefix
                    )
                )
            except ValueError as exc:
                log.error("alerts: e-mail channel skipped, connection %s: %s", email.conn_id, exc)
    webhook_conn_id = settings.channels.webhook.conn_id
    if webhook_conn_id:
        conn = _connection(get_connection, webhook_conn_id)
        if conn is None:
            log.error("alerts: webhook channel skipped, connection %s is not defined", webhook_conn_id)
        else:
            try:
                channels.append(WebhookAlertChannel.from_connection(conn, settings))
            except AlertDeliveryError as exc:
                log.error("alerts: webhook channel skipped, connection %s: %s", webhook_conn_id, exc)
    return channels


def _connection(lookup: Any, conn_id: str) -> Any | None:
    try:
        return lookup(conn_id)
    except Exception as exc:  # no reachable connection backend: the channel is skipped, the caller goes on
        log.error("alerts: connection %s could not be read (%s)", conn_id, type(exc).__name__)
        return None


def deliver(alert: Alert, channels: Sequence[AlertChannel]) -> dict[str, str]:
    """Send `alert` through every channel; returns `{channel: "sent" | "failed: <why>"}`. Never raises."""
    outcome: dict[str, str] = {}
    for channel in channels:
        label = f"{channel.name}:{getattr(channel, 'conn_id', '?')}"
        try:
            channel.send(alert)
        except Exception as exc:
            why = str(exc) if isinstance(exc, AlertDeliveryError) else type(exc).__name__
            log.error("alerts: %s alert not delivered through %s: %s", alert.kind, label, why)
            outcome[label] = f"{FAILED}: {why}"
        else:
            log.info("alerts: %s alert delivered through %s", alert.kind, label)
            outcome[label] = SENT
    return outcome


def delivered(outcome: Mapping[str, str]) -> bool:
    """True when at least one channel took the alert."""
    return any(value == SENT for value in outcome.values())
