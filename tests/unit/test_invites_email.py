"""The e-mail channel without a server: rendering, headers, Message-ID, and how SMTP answers are classified."""

from __future__ import annotations

import smtplib
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kombo_sync.invites import email as email_channel
from kombo_sync.invites.base import InvitationRequest, PermanentInvitationError, RetriableInvitationError
from kombo_sync.invites.email import EmailInviter, InvitationTemplates, message_id_for
from kombo_sync.settings import DEFAULT_CONFIG_PATH, load_settings

TEMPLATES = load_settings(DEFAULT_CONFIG_PATH).resolve_path("include/templates")
URL_TEMPLATE = "https://assess.example.com/start/{order_id}?p={package_id}"
ORDER = InvitationRequest(
    order_id="B5KQKhAgTv6ZwzrfAbqbhipd",
    integration_id="workday:abc",
    package_id="py-basics",
    candidate_email="ada.lovelace@example.com",
    candidate_first_name="Ada",
    candidate_last_name="Lovelace",
    job_name="Data <Engineer> & Analyst",
    package_name="Python basics",
)


class FakeSMTP:
    """Stands in for smtplib.SMTP: records what it was asked to do; `behaviour` decides the answer."""

    instances: list[FakeSMTP] = []
    behaviour: dict[str, Any] = {}

    def __init__(self, host: str, port: int, timeout: float) -> None:
        if self.behaviour.get("connect_error"):
            raise self.behaviour["connect_error"]
        self.host, self.port, self.timeout = host, port, timeout
        self.sent: list[Any] = []
        self.calls: list[str] = []
        self.closed = False
        FakeSMTP.instances.append(self)

    def ehlo(self) -> None:
        self.calls.append("ehlo")

    def has_extn(self, name: str) -> bool:
        return bool(self.behaviour.get("starttls_offered"))

    def starttls(self, context: Any = None) -> None:
        self.calls.append("starttls")

    def login(self, user: str, password: str) -> None:
        self.calls.append(f"login:{user}")
        if self.behaviour.get("login_error"):
            raise self.behaviour["login_error"]

    def send_message(self, message: Any) -> dict[str, Any]:
        if self.behaviour.get("send_error"):
            raise self.behaviour["send_error"]
        self.sent.append(message)
        return dict(self.behaviour.get("refused") or {})

    def putcmd(self, command: str) -> None:
        self.calls.append(command)
        if self.behaviour.get("quit_error"):
            raise self.behaviour["quit_error"]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_smtp(monkeypatch: pytest.MonkeyPatch) -> type[FakeSMTP]:
    FakeSMTP.instances = []
    FakeSMTP.behaviour = {}
    monkeypatch.setattr(email_channel.smtplib, "SMTP", FakeSMTP)
    return FakeSMTP


def make_inviter(**kwargs: Any) -> EmailInviter:
    options: dict[str, Any] = {
        "templates": InvitationTemplates(TEMPLATES),
        "url_template": URL_TEMPLATE,
        "from_name": "Acme Assessments",
    }
    options.update(kwargs)
    return EmailInviter("smtp.example.com", 2525, "invites@acme.example.com", **options)


def test_message_is_multipart_with_both_bodies_and_the_team_template_variables() -> None:
    message, link = make_inviter().build_message(ORDER, ORDER.order_id)
    assert link == "https://assess.example.com/start/B5KQKhAgTv6ZwzrfAbqbhipd?p=py-basics"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "Ada" in body and "Python basics" in body and link in body
    assert "Data <Engineer> & Analyst" in text
    # HTML-escaped in the HTML part only: a job title cannot inject markup.
    assert "Data &lt;Engineer&gt; &amp; Analyst" in html and "<Engineer>" not in html
    assert message["Subject"] == "Python basics assessment for Data <Engineer> & Analyst"
    assert message["To"] == "ada.lovelace@example.com"
    assert message["From"] == "Acme Assessments <invites@acme.example.com>"
    assert message["X-Kombo-Order-Id"] == ORDER.order_id


def test_message_id_is_derived_from_the_order_id_and_stable_across_attempts() -> None:
    inviter = make_inviter()
    first, _ = inviter.build_message(ORDER, ORDER.order_id)
    second, _ = inviter.build_message(ORDER, ORDER.order_id)
    other, _ = inviter.build_message(ORDER, "AnotherOrderId")
    assert (
        first["Message-ID"]
        == second["Message-ID"]
        == "<kombo-invitation.B5KQKhAgTv6ZwzrfAbqbhipd@acme.example.com>"
    )
    assert other["Message-ID"] != first["Message-ID"]
    # Ids with characters a Message-ID cannot hold are hashed, still deterministically.
    assert message_id_for("a b<c>", "x.com") == message_id_for("a b<c>", "x.com")
    assert " " not in message_id_for("a b<c>", "x.com")


def test_missing_first_name_and_job_title_render_sensible_text() -> None:
    bare = InvitationRequest("O1", "i:1", "pkg-1", "x@example.com")
    message, _ = make_inviter().build_message(bare, "O1")
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("Hello there,")
    assert "application, you are invited to complete the pkg-1 assessment" in text
    assert message["Subject"] == "pkg-1 assessment"


def test_send_delivers_once_and_returns_message_id_and_link(fake_smtp: type[FakeSMTP]) -> None:
    result = make_inviter(login="user", password="secret").send(ORDER, ORDER.order_id)
    assert result.channel == "email"
    assert result.external_id == "<kombo-invitation.B5KQKhAgTv6ZwzrfAbqbhipd@acme.example.com>"
    assert result.url and result.url.startswith("https://assess.example.com/start/")
    (server,) = fake_smtp.instances
    assert (server.host, server.port) == ("smtp.example.com", 2525)
    assert len(server.sent) == 1 and "login:user" in server.calls and server.calls[-1] == "quit"


def test_starttls_is_used_when_offered_and_required_when_asked(fake_smtp: type[FakeSMTP]) -> None:
    fake_smtp.behaviour = {"starttls_offered": True}
    make_inviter().send(ORDER, ORDER.order_id)
    assert "starttls" in fake_smtp.instances[-1].calls
    fake_smtp.behaviour = {"starttls_offered": False}
    with pytest.raises(RetriableInvitationError, match="STARTTLS"):
        make_inviter(starttls="always").send(ORDER, ORDER.order_id)
    make_inviter(starttls="never").send(ORDER, ORDER.order_id)
    assert "starttls" not in fake_smtp.instances[-1].calls


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ({"connect_error": ConnectionRefusedError()}, RetriableInvitationError),
        ({"connect_error": TimeoutError()}, RetriableInvitationError),
        ({"send_error": smtplib.SMTPServerDisconnected("gone")}, RetriableInvitationError),
        ({"send_error": smtplib.SMTPDataError(451, b"try later")}, RetriableInvitationError),
        ({"send_error": smtplib.SMTPDataError(554, b"rejected")}, PermanentInvitationError),
        (
            {"send_error": smtplib.SMTPRecipientsRefused({"a@b.c": (550, b"no such user")})},
            PermanentInvitationError,
        ),
        (
            {"send_error": smtplib.SMTPRecipientsRefused({"a@b.c": (450, b"mailbox busy")})},
            RetriableInvitationError,
        ),
        ({"send_error": smtplib.SMTPSenderRefused(553, b"bad sender", "x")}, RetriableInvitationError),
        ({"login_error": smtplib.SMTPAuthenticationError(535, b"bad creds")}, RetriableInvitationError),
        ({"refused": {"a@b.c": (550, b"no")}}, PermanentInvitationError),
    ],
)
def test_smtp_answers_are_classified(
    fake_smtp: type[FakeSMTP], behaviour: dict[str, Any], expected: type
) -> None:
    fake_smtp.behaviour = behaviour
    with pytest.raises(expected) as caught:
        make_inviter(login="user", password="pw").send(ORDER, ORDER.order_id)
    # Reasons end up in the order's row and in logs: never the candidate's address.
    assert ORDER.candidate_email not in str(caught.value)


def test_a_failed_quit_after_acceptance_is_still_a_success(fake_smtp: type[FakeSMTP]) -> None:
    fake_smtp.behaviour = {"quit_error": smtplib.SMTPServerDisconnected("bye")}
    result = make_inviter().send(ORDER, ORDER.order_id)
    assert result.external_id and fake_smtp.instances[-1].sent


def test_a_malformed_address_is_permanent_and_nothing_is_sent(fake_smtp: type[FakeSMTP]) -> None:
    bad = InvitationRequest("O2", "i:1", "pkg", "not an address@@example.com")
    with pytest.raises(PermanentInvitationError):
        make_inviter().send(bad, "O2")
    assert all(not server.sent for server in fake_smtp.instances)


def test_a_broken_template_is_retriable_so_fixing_the_file_lets_orders_through(tmp_path: Path) -> None:
    for name in ("invitation_subject.txt.j2", "invitation_email.txt.j2", "invitation_email.html.j2"):
        (tmp_path / name).write_text((TEMPLATES / name).read_text())
    (tmp_path / "invitation_email.txt.j2").write_text("Hello {{ unknown_variable }}")
    inviter = make_inviter(templates=InvitationTemplates(tmp_path))
    with pytest.raises(RetriableInvitationError, match="template"):
        inviter.build_message(ORDER, ORDER.order_id)


def test_from_connection_reads_airflow_smtp_conventions() -> None:
    conn = SimpleNamespace(
        host="mail.example.com",
        port=587,
        login="apikey",
        password="pw",
        extra_dejson={"from_email": "invites@acme.example.com", "starttls": "true", "timeout": "12"},
    )
    inviter = EmailInviter.from_connection(conn, templates_dir=TEMPLATES, url_template=URL_TEMPLATE)
    assert (inviter.host, inviter.port, inviter.starttls, inviter.use_ssl, inviter.timeout) == (
        "mail.example.com",
        587,
        "always",
        False,
        12.0,
    )
    conn.extra_dejson = {"from_email": "a@b.example.com", "disable_tls": True}
    assert (
        EmailInviter.from_connection(conn, templates_dir=TEMPLATES, url_template=URL_TEMPLATE).starttls
        == "never"
    )
    conn.port = 465
    conn.extra_dejson = {"from_email": "a@b.example.com"}
    assert (
        EmailInviter.from_connection(conn, templates_dir=TEMPLATES, url_template=URL_TEMPLATE).use_ssl is True
    )
    conn.extra_dejson = {}
    with pytest.raises(ValueError, match="from_email"):
        EmailInviter.from_connection(conn, templates_dir=TEMPLATES, url_template=URL_TEMPLATE)


def test_rendered_message_survives_a_round_trip_through_bytes() -> None:
    message, _ = make_inviter().build_message(ORDER, ORDER.order_id)
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == message["Message-ID"]
    assert "Ada" in parsed.get_body(("plain",)).get_content()
