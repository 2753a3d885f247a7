"""The platform channel against a mocked HTTP transport: request shape, idempotency key, error classes."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from kombo_sync.invites import InviterConfigurationError, Inviters, build_inviter
from kombo_sync.invites.base import (
    InvitationRequest,
    Inviter,
    PermanentInvitationError,
    RetriableInvitationError,
)
from kombo_sync.invites.platform import PlatformInviter, PlatformTimeout, PlatformUnreachable
from kombo_sync.settings import PipelineSettings
from tests.support.platform_transport import platform_answering

ORDER = InvitationRequest(
    order_id="B5KQKhAgTv6ZwzrfAbqbhipd",
    integration_id="workday:abc",
    package_id="py-basics",
    candidate_email="grace.hopper@example.com",
    candidate_first_name="Grace",
    candidate_last_name="Hopper",
    job_name="Compiler Engineer",
)


def test_creates_the_invitation_with_the_order_id_as_idempotency_key() -> None:
    inviter, seen = platform_answering(
        lambda request: httpx.Response(
            201,
            json={
                "invitation_id": "inv_1",
                "assessment_url": "http://platform.test/a/inv_1",
                "order_id": "x",
            },
        )
    )
    result = inviter.send(ORDER, ORDER.order_id)
    assert (result.external_id, result.url, result.channel) == (
        "inv_1",
        "http://platform.test/a/inv_1",
        "platform",
    )
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/api/invitations"
    assert request.headers["Authorization"] == "Bearer tok-123"
    assert request.headers["Idempotency-Key"] == ORDER.order_id
    body = json.loads(request.content)
    assert body["order_id"] == ORDER.order_id
    assert body["candidate"]["email"] == "grace.hopper@example.com"
    assert body["job"]["name"] == "Compiler Engineer" and body["package_id"] == "py-basics"
    assert isinstance(inviter, Inviter)


def test_a_repeat_answered_200_returns_the_same_invitation() -> None:
    answers = iter([201, 200])
    inviter, _ = platform_answering(
        lambda request: httpx.Response(next(answers), json={"invitation_id": "inv_1", "assessment_url": "u"})
    )
    assert inviter.send(ORDER, ORDER.order_id) == inviter.send(ORDER, ORDER.order_id)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 409, 408, 401, 403])
def test_server_errors_and_throttling_are_retriable(status: int) -> None:
    inviter, _ = platform_answering(
        lambda request: httpx.Response(status, json={"error": "service_unavailable"})
    )
    with pytest.raises(RetriableInvitationError) as caught:
        inviter.send(ORDER, ORDER.order_id)
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_client_errors_are_permanent_and_do_not_leak_the_body(status: int) -> None:
    inviter, _ = platform_answering(
        lambda request: httpx.Response(
            status, json={"error": "invalid_request", "message": "grace.hopper@example.com is bad"}
        )
    )
    with pytest.raises(PermanentInvitationError) as caught:
        inviter.send(ORDER, ORDER.order_id)
    assert "invalid_request" in str(caught.value)
    assert "grace.hopper" not in str(caught.value)


def test_timeouts_and_connection_errors_are_retriable() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise PlatformTimeout("ReadTimeoutError")

    def refused(request: httpx.Request) -> httpx.Response:
        raise PlatformUnreachable("NewConnectionError")

    for handler, code in ((timeout, "TIMEOUT"), (refused, "UNAVAILABLE")):
        inviter, _ = platform_answering(handler)
        with pytest.raises(RetriableInvitationError) as caught:
            inviter.send(ORDER, ORDER.order_id)
        assert caught.value.code == code


@pytest.mark.parametrize("body", [b"not json", b'{"invitation_id": "inv_1"}', b"[]"])
def test_an_answer_without_id_and_link_is_retriable(body: bytes) -> None:
    inviter, _ = platform_answering(lambda request: httpx.Response(201, content=body))
    with pytest.raises(RetriableInvitationError, match="platform answered"):
        inviter.send(ORDER, ORDER.order_id)


def test_from_connection_follows_the_http_provider_conventions() -> None:
    conn = SimpleNamespace(
        host="platform.example.com", schema="https", port=8443, password="tok", extra_dejson={"timeout": "5"}
    )
    inviter = PlatformInviter.from_connection(conn)
    assert (inviter.base_url, inviter.timeout, inviter.path) == (
        "https://platform.example.com:8443",
        5.0,
        "/api/invitations",
    )
    conn = SimpleNamespace(
        host="http://127.0.0.1:8766/", schema=None, port=None, password=None, extra_dejson={}
    )
    assert PlatformInviter.from_connection(conn).base_url == "http://127.0.0.1:8766"
    with pytest.raises(ValueError):
        PlatformInviter("", None)


def test_build_inviter_names_the_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_KOMBO_PLATFORM", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_KOMBO_SMTP", raising=False)
    monkeypatch.setattr("kombo_sync.connections.get_connection", lambda conn_id: None)
    settings = PipelineSettings()
    with pytest.raises(InviterConfigurationError, match="kombo_platform"):
        build_inviter("platform", settings)
    with pytest.raises(InviterConfigurationError, match="kombo_smtp"):
        build_inviter("email", settings)
    with pytest.raises(InviterConfigurationError, match="unknown"):
        build_inviter("carrier-pigeon", settings)


def test_inviters_pick_the_channel_per_integration_and_build_each_once() -> None:
    settings = PipelineSettings.model_validate(
        {"intake": {"channel": "platform", "integrations": {"greenhouse:1": {"channel": "email"}}}}
    )
    built: list[str] = []

    def factory(channel: str, _settings: PipelineSettings) -> Inviter:
        built.append(channel)
        return PlatformInviter("http://x.test", None)

    inviters = Inviters(settings, factory=factory)
    assert inviters.channel_for("greenhouse:1", "platform") == "email"  # pipeline.yaml override wins
    assert inviters.channel_for("workday:2", "email") == "email"  # then the registry
    assert inviters.channel_for("workday:3") == "platform"  # then the default
    assert inviters.get("email") is inviters.get("email")
    assert built == ["email"]


def test_a_claimed_order_from_the_state_store_can_be_sent_as_is() -> None:
    from datetime import UTC, datetime

    from kombo_sync.state.orders import ClaimedOrder

    now = datetime(2026, 1, 5, tzinfo=UTC)
    claim = ClaimedOrder(
        order_id="O-1", integration_id="workday:abc", package_id="py", kombo_status="OPEN", attempts=1,
        lease_owner="w", lease_expires_at=now, received_at=now, candidate_email="c@example.com",
        candidate_first_name="C", candidate_last_name=None, candidate_phone=None, candidate_remote_id=None,
        application_remote_id=None, job_remote_id=None, job_name="Engineer", order_json={},
    )  # fmt: skip
    inviter, seen = platform_answering(
        lambda request: httpx.Response(201, json={"invitation_id": "inv_9", "assessment_url": "u"})
    )
    assert inviter.send(claim, claim.order_id).external_id == "inv_9"
    assert json.loads(seen[0].content)["candidate"]["email"] == "c@example.com"


def test_revoke_posts_to_the_order_and_reads_the_platform_s_answer() -> None:
    answers = iter(
        [
            httpx.Response(
                200, json={"invitation_id": "inv_1", "status": "revoked", "already_revoked": False}
            ),
            httpx.Response(
                200, json={"invitation_id": "inv_1", "status": "revoked", "already_revoked": True}
            ),
            httpx.Response(404, json={"error": "not_found"}),
            httpx.Response(
                409, json={"error": "invitation_finished", "status": "completed", "invitation_id": "i"}
            ),
        ]
    )
    inviter, seen = platform_answering(lambda request: next(answers))
    statuses = [inviter.revoke("ord/1", "cancelled in the ATS").status for _ in range(4)]
    assert statuses == ["revoked", "already_revoked", "not_found", "finished"]
    request = seen[0]
    assert request.method == "POST" and request.url.raw_path == b"/api/invitations/ord%2F1/revoke"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert json.loads(request.content) == {"reason": "cancelled in the ATS"}


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_revoke_without_a_definite_answer_is_retriable(status: int) -> None:
    inviter, _ = platform_answering(lambda request: httpx.Response(status, json={"error": "busy"}))
    with pytest.raises(RetriableInvitationError):
        inviter.revoke("ord-1", "cancelled")


def test_revoke_refused_by_the_platform_is_permanent_and_timeouts_are_retriable() -> None:
    inviter, _ = platform_answering(lambda request: httpx.Response(422, json={"error": "invalid_request"}))
    with pytest.raises(PermanentInvitationError):
        inviter.revoke("ord-1", "cancelled")

    def timeout(request: httpx.Request) -> httpx.Response:
        raise PlatformTimeout("ReadTimeoutError")

    inviter, _ = platform_answering(timeout)
    with pytest.raises(RetriableInvitationError):
        inviter.revoke("ord-1", "cancelled")


def test_the_email_channel_answers_not_revocable_without_a_connection() -> None:
    inviters = Inviters(PipelineSettings(), factory=lambda channel, settings: pytest.fail("nothing to build"))
    answer = inviters.revoker("email").revoke("ord-1", "cancelled in the ATS")
    assert (answer.status, answer.channel) == ("not_revocable", "email")
    with pytest.raises(InviterConfigurationError):
        inviters.revoker(None)


class _Recorder(BaseHTTPRequestHandler):
    """Answers every POST 201 with an invitation and records the request line, headers and body."""

    seen: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path, dict(self.headers.items()), body))
        answer = json.dumps({"invitation_id": "inv_7", "assessment_url": "http://p/a/inv_7"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_the_real_transport_sends_the_request_over_http(recording_server, no_proxy_env) -> None:  # type: ignore[no-untyped-def]
    url, seen = recording_server
    inviter = PlatformInviter(url + "/v2", "tok-123", timeout=5)
    try:
        result = inviter.send(ORDER, ORDER.order_id)
        assert (result.external_id, result.url) == ("inv_7", "http://p/a/inv_7")
        inviter.send(ORDER, ORDER.order_id)  # the pooled connection again
        with pytest.raises(RetriableInvitationError, match="without a revoked invitation"):
            inviter.revoke("ord/1", "cancelled")  # the recorder answers every POST with an invitation
    finally:
        inviter.close()
    (path, headers, body), _, (revoke_path, _, _) = seen
    assert path == "/v2/api/invitations" and revoke_path == "/v2/api/invitations/ord%2F1/revoke"
    assert headers["Authorization"] == "Bearer tok-123" and headers["Idempotency-Key"] == ORDER.order_id
    assert headers["Content-Type"] == "application/json" and headers["Accept"] == "application/json"
    assert json.loads(body) == PlatformInviter.request_body(ORDER, ORDER.order_id)


def test_the_real_transport_s_timeouts_and_refusals_are_retriable(no_proxy_env) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        inviter = PlatformInviter(f"http://127.0.0.1:{silent.getsockname()[1]}", None, timeout=0.3)
        with pytest.raises(RetriableInvitationError) as caught:
            inviter.send(ORDER, ORDER.order_id)
        assert caught.value.code == "TIMEOUT" and "0.3 s" in str(caught.value)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        inviter = PlatformInviter(f"http://127.0.0.1:{port}", None, timeout=5)
        with pytest.raises(RetriableInvitationError) as caught:
            inviter.revoke("ord-1", "cancelled")
        assert caught.value.code == "UNAVAILABLE" and "NewConnectionError" in str(caught.value)


def test_the_real_transport_goes_through_the_environment_s_proxy_unless_no_proxy_names_the_host(
    recording_server, no_proxy_env
) -> None:  # type: ignore[no-untyped-def]
    proxy_url, seen = recording_server
    no_proxy_env.setenv("HTTP_PROXY", proxy_url)
    inviter = PlatformInviter("http://platform.invalid", "tok-123", timeout=5)
    assert inviter.send(ORDER, ORDER.order_id).external_id == "inv_7"
    ((request_target, headers, _),) = seen
    assert request_target == "http://platform.invalid/api/invitations"  # a proxy's absolute-form target
    assert headers["Authorization"] == "Bearer tok-123"

    no_proxy_env.setenv("NO_PROXY", "platform.invalid")
    direct = PlatformInviter("http://platform.invalid", None, timeout=5)
    with pytest.raises(RetriableInvitationError) as caught:  # straight to a host that does not resolve
        direct.send(ORDER, ORDER.order_id)
    assert caught.value.code == "UNAVAILABLE" and len(seen) == 1
