"""The salted hash of a candidate's e-mail: what is left of it after erasure, so the duplicate rule still sees
an erased order that is still active (`orders.candidate_email_hash`).

The salt is a secret: the password of the Airflow connection named by `retention.salt_conn_id` (default
`kombo_erasure_salt`), else the environment variable `KOMBO_ERASURE_SALT`. It is never logged, printed or stored.
Changing it makes the hashes already stored unmatchable (erased orders then no longer count as duplicates).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time

from kombo_sync.connections import get_connection

log = logging.getLogger(__name__)

SALT_ENV = "KOMBO_ERASURE_SALT"
DEFAULT_SALT_CONN_ID = "kombo_erasure_salt"
# Salts shorter than this are refused: a short salt would make the hashes easy to reverse by guessing e-mails.
MIN_SALT_LENGTH = 16
_CACHE_SECONDS = 60.0
# An e-mail address quoted in free text (an error or quarantine reason): the console masks it, erasure removes it.
EMAIL_IN_TEXT = re.compile(r"[^\s@'\"<>(),;:]+@[^\s@'\"<>(),;:]+")


class SaltTooShort(ValueError):
    def __init__(self, source: str) -> None:
        super().__init__(f"the erasure salt from {source} is shorter than {MIN_SALT_LENGTH} characters")


def replace_emails(text: str | None, replacement: str) -> str | None:
    """The text with every e-mail address in it replaced."""
    return None if text is None else EMAIL_IN_TEXT.sub(replacement, text)


def normalize_email(email: str | None) -> str:
    """The form the duplicate rule compares: trimmed, lower case ('' for none)."""
    return (email or "").strip().lower()


class CandidateHasher:
    """HMAC-SHA256 of the normalised e-mail under the secret salt (hex, 64 characters)."""

    def __init__(self, salt: str) -> None:
        if len(salt) < MIN_SALT_LENGTH:
            raise SaltTooShort("the given value")
        self._salt = salt.encode()

    def __repr__(self) -> str:  # never show the salt
        return "CandidateHasher(salt=***)"

    def email_hash(self, email: str | None) -> str | None:
        """The hash of this e-mail, or None for no e-mail."""
        normalized = normalize_email(email)
        if not normalized:
            return None
        return hmac.new(self._salt, normalized.encode(), hashlib.sha256).hexdigest()


def read_salt(conn_id: str = DEFAULT_SALT_CONN_ID) -> str | None:
    """The salt now (no cache): the connection's password, then the environment; None when neither is set."""
    try:
        conn = get_connection(conn_id)
    except Exception as exc:  # a broken secrets backend must not hide the environment fallback
        log.warning(
            "could not read Airflow connection %s (%s); trying the environment", conn_id, type(exc).__name__
        )
        conn = None
    if conn is not None and conn.password:
        if len(conn.password) < MIN_SALT_LENGTH:
            raise SaltTooShort(f"connection {conn_id}")
        return str(conn.password)
    value = os.environ.get(SALT_ENV, "").strip()
    if value:
        if len(value) < MIN_SALT_LENGTH:
            raise SaltTooShort(SALT_ENV)
        return value
    return None


_cache: dict[str, tuple[float, CandidateHasher | None]] = {}
_cache_lock = threading.Lock()


def candidate_hasher(conn_id: str = DEFAULT_SALT_CONN_ID, *, cached: bool = True) -> CandidateHasher | None:
    """The hasher for the configured salt, or None when no salt is configured.

    Cached for a minute per process: the webhook asks on every order and must not look up a connection each time.
    """
    key = f"{conn_id}\x00{os.environ.get(SALT_ENV, '')}"
    now = time.monotonic()
    if cached:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
    salt = read_salt(conn_id)
    hasher = CandidateHasher(salt) if salt else None
    with _cache_lock:
        _cache[key] = (now + _CACHE_SECONDS, hasher)
    return hasher


def matching_hasher(conn_id: str = DEFAULT_SALT_CONN_ID) -> CandidateHasher | None:
    """The hasher the duplicate rule matches erased orders with (webhook and intake). A salt that is set but
    unusable is logged as an error, and orders are still taken and invited without the match: a configuration
    mistake must not stop the intake. Housekeeping, which stores the hashes, fails on it instead
    (``candidate_hasher``)."""
    try:
        return candidate_hasher(conn_id)
    except SaltTooShort as exc:
        log.error(
            "%s: erased orders are not matched as duplicates until it is fixed (docs/lifecycle.md)", exc
        )
        return None
