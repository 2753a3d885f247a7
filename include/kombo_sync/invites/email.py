"""The e-mail channel: a plain-text + HTML invitation rendered from the team's templates, sent over SMTP.

SMTP cannot deduplicate: a server that accepted a message has delivered it. The invitation's ``Message-ID`` is
derived from the Kombo order id (``<kombo-invitation.<order id>@<sender domain>>``), so a duplicate caused by a
crash between the server's "250 accepted" and the state store's commit carries the same ``Message-ID`` and can
be recognised (and is, by many mail systems, folded into one). See docs/intake.md, "the SMTP window".

A reminder (``remind``) is rendered from the reminder templates beside the invitation's
(``reminder_subject.txt.j2``, ``reminder_email.txt.j2``, ``reminder_email.html.j2``) and carries the
``Message-ID`` ``<kombo-reminder-<number>.<order id>@<sender domain>>``, the same for every attempt, so a
duplicate caused by a crash in the same window is recognisable like the invitation's.

A sent e-mail cannot be taken back: ``revoke`` (``EmailRevoker``, which needs no connection) answers
``not_revocable``; the reconcile job then only marks the order cancelled, so no reminder goes out for it.

Connection ``kombo_smtp`` (Airflow SMTP or generic type): host, port, login / password (optional), extras
``from_email`` (required), ``from_name``, ``reply_to``, ``timeout`` (s, default 30), ``ssl`` (SMTPS, default
only on port 465), ``starttls`` (true: required) or ``disable_tls`` (true: never; default: when offered).
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

from kombo_sync.connections import connection_extras
from kombo_sync.invites.base import (
    CHANNEL_EMAIL,
    NOT_REVOCABLE,
    REMINDER_SENT,
    InvitationOrder,
    InvitationResult,
    PermanentInvitationError,
    ReminderRequest,
    ReminderResult,
    RetriableInvitationError,
    RevocationResult,
)

log = logging.getLogger(__name__)

SUBJECT_TEMPLATE = "invitation_subject.txt.j2"
TEXT_TEMPLATE = "invitation_email.txt.j2"
HTML_TEMPLATE = "invitation_email.html.j2"
INVITATION_TEMPLATES = (SUBJECT_TEMPLATE, TEXT_TEMPLATE, HTML_TEMPLATE)
REMINDER_TEMPLATES = ("reminder_subject.txt.j2", "reminder_email.txt.j2", "reminder_email.html.j2")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def message_id_for(order_id: str, domain: str, *, reminder: int | None = None) -> str:
    """The invitation's ``Message-ID`` (or reminder ``reminder``'s): the same for every attempt at the same order
    (and number)."""
    local = order_id if _SAFE_ID.match(order_id) else hashlib.sha256(order_id.encode()).hexdigest()[:40]
    kind = "kombo-invitation" if reminder is None else f"kombo-reminder-{int(reminder)}"
    return f"<{kind}.{local}@{domain}>"


def assessment_link(template: str, order: InvitationOrder) -> str:
    """The candidate's link from ``intake.assessment_url_template`` ({order_id}, {package_id}, {integration_id})."""
    return template.format(
        order_id=quote(order.order_id, safe=""),
        package_id=quote(order.package_id, safe=""),
        integration_id=quote(order.integration_id, safe=""),
    )


@dataclass(frozen=True)
class RenderedInvitation:
    subject: str
    text: str
    html: str


class InvitationTemplates:
    """The three Jinja2 templates the team owns (subject, plain text, HTML), loaded from one directory: the
    invitation's by default, ``names=REMINDER_TEMPLATES`` for the reminder."""

    def __init__(self, directory: Path | str, names: tuple[str, str, str] = INVITATION_TEMPLATES) -> None:
        self.directory = Path(directory)
        self.names = names
        self._env = Environment(
            loader=FileSystemLoader(str(self.directory)),
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, context: dict[str, Any]) -> RenderedInvitation:
        try:
            subject_name, text_name, html_name = self.names
            subject = self._env.get_template(subject_name).render(context)
            text = self._env.get_template(text_name).render(context)
            html = self._env.get_template(html_name).render(context)
        except TemplateError as exc:
            # A broken template fails every order alike: retriable, so fixing the file lets them through.
            raise RetriableInvitationError(
                f"e-mail template error in {self.directory}: {type(exc).__name__}: {exc}",
                channel=CHANNEL_EMAIL,
                code="TEMPLATE_ERROR",
            ) from exc
        return RenderedInvitation(subject=" ".join(subject.split()), text=text, html=html)


class EmailInviter:
    """Sends one invitation e-mail per call over a fresh SMTP session (thread-safe)."""

    channel = CHANNEL_EMAIL

    def __init__(
        self,
        host: str,
        port: int,
        from_email: str,
        *,
        templates: InvitationTemplates,
        url_template: str,
        login: str | None = None,
        password: str | None = None,
        from_name: str | None = None,
        reply_to: str | None = None,
        use_ssl: bool = False,
        starttls: Literal["auto", "always", "never"] = "auto",
        timeout: float = 30.0,
    ) -> None:
        if not from_email or "@" not in from_email:
            raise ValueError("the SMTP connection needs extra 'from_email' (the invitations' sender)")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port
        self.from_email = from_email
        self.from_name = from_name
        self.reply_to = reply_to
        self.templates = templates
        self.url_template = url_template
        self._login = login
        self._password = password
        self.use_ssl = use_ssl
        self.starttls = starttls
        self.timeout = timeout
        self.domain = from_email.rsplit("@", 1)[1]
        self._reminder_templates: InvitationTemplates | None = None

    def __repr__(self) -> str:
        return f"EmailInviter(host={self.host!r}, port={self.port})"

    @classmethod
    def from_connection(cls, conn: Any, *, templates_dir: Path | str, url_template: str) -> EmailInviter:
        """Build from an Airflow connection (see the module docstring for the fields)."""
        extra = connection_extras(conn)
        port = int(conn.port or 25)
        use_ssl = _flag(extra.get("ssl"), port == 465)
        if "disable_ssl" in extra and "ssl" not in extra:
            use_ssl = not _flag(extra.get("disable_ssl"), True)
        if _flag(extra.get("disable_tls"), False):
            starttls: Literal["auto", "always", "never"] = "never"
        elif _flag(extra.get("starttls"), False):
            starttls = "always"
        else:
            starttls = "auto"
        return cls(
            host=conn.host or "localhost",
            port=port,
            from_email=str(extra.get("from_email") or ""),
            templates=InvitationTemplates(templates_dir),
            url_template=url_template,
            login=conn.login or None,
            password=conn.password or None,
            from_name=extra.get("from_name"),
            reply_to=extra.get("reply_to"),
            use_ssl=use_ssl,
            starttls=starttls,
            timeout=float(extra.get("timeout") or 30.0),
        )

    def build_message(self, order: InvitationOrder, idempotency_key: str) -> tuple[EmailMessage, str]:
        """The multipart message for ``order`` and the candidate's link (raises PermanentInvitationError)."""
        link = assessment_link(self.url_template, order)
        rendered = self.templates.render(
            {
                "first_name": (order.candidate_first_name or "").strip(),
                "job_title": (order.job_name or "").strip(),
                "package_name": getattr(order, "package_name", None) or order.package_id,
                "link": link,
                "sender_name": self.from_name or self.domain,
            }
        )
        message = EmailMessage()
        try:
            message["To"] = Address(addr_spec=order.candidate_email or "")
        except (ValueError, IndexError, MessageError) as exc:
            raise PermanentInvitationError(
                "candidate e-mail address is malformed", channel=CHANNEL_EMAIL, code="BAD_ADDRESS"
            ) from exc
        message["From"] = Address(display_name=self.from_name or "", addr_spec=self.from_email)
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Subject"] = rendered.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_id_for(idempotency_key, self.domain)
        message["X-Kombo-Order-Id"] = idempotency_key
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message, link

    def send(self, order: InvitationOrder, idempotency_key: str) -> InvitationResult:
        message, link = self.build_message(order, idempotency_key)
        message_id = self._deliver(message)
        log.info("invitation e-mail for order %s accepted by %s:%s", idempotency_key, self.host, self.port)
        return InvitationResult(external_id=message_id, url=link, channel=CHANNEL_EMAIL)

    def build_reminder(self, request: ReminderRequest) -> EmailMessage:
        """The multipart reminder message (raises PermanentInvitationError for a malformed address)."""
        templates = self._reminder_templates
        if templates is None:
            templates = self._reminder_templates = InvitationTemplates(
                self.templates.directory, names=REMINDER_TEMPLATES
            )
        rendered = templates.render(
            {
                "first_name": (request.candidate_first_name or "").strip(),
                "job_title": (request.job_name or "").strip(),
                "package_name": request.package_name or request.package_id,
                "link": request.link or assessment_link(self.url_template, request),  # type: ignore[arg-type]
                "sender_name": self.from_name or self.domain,
                "reminder_number": request.number,
                "expires_on": request.expires_at.strftime("%d %B %Y") if request.expires_at else "",
            }
        )
        message = self._envelope(request.candidate_email, rendered)
        message["Message-ID"] = message_id_for(request.order_id, self.domain, reminder=request.number)
        message["X-Kombo-Order-Id"] = request.order_id
        message["X-Kombo-Reminder"] = str(request.number)
        return message

    def remind(self, request: ReminderRequest, idempotency_key: str) -> ReminderResult:
        """Send reminder ``request.number`` by e-mail (SMTP cannot deduplicate: see the module docstring)."""
        message_id = self._deliver(self.build_reminder(request))
        log.info("reminder %s e-mail for order %s accepted by %s:%s", request.number, request.order_id,
                 self.host, self.port)  # fmt: skip
        return ReminderResult(REMINDER_SENT, CHANNEL_EMAIL, external_id=message_id)

    def _envelope(self, to: str | None, rendered: RenderedInvitation) -> EmailMessage:
        message = EmailMessage()
        try:
            message["To"] = Address(addr_spec=to or "")
        except (ValueError, IndexError, MessageError) as exc:
            raise PermanentInvitationError(
                "candidate e-mail address is malformed", channel=CHANNEL_EMAIL, code="BAD_ADDRESS"
            ) from exc
        message["From"] = Address(display_name=self.from_name or "", addr_spec=self.from_email)
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Subject"] = rendered.subject
        message["Date"] = formatdate(localtime=False)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    def _deliver(self, message: EmailMessage) -> str:
        """Send over a fresh SMTP session; the message's ``Message-ID``, or Retriable/PermanentInvitationError."""
        message_id = str(message["Message-ID"])
        try:
            smtp = self._connect()
            try:
                refused = smtp.send_message(message)
            finally:
                _quit_quietly(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _from_code(min(codes) if codes else 550, "recipient refused") from exc
        except smtplib.SMTPAuthenticationError as exc:
            # The sender's credentials, not the order: keep retrying until the team fixes the connection.
            raise RetriableInvitationError(
                f"SMTP authentication failed ({exc.smtp_code})",
                channel=CHANNEL_EMAIL,
                code=str(exc.smtp_code),
            ) from exc
        except smtplib.SMTPSenderRefused as exc:
            raise RetriableInvitationError(
                f"SMTP sender refused ({exc.smtp_code})", channel=CHANNEL_EMAIL, code=str(exc.smtp_code)
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise _from_code(exc.smtp_code, "message refused") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise RetriableInvitationError(
                f"SMTP server unavailable ({type(exc).__name__})", channel=CHANNEL_EMAIL, code="UNAVAILABLE"
            ) from exc
        if refused:
            codes = [code for code, _ in refused.values()]
            raise _from_code(min(codes), "recipient refused")
        return message_id

    def revoke(self, order_id: str, reason: str) -> RevocationResult:
        """An e-mail cannot be taken back (see ``EmailRevoker``)."""
        return EMAIL_REVOKER.revoke(order_id, reason)

    def _connect(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if not self.use_ssl and self.starttls != "never":
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                elif self.starttls == "always":
                    raise RetriableInvitationError(
                        "SMTP server does not offer STARTTLS but the connection requires it",
                        channel=CHANNEL_EMAIL,
                        code="NO_STARTTLS",
                    )
            if self._login:
                smtp.login(self._login, self._password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


class EmailRevoker:
    """The e-mail channel's answer to a revocation, without an SMTP connection: nothing can be taken back."""

    channel = CHANNEL_EMAIL

    def revoke(self, order_id: str, reason: str) -> RevocationResult:
        return RevocationResult(
            NOT_REVOCABLE, CHANNEL_EMAIL, detail="an e-mail cannot be taken back; no reminder will follow"
        )


EMAIL_REVOKER = EmailRevoker()


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """Say QUIT without waiting for the answer, then close. Once the server accepted the message, every
    moment before the commit is part of the duplicate window, and a failed QUIT must not turn the success
    into a retry (a duplicate)."""
    try:
        smtp.putcmd("quit")
    except (smtplib.SMTPException, OSError):
        pass  # the connection is gone already; the message was accepted (or refused) before
    finally:
        smtp.close()


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _from_code(code: int, what: str) -> RetriableInvitationError | PermanentInvitationError:
    if 400 <= code < 500:
        return RetriableInvitationError(
            f"SMTP {what} temporarily ({code})", channel=CHANNEL_EMAIL, code=str(code)
        )
    return PermanentInvitationError(f"SMTP {what} ({code})", channel=CHANNEL_EMAIL, code=str(code))
