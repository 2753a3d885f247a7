"""The channels' reminder call: the platform's idempotent remind request and its answers (mocked transport), and
the reminder e-mail from the team's templates with a Message-ID derived from the order id and the number."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from kombo_sync.invites import Inviters, ReminderRequest
from kombo_sync.invites.base import (
    REMINDER_NOT_NEEDED,
    REMINDER_SENT,
    PermanentInvitationError,
    Reminder,
    RetriableInvitationError,
)
from kombo_sync.invites.email import EmailInviter, InvitationTemplates, message_id_for
from kombo_sync.invites.platform import PlatformInviter, PlatformTimeout
from kombo_sync.settings import PipelineSettings
from tests.support.platform_transport import platform_answering

TEMPLATES = Path(__file__).resolve().parents[2] / "include" / "templates"
REQUEST = ReminderRequest(
    order_id="B5KQKhAgTv6ZwzrfAbqbhipd",
    integration_id="workday:abc",
    package_id="py-basics",
    number=2,
    link="https://assessments.example/start/B5KQ",
    expires_at=datetime(2026, 12, 14, 9, 0, tzinfo=UTC),
    package_name="Python basics",
    job_name="Compiler Engineer",
    candidate_email="grace.hopper@example.com",
    candidate_first_name="Grace",
)
KEY = "B5KQKhAgTv6ZwzrfAbqbhipd:reminder:2"


def test_platform_remind_posts_the_key_and_number_and_reads_the_reminder():
    platform, seen = platform_answering(
        lambda request: httpx.Response(
            201, json={"reminder_id": "rem_1", "status": "sent", "repeated": False}
        )
    )
    answer = platform.remind(REQUEST, KEY)
    assert (answer.status, answer.external_id, answer.repeated) == (REMINDER_SENT, "rem_1", False)
    (request,) = seen
    assert request.url.path == "/api/invitations/B5KQKhAgTv6ZwzrfAbqbhipd/remind"
    assert request.headers["Idempotency-Key"] == KEY
    body = json.loads(request.content)
    assert body == {"order_id": REQUEST.order_id, "number": 2, "idempotency_key": KEY}
    assert "grace" not in request.content.decode().lower()  # no candidate data: the platform has it


def test_platform_repeat_is_the_same_reminder():
    platform, _ = platform_answering(
        lambda request: httpx.Response(200, json={"reminder_id": "rem_1", "status": "sent", "repeated": True})
    )
    answer = platform.remind(REQUEST, KEY)
    assert (answer.status, answer.external_id, answer.repeated) == (REMINDER_SENT, "rem_1", True)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"error": "not_found"}),
        (409, {"error": "invitation_revoked", "status": "revoked"}),
        (409, {"error": "invitation_finished", "status": "completed"}),
    ],
)
def test_platform_answers_that_no_reminder_is_needed(status, body):
    platform, _ = platform_answering(lambda request: httpx.Response(status, json=body))
    assert platform.remind(REQUEST, KEY).status == REMINDER_NOT_NEEDED


@pytest.mark.parametrize(("status", "error"), [(503, RetriableInvitationError), (429, RetriableInvitationError),
                                               (409, RetriableInvitationError), (400, PermanentInvitationError)])  # fmt: skip
def test_platform_failures_are_classified(status, error):
    platform, _ = platform_answering(lambda request: httpx.Response(status, json={"error": "x"}))
    with pytest.raises(error):
        platform.remind(REQUEST, KEY)


def test_platform_timeout_is_retriable():
    def boom(request: httpx.Request) -> httpx.Response:
        raise PlatformTimeout("ReadTimeoutError")

    platform, _ = platform_answering(boom)
    with pytest.raises(RetriableInvitationError) as caught:
        platform.remind(REQUEST, KEY)
    assert caught.value.code == "TIMEOUT"


def email_channel() -> EmailInviter:
    return EmailInviter(
        "smtp.example.com",
        2525,
        "invites@acme.example.com",
        templates=InvitationTemplates(TEMPLATES),
        url_template="https://assessments.example/start/{order_id}",
        from_name="Acme Assessments",
    )


def test_reminder_e_mail_from_the_owned_templates_with_a_derived_message_id():
    message = email_channel().build_reminder(REQUEST)
    assert message["Message-ID"] == "<kombo-reminder-2.B5KQKhAgTv6ZwzrfAbqbhipd@acme.example.com>"
    assert message["Message-ID"] == message_id_for(REQUEST.order_id, "acme.example.com", reminder=2)
    assert message["Message-ID"] != message_id_for(
        REQUEST.order_id, "acme.example.com"
    )  # not the invitation's
    assert message["Message-ID"] != message_id_for(REQUEST.order_id, "acme.example.com", reminder=1)
    assert message["X-Kombo-Reminder"] == "2"
    assert message["Subject"] == "Reminder: Python basics assessment for Compiler Engineer"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Grace" in part and REQUEST.link in part and "14 December 2026" in part


def test_reminder_without_a_link_uses_the_assessment_url_template():
    request = ReminderRequest(**{**REQUEST.__dict__, "link": None, "expires_at": None})
    text = email_channel().build_reminder(request).get_body(("plain",)).get_content()
    assert "https://assessments.example/start/B5KQKhAgTv6ZwzrfAbqbhipd" in text
    assert "expires" not in text


def test_every_channel_reminds_and_repr_hides_the_candidate():
    assert isinstance(email_channel(), Reminder)
    assert isinstance(PlatformInviter("http://p.test", None), Reminder)
    assert "grace" not in repr(REQUEST).lower()
    inviters = Inviters(PipelineSettings(), prebuilt={"email": email_channel()})
    assert inviters.reminder("email") is inviters.get("email")
