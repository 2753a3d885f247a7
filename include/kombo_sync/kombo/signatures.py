"""Kombo webhook signatures: HMAC-SHA256 of the raw body, keyed with the webhook secret, base64url unpadded."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Kombo-Signature"


def sign(raw_body: bytes, secret: str) -> str:
    """The ``X-Kombo-Signature`` value Kombo sends for ``raw_body`` (secret used as UTF-8 bytes)."""
    if not secret:
        raise ValueError("a webhook secret is required")
    digest = hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(raw_body: bytes, header_value: str | None, secrets: Sequence[str]) -> bool:
    """True when the header matches the body under any of ``secrets`` (several allow rotation).

    Checks the raw bytes as received: re-serialised JSON would not match. Empty secrets never match.
    """
    if not header_value:
        return False
    presented = header_value.strip().rstrip("=").encode("utf-8", "replace")
    if not presented:
        return False
    matched = False
    # Every secret is checked, so the time taken does not tell which one (if any) matched.
    for secret in secrets:
        if not secret:
            continue
        expected = sign(raw_body, secret).encode("ascii")
        matched |= hmac.compare_digest(expected, presented)
    return matched
