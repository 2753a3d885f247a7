"""Kombo API errors, typed by Kombo's ``error.code`` and split into retriable and fatal.

Kombo asks clients to branch on ``error.code`` and not on the HTTP status, so the status is only consulted
when the code is null (a bare load-balancer 503, say), when the code is one we do not know yet, or for
``PLATFORM.UNKNOWN_ERROR``, which is transient only when it comes with a 5xx. Errors never carry the API key,
request bodies or query strings, so they are safe to log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

RATE_LIMIT_EXCEEDED = "PLATFORM.RATE_LIMIT_EXCEEDED"
CONCURRENCY_LIMIT_EXCEEDED = "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED"
TASK_TIMED_OUT = "PLATFORM.TASK_TIMED_OUT"
UNKNOWN_ERROR = "PLATFORM.UNKNOWN_ERROR"
REMOTE_RATE_LIMIT_EXCEEDED = "REMOTE.RATE_LIMIT_EXCEEDED"
REMOTE_SERVICE_UNAVAILABLE = "REMOTE.SERVICE_UNAVAILABLE"
INTEGRATION_INACTIVE = "INTEGRATION.INACTIVE"
INPUT_INVALID = "PLATFORM.INPUT_INVALID"
INTEGRATION_NOT_FOUND = "PLATFORM.INTEGRATION_NOT_FOUND"
AUTHENTICATION_INVALID = "PLATFORM.AUTHENTICATION_INVALID"

ERROR_CODES = frozenset(
    {
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
        "PLATFORM.INTEGRATION_NOT_FOUND",
        "PLATFORM.INPUT_INVALID",
        "PLATFORM.UNKNOWN_ERROR",
        "PLATFORM.IP_NOT_WHITELISTED",
        "PLATFORM.AUTHENTICATION_INVALID",
        "PLATFORM.TASK_TIMED_OUT",
        "INTEGRATION.PERMISSION_MISSING",
        "INTEGRATION.AUTHENTICATION_INVALID",
        "INTEGRATION.QA_FAILED",
        "INTEGRATION.SETUP_SYNC_PENDING",
        "INTEGRATION.SETUP_INCOMPLETE",
        "INTEGRATION.INACTIVE",
        "INTEGRATION.MODEL_NOT_AVAILABLE",
        "INTEGRATION.MODEL_DISABLED",
        "INTEGRATION.ACTION_NOT_AVAILABLE",
        "INTEGRATION.ACTION_DISABLED",
        "REMOTE.SERVICE_UNAVAILABLE",
        "REMOTE.RATE_LIMIT_EXCEEDED",
        "REMOTE.INPUT_INVALID",
        "REMOTE.UNKNOWN_HTTP_ERROR",
        "ATS.JOB_CLOSED",
        "ATS.APPLICATION_ALREADY_EXISTS",
    }
)
RETRIABLE_ERROR_CODES = frozenset(
    {
        RATE_LIMIT_EXCEEDED,
        CONCURRENCY_LIMIT_EXCEEDED,
        TASK_TIMED_OUT,
        REMOTE_RATE_LIMIT_EXCEEDED,
        REMOTE_SERVICE_UNAVAILABLE,
    }
)


class KomboError(Exception):
    """Any failed Kombo call; ``retriable`` says whether the same request may succeed later.

    ``maybe_applied`` (set by the client on the error a call raises): whether any attempt of the call may have
    been carried out by Kombo: True when one got no answer (timeout, dropped connection) or a 504 (the work did
    not finish in time, which is not that it did not happen); False when every attempt got a definite error
    answer; None when not known (an error built elsewhere).
    """

    retriable: bool = False
    maybe_applied: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        title: str | None = None,
        log_url: str | None = None,
        http_status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.title = title
        self.log_url = log_url
        self.http_status = http_status
        self.method = method
        self.path = path
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.method} {self.path}" if self.method or self.path else "Kombo request"
        status = f" HTTP {self.http_status}" if self.http_status is not None else ""
        code = f" {self.code}" if self.code else ""
        log = f" (log: {self.log_url})" if self.log_url else ""
        return f"{where} failed:{status}{code}: {self.message}{log}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments: rebuild from the instance dict so errors survive pickling.
        return (_rebuild_error, (type(self), self.message, dict(self.__dict__)))


def _rebuild_error(cls: type[KomboError], message: str, state: dict[str, Any]) -> KomboError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class KomboRetriableError(KomboError):
    """Transient: rate or concurrency limit, the ATS unavailable, 5xx, timeouts and connection errors."""

    retriable = True


class KomboRateLimitError(KomboRetriableError):
    """Kombo's own rate limit (``PLATFORM.RATE_LIMIT_EXCEEDED`` or a bare 429): the whole key must wait."""


class KomboConcurrencyLimitError(KomboRetriableError):
    """Too many requests in flight for one integration (``PLATFORM.CONCURRENCY_LIMIT_EXCEEDED``)."""


class KomboRemoteError(KomboRetriableError):
    """The customer's ATS is rate limiting or unavailable (``REMOTE.RATE_LIMIT_EXCEEDED`` / ``SERVICE_UNAVAILABLE``)."""


class KomboServerError(KomboRetriableError):
    """A 5xx, ``PLATFORM.UNKNOWN_ERROR`` with a 5xx, or ``PLATFORM.TASK_TIMED_OUT``."""


class KomboTransportError(KomboRetriableError):
    """No HTTP response: connection refused or reset, DNS failure, broken stream."""


class KomboTimeoutError(KomboTransportError):
    """The request timed out (connect, read, write or pool)."""


class KomboFatalError(KomboError):
    """Retrying the same request will not help: authentication, inactive integration, invalid input, 4xx."""


class KomboInvalidResponseError(KomboFatalError):
    """A 2xx response whose body is not the JSON envelope the contract promises."""


class KomboRetriesExhaustedError(KomboError):
    """The client gave up after ``attempts`` tries; the cause was transient, so a later run may succeed."""

    def __init__(self, last_error: KomboError, attempts: int) -> None:
        super().__init__(
            f"gave up after {attempts} attempts: {last_error.message}",
            code=last_error.code,
            title=last_error.title,
            log_url=last_error.log_url,
            http_status=last_error.http_status,
            method=last_error.method,
            path=last_error.path,
            retry_after=last_error.retry_after,
        )
        self.last_error = last_error
        self.attempts = attempts
        self.retriable = last_error.retriable


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        # Plain dicts are case-sensitive; httpx.Headers is not.
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _float_or_none(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number == number and number >= 0 else None  # NaN and negatives are nonsense


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    seconds = _float_or_none(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def parse_ratelimit_reset(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds until the rate window resets from ``ratelimit-reset`` (delta seconds; an epoch is tolerated)."""
    seconds = _float_or_none(value)
    if seconds is None:
        return None
    if seconds > 1_000_000_000:  # some servers send an absolute Unix time instead of a delta
        return max(0.0, seconds - now())
    return seconds


def _error_class(code: str | None, http_status: int) -> type[KomboError]:
    if code == RATE_LIMIT_EXCEEDED:
        return KomboRateLimitError
    if code == CONCURRENCY_LIMIT_EXCEEDED:
        return KomboConcurrencyLimitError
    if code in (REMOTE_RATE_LIMIT_EXCEEDED, REMOTE_SERVICE_UNAVAILABLE):
        return KomboRemoteError
    if code == TASK_TIMED_OUT:
        return KomboServerError
    if code == UNKNOWN_ERROR:
        return KomboServerError if http_status >= 500 else KomboFatalError
    if code is not None and code in ERROR_CODES:
        return KomboFatalError
    # No code, or one added after this client was written: the HTTP status is all we have.
    if http_status == 429:
        return KomboRateLimitError
    if http_status >= 500:
        return KomboServerError
    return KomboFatalError


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None,
    method: str,
    path: str,
    *,
    now: Callable[[], float] = time.time,
) -> KomboError:
    """Build the typed error for a failed response from Kombo's error envelope or a bare (e.g. HTML) body."""
    code: str | None = None
    title: str | None = None
    message: str | None = None
    log_url: str | None = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        title = error.get("title") if isinstance(error.get("title"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        log_url = error.get("log_url") if isinstance(error.get("log_url"), str) else None
    if not message:
        message = title or f"HTTP {status} without a Kombo error body"

    cls = _error_class(code, status)
    retry_after = parse_retry_after(_header(headers, "retry-after"), now=now)
    remaining = _float_or_none(_header(headers, "ratelimit-remaining"))
    if issubclass(cls, KomboRateLimitError) or remaining == 0:
        reset = parse_ratelimit_reset(_header(headers, "ratelimit-reset"), now=now)
        if reset is not None:
            retry_after = reset if retry_after is None else max(retry_after, reset)
    return cls(
        message,
        code=code,
        title=title,
        log_url=log_url,
        http_status=status,
        method=method,
        path=path,
        retry_after=retry_after,
    )
