"""The event's body: JSON that any database can store, the envelope and its type's data validated (else a 400)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from kombo_sync.kombo.models import (
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED,
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED,
    WEBHOOK_INTEGRATION_CREATED,
    WEBHOOK_INTEGRATION_DELETED,
    WEBHOOK_INTEGRATION_STATE_CHANGED,
    KomboModel,
    WebhookEnvelope,
    parse_webhook_data,
)
from kombo_sync.storable import json_problem
from kombo_sync.webhooks.responses import WebhookResponse, error_response

MAX_FIELD_ERRORS = 10

# Widths of the state store columns the event's values land in; longer values are a 400, not a DB error.
_FIELD_LIMITS: dict[str, tuple[tuple[str, int], ...]] = {
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED: (("id", 255), ("integration_id", 255), ("package_id", 255)),
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED: (("id", 255), ("integration_id", 255), ("package_id", 255)),
    WEBHOOK_INTEGRATION_CREATED: (("id", 255), ("tool", 100), ("category", 32), ("end_user.origin_id", 255)),
    WEBHOOK_INTEGRATION_DELETED: (("id", 255), ("tool", 100), ("category", 32), ("end_user.origin_id", 255)),
    WEBHOOK_INTEGRATION_STATE_CHANGED: (
        ("integration_id", 255),
        ("integration_tool", 100),
        ("integration_category", 32),
        ("end_user.origin_id", 255),
        ("qa_status", 32),
        ("setup_status", 32),
        ("state", 32),
    ),
}


# The ids each event is keyed by in the state store.
_KEYS: dict[str, tuple[str, ...]] = {
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED: ("id", "integration_id", "package_id"),
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED: ("id", "integration_id", "package_id"),
    WEBHOOK_INTEGRATION_CREATED: ("id",),
    WEBHOOK_INTEGRATION_DELETED: ("id",),
    WEBHOOK_INTEGRATION_STATE_CHANGED: ("integration_id",),
}


class _BadJson(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _BadJson("a number is too large")
    return value


def _reject_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not valid JSON")


def parse_event(raw_body: bytes) -> tuple[WebhookEnvelope, KomboModel | None] | WebhookResponse:
    """Parse and validate the envelope and the data of its type; a 400 `WebhookResponse` when invalid."""
    try:
        text = raw_body.decode("utf-8")
        payload = json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, _BadJson) else "the body is not valid UTF-8 JSON"
        return error_response(400, "INVALID_JSON", f"Invalid JSON: {reason}.")
    if not isinstance(payload, dict):
        return error_response(400, "INVALID_EVENT", "The body must be a JSON object.", fields=["$"])
    problem = json_problem(payload)
    if problem is not None:
        path, reason = problem
        return error_response(400, "INVALID_EVENT", f"{path or '$'}: {reason}", fields=[path or "$"])
    try:
        envelope = WebhookEnvelope.model_validate(payload)
    except ValidationError as exc:
        return _schema_error(exc, prefix="")
    too_long = _too_long(payload, (("id", 255), ("type", 100)), prefix="")
    if too_long is not None:
        return too_long
    try:
        data = parse_webhook_data(envelope)
    except ValidationError as exc:
        return _schema_error(exc, prefix="data.")
    if data is None:
        return envelope, None
    too_long = _too_long(envelope.data, _FIELD_LIMITS.get(envelope.type, ()), prefix="data.")
    if too_long is not None:
        return too_long
    for name in _KEYS.get(envelope.type, ()):
        value = envelope.data.get(name) if isinstance(envelope.data, Mapping) else None
        if isinstance(value, str) and not value.strip():
            # An empty id keys nothing: the order could not be recorded (it failed the request with a 500).
            return error_response(
                400, "INVALID_EVENT", f"data.{name}: must not be empty", fields=[f"data.{name}"]
            )
    return envelope, data


def _schema_error(exc: ValidationError, *, prefix: str) -> WebhookResponse:
    problems: list[str] = []
    paths: list[str] = []
    # The input values are left out on purpose: they may be a candidate's personal data.
    for error in exc.errors(include_input=False, include_url=False)[:MAX_FIELD_ERRORS]:
        path = prefix + ".".join(str(part) for part in error["loc"]) if error["loc"] else prefix.rstrip(".")
        path = path or "$"
        paths.append(path)
        problems.append(f"{path}: {error['msg']}")
    more = exc.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return error_response(
        400, "INVALID_EVENT", "Invalid event: " + "; ".join(problems) + suffix, fields=paths
    )


def _too_long(
    values: Mapping[str, Any], limits: Sequence[tuple[str, int]], *, prefix: str
) -> WebhookResponse | None:
    for path, limit in limits:
        value: Any = values
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str) and len(value) > limit:
            name = prefix + path
            return error_response(
                400, "INVALID_EVENT", f"{name}: longer than {limit} characters", fields=[name]
            )
    return None
