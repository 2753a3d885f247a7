"""What a webhook delivery is answered: `WebhookResponse`, the error envelope and Kombo's rejection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

REJECTION_STATUS = "ORDER_REJECTED"
# Kombo shows the message in the ATS; a custom rule's essay is cut to something a UI can hold.
MAX_REJECTION_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class WebhookResponse:
    """What to answer: a status code and a JSON body (plus the odd header such as `Retry-After`)."""

    status_code: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def error_response(status_code: int, code: str, message: str, **extra: Any) -> WebhookResponse:
    headers = {"Retry-After": "30"} if status_code in (409, 503) else {}
    return WebhookResponse(
        status_code, {"status": "error", "error": code, "message": message, **extra}, headers
    )


def rejection(message: str) -> WebhookResponse:
    """The exact 422 body that makes Kombo reject the order and show `message` in the ATS."""
    text = message.strip()
    if len(text) > MAX_REJECTION_MESSAGE_CHARS:
        text = text[: MAX_REJECTION_MESSAGE_CHARS - 1] + "…"
    return WebhookResponse(422, {"status": REJECTION_STATUS, "message": text})
