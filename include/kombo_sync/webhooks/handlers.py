"""Kombo webhooks, framework-free: `handle_webhook(raw_body, headers, deps) -> WebhookResponse`.

The checks run in this order, and the first that fails answers:

| Check | Answer |
|---|---|
| no webhook secret configured | 503 (the log says why) |
| body over `webhook.max_body_bytes` (1 MB) | 413 |
| `Content-Type` not `application/json` | 415 |
| `X-Kombo-Signature` missing or wrong (HMAC-SHA256, base64url, every configured secret) | 401 |
| not JSON, or JSON that breaks the event schema | 400 naming the field |
| event id seen before | the answer stored for it (nothing changes); 409 while an inline invitation for it runs |

Then per type: `assessment:order-received` (rejection rules, record, wake the intake), the inline flow
(record, invite now, answer `assessment_url`), the three integration events (registry), anything else
(200, recorded, ignored). Recording the event, the rules' reads, the writes and the stored answer are one
transaction (SQLite: one write lock, taken through this process's write gate); only the inline flow's
invitation runs after it, outside any transaction. Nothing a sender can send produces a 5xx; server faults
(the database down, the invitation channel failing for the inline flow) do, so that Kombo keeps the order for
the poll.

This module checks the request and dispatches by event type; the rest lives by concern beside it: `parsing`
(the body), `transaction` (the event's transaction and idempotency), `orders` (order events and the inline
flow), `integrations` (integration events), `responses` and `deps`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kombo_sync.kombo.models import (
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED,
    IntegrationCreatedData,
    IntegrationDeletedData,
    IntegrationStateChangedData,
    KomboModel,
    OrderReceivedData,
    WebhookEnvelope,
)
from kombo_sync.kombo.signatures import SIGNATURE_HEADER, verify
from kombo_sync.settings import PipelineSettings
from kombo_sync.webhooks.deps import WebhookDeps
from kombo_sync.webhooks.integrations import (
    integration_created,
    integration_deleted,
    integration_state_changed,
)
from kombo_sync.webhooks.orders import inline_invite, order_lookup, order_received
from kombo_sync.webhooks.parsing import parse_event
from kombo_sync.webhooks.responses import WebhookResponse, error_response
from kombo_sync.webhooks.transaction import EventWork, InlineInvitation, deduplicated

log = logging.getLogger(__name__)


def handle_webhook(raw_body: bytes, headers: Mapping[str, str], deps: WebhookDeps) -> WebhookResponse:
    """Answer one Kombo webhook delivery (see the module docstring for the order of checks)."""
    settings = deps.settings()
    secrets = [secret for secret in deps.secrets() if secret]
    if not secrets:
        return error_response(503, "WEBHOOK_DISABLED", "The webhook is not configured on this server.")
    if len(raw_body) > settings.webhook.max_body_bytes:
        return error_response(
            413, "BODY_TOO_LARGE", f"The body exceeds {settings.webhook.max_body_bytes} bytes."
        )
    content_type = _header(headers, "content-type")
    if not _is_json_content_type(content_type):
        return error_response(415, "UNSUPPORTED_MEDIA_TYPE", "The body must be sent as application/json.")
    if not verify(raw_body, _header(headers, SIGNATURE_HEADER), secrets):
        return error_response(
            401, "SIGNATURE_INVALID", f"The {SIGNATURE_HEADER} header is missing or does not match."
        )
    parsed = parse_event(raw_body)
    if isinstance(parsed, WebhookResponse):
        return parsed
    envelope, data = parsed
    return deduplicated(
        envelope, data, deps, settings, dispatch=_dispatch, inline_invite=inline_invite, lookup=order_lookup
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, item in headers.items():
            if key.lower() == lowered:
                return item
    return value


def _is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def _dispatch(
    envelope: WebhookEnvelope,
    data: KomboModel | None,
    deps: WebhookDeps,
    settings: PipelineSettings,
    work: EventWork,
) -> WebhookResponse | InlineInvitation:
    """The answer for a valid, first-time (or retried after a 5xx) event, inside its transaction."""
    if isinstance(data, OrderReceivedData):
        inline = envelope.type == WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED
        return order_received(data, deps, settings, work, event_type=envelope.type, inline=inline)
    if isinstance(data, IntegrationDeletedData):
        return integration_deleted(data, work)
    if isinstance(data, IntegrationCreatedData):
        return integration_created(data, work)
    if isinstance(data, IntegrationStateChangedData):
        return integration_state_changed(data, work)
    log.info("webhook event %s of unknown type %r recorded and ignored", envelope.id, envelope.type[:100])
    return WebhookResponse(200, {"status": "IGNORED", "message": "Event type not handled."})


__all__ = ["WebhookDeps", "WebhookResponse", "handle_webhook"]
