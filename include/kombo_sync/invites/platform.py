"""The platform channel: the provider's own invitation API creates the candidate's invitation.

``POST {base}/api/invitations`` with the Kombo order id as idempotency key (the ``Idempotency-Key`` header and
the body's ``order_id``): the platform creates at most one invitation per order and answers a repeat with the
same invitation, which is what makes a re-send after a crash harmless. The answer carries the platform's
invitation id and the candidate's link.

``POST {base}/api/invitations/{order_id}/revoke`` withdraws it when the order left OPEN in the ATS. It is
idempotent: a repeat answers 200 with ``already_revoked``, an unknown order 404, a candidate who already finished
409 ``invitation_finished``; each is a definite answer (``RevocationResult``), so a run killed after revoking
and before recording converges on the next run by simply revoking again.

``POST {base}/api/invitations/{order_id}/remind`` reminds the candidate, with the idempotency key
``<order id>:reminder:<number>`` (header ``Idempotency-Key``, and ``number`` in the body): the platform sends at
most one reminder per key and answers a repeat 200 with the same reminder, so a re-send after a crash is
harmless. 404 (no invitation) and 409 ``invitation_finished`` / ``invitation_revoked`` mean no reminder is
needed: definite answers too.

Connection ``kombo_platform`` (HTTP): host = base URL, password = bearer token, extras ``timeout`` (s, default
15) and ``path`` (default ``/api/invitations``).

The requests go through urllib3's connection pool (`Urllib3Transport`): the intake's senders spend most of their
CPU in the HTTP client, and urllib3 costs about half of httpx's CPU per request. It keeps what httpx did by
default: certificates checked against certifi's bundle (or ``SSL_CERT_FILE``), the proxy of ``HTTPS_PROXY`` /
``HTTP_PROXY`` unless ``NO_PROXY`` names the host, no redirects followed, no retries of its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.request
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urlsplit

import certifi
import urllib3

from kombo_sync.connections import connection_extras, http_base_url
from kombo_sync.invites.base import (
    ALREADY_REVOKED,
    CHANNEL_PLATFORM,
    FINISHED,
    NOT_FOUND,
    REMINDER_NOT_NEEDED,
    REMINDER_SENT,
    REVOKED,
    InvitationOrder,
    InvitationResult,
    PermanentInvitationError,
    ReminderRequest,
    ReminderResult,
    RetriableInvitationError,
    RevocationResult,
)

log = logging.getLogger(__name__)

DEFAULT_PATH = "/api/invitations"
# 408 (timeout), 409 (the same key is being processed right now), 425, 429 and 5xx may succeed later;
# 401/403 mean our token is wrong, not the order: retried so that fixing the connection lets orders through.
_RETRIABLE_STATUSES = frozenset({401, 403, 408, 409, 423, 425, 429})


class PlatformAnswer(NamedTuple):
    """The platform's answer: the status and the body's bytes."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (JSONDecodeError and UnicodeDecodeError are ValueErrors)."""
        return json.loads(self.content)


class PlatformTimeout(Exception):
    """The platform did not answer within the timeout (connecting or reading)."""


class PlatformUnreachable(Exception):
    """No answer: the connection was refused, broke, or its TLS handshake failed."""


class PlatformTransport(Protocol):
    """How a request reaches the platform: POST ``body`` (JSON bytes) to ``url`` with ``headers``; raises
    PlatformTimeout or PlatformUnreachable when there is no answer. Thread-safe."""

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> PlatformAnswer: ...

    def close(self) -> None: ...


class Urllib3Transport:
    """`PlatformTransport` over one urllib3 pool manager (thread-safe; up to ``max_connections`` kept alive per
    host, more opened when needed and closed after use)."""

    def __init__(self, base_url: str, timeout: float, max_connections: int) -> None:
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        options: dict[str, Any] = {
            "maxsize": max_connections,
            "block": False,
            "ca_certs": os.environ.get("SSL_CERT_FILE") or certifi.where(),
        }
        proxy = _proxy_for(base_url)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> PlatformAnswer:
        try:
            response = self._pool.urlopen(
                "POST", url, body=body, headers=headers, timeout=self._timeout, retries=False, redirect=False
            )
        # Refused, no route, no such host: a NewConnectionError, which urllib3 also makes a TimeoutError.
        except urllib3.exceptions.NewConnectionError as exc:
            raise PlatformUnreachable(type(exc).__name__) from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise PlatformTimeout(type(exc).__name__) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PlatformUnreachable(type(exc).__name__) from exc
        return PlatformAnswer(response.status, response.data)

    def close(self) -> None:
        self._pool.clear()


def _proxy_for(base_url: str) -> str | None:
    """The proxy the environment names for this URL (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``), unless
    ``NO_PROXY`` exempts its host: what httpx did by default."""
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy


class PlatformInviter:
    """Creates invitations through the platform's HTTP API (thread-safe, one pooled transport)."""

    channel = CHANNEL_PLATFORM

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 15.0,
        path: str = DEFAULT_PATH,
        transport: PlatformTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        if not base_url:
            raise ValueError("the platform connection needs a host (the invitation API's base URL)")
        if timeout <= 0:
            raise ValueError("timeout must be positive: every platform request needs one")
        if "://" not in base_url:
            base_url = "https://" + base_url
        self.base_url = base_url.rstrip("/")
        self.path = "/" + path.lstrip("/")
        self.timeout = timeout
        self._max_connections = max_connections
        self._transport = transport
        self._lock = threading.Lock()
        self._headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": "kombo-assessment-sync/0.1",
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"PlatformInviter(base_url={self.base_url!r})"

    @classmethod
    def from_connection(cls, conn: Any, *, max_connections: int = 32) -> PlatformInviter:
        """Build from an Airflow HTTP connection (host = base URL, password = token, extras timeout/path);
        ``max_connections`` at least the senders that share it, or they queue for a connection."""
        extra = connection_extras(conn)
        return cls(
            http_base_url(conn.host, conn.schema, conn.port),
            conn.password or None,
            timeout=float(extra.get("timeout") or 15.0),
            path=str(extra.get("path") or DEFAULT_PATH),
            max_connections=max_connections,
        )

    def _client(self) -> PlatformTransport:
        transport = self._transport
        if transport is None:
            with self._lock:
                if self._transport is None:
                    self._transport = Urllib3Transport(self.base_url, self.timeout, self._max_connections)
                transport = self._transport
        return transport

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()

    @staticmethod
    def request_body(order: InvitationOrder, idempotency_key: str) -> dict[str, Any]:
        return {
            "order_id": idempotency_key,
            "integration_id": order.integration_id,
            "package_id": order.package_id,
            "candidate": {
                "email": order.candidate_email,
                "first_name": order.candidate_first_name,
                "last_name": order.candidate_last_name,
                "remote_id": order.candidate_remote_id,
            },
            "application": {"remote_id": order.application_remote_id},
            "job": {"remote_id": order.job_remote_id, "name": order.job_name},
        }

    def send(self, order: InvitationOrder, idempotency_key: str) -> InvitationResult:
        response = _post(
            self, self.path, self.request_body(order, idempotency_key), {"Idempotency-Key": idempotency_key}
        )
        status = response.status_code
        _raise_for_error(self, response, "the invitation")
        try:
            body = response.json()
        except ValueError as exc:
            raise RetriableInvitationError(
                f"platform answered HTTP {status} without JSON", channel=self.channel, code="BAD_RESPONSE"
            ) from exc
        invitation = body.get("invitation", body) if isinstance(body, dict) else {}
        invitation_id = invitation.get("id") or invitation.get("invitation_id")
        url = invitation.get("url") or invitation.get("link") or invitation.get("assessment_url")
        if not invitation_id or not url:
            raise RetriableInvitationError(
                f"platform answered HTTP {status} without an invitation id and link",
                channel=self.channel,
                code="BAD_RESPONSE",
            )
        log.info("platform invitation %s for order %s (HTTP %s)", invitation_id, idempotency_key, status)
        return InvitationResult(external_id=str(invitation_id), url=str(url), channel=self.channel)

    def remind(self, request: ReminderRequest, idempotency_key: str) -> ReminderResult:
        """Remind the candidate (idempotent per key); raises RetriableInvitationError when there is no definite
        answer and PermanentInvitationError when the platform refuses the call itself."""
        return remind(self, request, idempotency_key)

    def revoke(self, order_id: str, reason: str) -> RevocationResult:
        """Withdraw the order's invitation (idempotent); raises RetriableInvitationError when there is no
        definite answer and PermanentInvitationError when the platform refuses the call itself."""
        path = f"{self.path}/{quote(order_id, safe='')}/revoke"
        response = _post(self, path, {"reason": reason[:500]}, {})
        status = response.status_code
        body = _json_object(response)
        if status == 404:
            return RevocationResult(NOT_FOUND, self.channel, detail="the platform has no invitation for it")
        if status == 409 and body.get("error") == "invitation_finished":
            finished = str(body.get("status") or "finished")[:32]
            return RevocationResult(
                FINISHED,
                self.channel,
                external_id=_text(body.get("invitation_id")),
                detail=f"the candidate already finished ({finished})",
            )
        _raise_for_error(self, response, "the revocation")
        if body.get("status") != "revoked":
            raise RetriableInvitationError(
                f"platform answered HTTP {status} without a revoked invitation",
                channel=self.channel,
                code="BAD_RESPONSE",
            )
        result = ALREADY_REVOKED if body.get("already_revoked") else REVOKED
        log.info("platform invitation of order %s: %s (HTTP %s)", order_id, result, status)
        return RevocationResult(result, self.channel, external_id=_text(body.get("invitation_id")))


_NO_REMINDER_NEEDED = frozenset({"invitation_finished", "invitation_revoked"})


def _post(
    inviter: PlatformInviter, path: str, body: dict[str, Any], headers: dict[str, str]
) -> PlatformAnswer:
    content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    try:
        return inviter._client().post(inviter.base_url + path, content, {**inviter._headers, **headers})
    except PlatformTimeout as exc:
        raise RetriableInvitationError(
            f"platform timed out after {inviter.timeout:g} s", channel=inviter.channel, code="TIMEOUT"
        ) from exc
    except PlatformUnreachable as exc:
        raise RetriableInvitationError(
            f"platform unreachable ({exc})", channel=inviter.channel, code="UNAVAILABLE"
        ) from exc


def _raise_for_error(inviter: PlatformInviter, response: PlatformAnswer, what: str) -> None:
    """A 5xx or a 4xx in ``_RETRIABLE_STATUSES`` is tried again; any other 4xx is the platform refusing ``what``."""
    status = response.status_code
    if status >= 500 or status in _RETRIABLE_STATUSES:
        raise RetriableInvitationError(
            f"platform answered HTTP {status}{_detail(response)}", channel=inviter.channel, code=str(status)
        )
    if status >= 400:
        raise PermanentInvitationError(
            f"platform refused {what}: HTTP {status}{_detail(response)}",
            channel=inviter.channel,
            code=str(status),
        )


def remind(inviter: PlatformInviter, request: ReminderRequest, idempotency_key: str) -> ReminderResult:
    """The platform's reminder call (``PlatformInviter.remind``)."""
    path = f"{inviter.path}/{quote(request.order_id, safe='')}/remind"
    response = _post(
        inviter,
        path,
        {"order_id": request.order_id, "number": request.number, "idempotency_key": idempotency_key},
        {"Idempotency-Key": idempotency_key},
    )
    status = response.status_code
    body = _json_object(response)
    if status == 404:
        return ReminderResult(
            REMINDER_NOT_NEEDED, inviter.channel, detail="the platform has no invitation for it"
        )
    if status == 409 and body.get("error") in _NO_REMINDER_NEEDED:
        state = str(body.get("status") or body.get("error"))[:32]
        return ReminderResult(REMINDER_NOT_NEEDED, inviter.channel, detail=f"the invitation is {state}")
    _raise_for_error(inviter, response, "the reminder")
    reminder_id = body.get("reminder_id") or body.get("id")
    if not reminder_id:
        raise RetriableInvitationError(
            f"platform answered HTTP {status} without a reminder id",
            channel=inviter.channel,
            code="BAD_RESPONSE",
        )
    log.info("platform reminder %s of order %s (HTTP %s)", request.number, request.order_id, status)
    return ReminderResult(
        REMINDER_SENT, inviter.channel, external_id=_text(reminder_id), repeated=bool(body.get("repeated"))
    )


def _json_object(response: PlatformAnswer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:255]


def _detail(response: PlatformAnswer) -> str:
    """A short, PII-free detail from an error body: the platform's error code or title only."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body)
    if isinstance(error, dict):
        code = error.get("code") or error.get("title")
        return f" ({code})" if isinstance(code, str) and len(code) <= 80 else ""
    return f" ({error})" if isinstance(error, str) and len(error) <= 80 else ""
