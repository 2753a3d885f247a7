"""Kombo webhook envelopes, signatures (API.md 3.1) and delivery over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from sandbox.common import json_bytes

SIGNATURE_HEADER = "X-Kombo-Signature"
EVENT_TYPES = (
    "assessment:order-received",
    "inline-assessment:order-received",
    "integration-created",
    "integration-deleted",
    "integration-state-changed",
)
_MAX_BODY_CHARS = 65_536


def sign(body: bytes, secret: str) -> str:
    """HMAC-SHA256 of the raw body, keyed with the secret's UTF-8 bytes, base64url without padding."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def envelope(event_id: str, event_type: str, data: dict[str, Any]) -> bytes:
    return json_bytes({"id": event_id, "type": event_type, "data": data})


def is_order_rejection(status_code: int | None, parsed: Any) -> bool:
    """Kombo rejects an order only for HTTP 422 with exactly `{"status": "ORDER_REJECTED", "message": str}`."""
    return (
        status_code == 422
        and isinstance(parsed, dict)
        and set(parsed) == {"status", "message"}
        and parsed["status"] == "ORDER_REJECTED"
        and isinstance(parsed["message"], str)
    )


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    event_id: str,
    event_type: str,
    body: bytes,
    *,
    bad_signature: bool = False,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """POST one signed event; never raises, the outcome (status, body or error) is in the returned dict."""
    signature = sign(body, secret)
    if bad_signature:
        # Same length and alphabet as a real signature, so only verification can tell.
        signature = sign(body, secret + "-wrong")
    started = time.monotonic()
    result: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "url": url,
        "bad_signature": bad_signature,
        "status_code": None,
        "body": None,
        "json": None,
        "error": None,
    }
    try:
        response = await client.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature,
                "User-Agent": "Kombo-Webhooks (sandbox)",
            },
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    else:
        result["status_code"] = response.status_code
        result["body"] = response.text[:_MAX_BODY_CHARS]
        try:
            result["json"] = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            result["json"] = None
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 2)
    return result
