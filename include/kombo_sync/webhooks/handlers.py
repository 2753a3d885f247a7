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
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from kombo_sync.assets import INTEGRATIONS_TOPIC, ORDERS_TOPIC
from kombo_sync.intake.claims import write_gate
from kombo_sync.kombo.models import (
    ORDER_STATUS_OPEN,
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED,
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED,
    WEBHOOK_INTEGRATION_CREATED,
    WEBHOOK_INTEGRATION_DELETED,
    WEBHOOK_INTEGRATION_STATE_CHANGED,
    IntegrationCreatedData,
    IntegrationDeletedData,
    IntegrationStateChangedData,
    KomboModel,
    OrderReceivedData,
    WebhookEnvelope,
    parse_webhook_data,
)
from kombo_sync.kombo.signatures import SIGNATURE_HEADER, verify
from kombo_sync.serving import published_package_ids
from kombo_sync.settings import PipelineSettings, load_settings
from kombo_sync.state._util import from_row
from kombo_sync.state.events import WebhookEvent, WebhookEventLog
from kombo_sync.state.integrations import (
    ACTIVE,
    ASSESSMENT,
    DELETED,
    IntegrationRecord,
    IntegrationRepository,
)
from kombo_sync.state.orders import REJECTED, InvalidTransition, OrderRepository
from kombo_sync.state.schema import INTEGRATION_STATUSES, integrations, orders
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import request_wakeup, request_wakeup_in_transaction
from kombo_sync.webhooks.rules import (
    RejectionRule,
    RuleConfigurationError,
    RuleContext,
    first_rejection,
    rules_for,
)

log = logging.getLogger(__name__)

REJECTION_STATUS = "ORDER_REJECTED"
# Kombo shows the message in the ATS; a custom rule's essay is cut to something a UI can hold.
MAX_REJECTION_MESSAGE_CHARS = 1000
# An event recorded but never answered (the process died, the database went away) is processed again by a
# redelivery that comes at least this long after it; younger ones are still being processed (409).
IN_PROGRESS_SECONDS = 60.0
MAX_JSON_DEPTH = 64
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


@dataclass(frozen=True)
class WebhookResponse:
    """What to answer: a status code and a JSON body (plus the odd header such as `Retry-After`)."""

    status_code: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(status_code: int, code: str, message: str, **extra: Any) -> WebhookResponse:
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


InviteNow = Callable[[StateStore, Any, OrderReceivedData, PipelineSettings], str | None]


class WebhookDeps:
    """Everything `handle_webhook` needs, built lazily so that constructing it does no I/O.

    `secrets` returns the accepted secrets (a `SecretProvider` in production); `store_factory` and
    `inviter_factory` are called once, on first use. `invite_now(store, inviter, order, settings)` creates the
    inline flow's invitation and returns the candidate's URL (default: `kombo_sync.intake.invite_order_now`).
    """

    def __init__(
        self,
        *,
        secrets: Callable[[], Sequence[str]],
        store: StateStore | None = None,
        store_factory: Callable[[], StateStore] | None = None,
        settings: PipelineSettings | Callable[[], PipelineSettings] | None = None,
        inviter: Any = None,
        inviter_factory: Callable[[], Any] | None = None,
        invite_now: InviteNow | None = None,
        extra_rules: Sequence[RejectionRule] = (),
        in_progress_seconds: float = IN_PROGRESS_SECONDS,
    ) -> None:
        if store is None and store_factory is None:
            raise ValueError("WebhookDeps needs a store or a store_factory")
        self.secrets = secrets
        self._store = store
        self._store_factory = store_factory
        self._settings = settings
        self._inviter = inviter
        self._inviter_factory = inviter_factory
        self._invite_now = invite_now
        self.extra_rules = tuple(extra_rules)
        self.in_progress_seconds = in_progress_seconds
        self._lock = threading.Lock()

    def settings(self) -> PipelineSettings:
        if isinstance(self._settings, PipelineSettings):
            return self._settings
        if callable(self._settings):
            return self._settings()
        return load_settings()

    @property
    def store(self) -> StateStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    assert self._store_factory is not None
                    self._store = self._store_factory()
        return self._store

    def inviter(self) -> Any:
        if self._inviter is None:
            if self._inviter_factory is None:
                raise RuntimeError("no invitation channel configured for the inline flow")
            with self._lock:
                if self._inviter is None:
                    self._inviter = self._inviter_factory()
        return self._inviter

    def invite_now(self) -> InviteNow:
        if self._invite_now is None:
            return default_invite_now
        return self._invite_now


def handle_webhook(raw_body: bytes, headers: Mapping[str, str], deps: WebhookDeps) -> WebhookResponse:
    """Answer one Kombo webhook delivery (see the module docstring for the order of checks)."""
    settings = deps.settings()
    secrets = [secret for secret in deps.secrets() if secret]
    if not secrets:
        return _error(503, "WEBHOOK_DISABLED", "The webhook is not configured on this server.")
    if len(raw_body) > settings.webhook.max_body_bytes:
        return _error(413, "BODY_TOO_LARGE", f"The body exceeds {settings.webhook.max_body_bytes} bytes.")
    content_type = _header(headers, "content-type")
    if not _is_json_content_type(content_type):
        return _error(415, "UNSUPPORTED_MEDIA_TYPE", "The body must be sent as application/json.")
    if not verify(raw_body, _header(headers, SIGNATURE_HEADER), secrets):
        return _error(
            401, "SIGNATURE_INVALID", f"The {SIGNATURE_HEADER} header is missing or does not match."
        )
    parsed = parse_event(raw_body)
    if isinstance(parsed, WebhookResponse):
        return parsed
    envelope, data = parsed
    return _deduplicated(envelope, data, deps, settings)


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
        return _error(400, "INVALID_JSON", f"Invalid JSON: {reason}.")
    if not isinstance(payload, dict):
        return _error(400, "INVALID_EVENT", "The body must be a JSON object.", fields=["$"])
    problem = _unstorable_value(payload)
    if problem is not None:
        path, reason = problem
        return _error(400, "INVALID_EVENT", f"{path or '$'}: {reason}", fields=[path or "$"])
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
    return _error(400, "INVALID_EVENT", "Invalid event: " + "; ".join(problems) + suffix, fields=paths)


def _too_long(
    values: Mapping[str, Any], limits: Sequence[tuple[str, int]], *, prefix: str
) -> WebhookResponse | None:
    for path, limit in limits:
        value: Any = values
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str) and len(value) > limit:
            name = prefix + path
            return _error(400, "INVALID_EVENT", f"{name}: longer than {limit} characters", fields=[name])
    return None


def _unstorable_value(payload: Any) -> tuple[str, str] | None:
    """The first value no database could store (NUL, lone surrogates, absurd nesting), as (path, reason)."""
    stack: list[tuple[Any, str, int]] = [(payload, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return path, f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(value, str):
            reason = _bad_text(value)
            if reason:
                return path, reason
        elif isinstance(value, dict):
            for key, item in value.items():
                reason = _bad_text(key)
                child = f"{path}.{key}" if path else str(key)
                if reason:
                    return (path or "$"), f"a key {reason}"
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                stack.append((item, f"{path}.{index}" if path else str(index), depth + 1))
    return None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    return None


class _EventWork:
    """One event's transaction: its connection, and the wake-ups to request once it is committed."""

    def __init__(self, store: StateStore, conn: Connection) -> None:
        self.store = store
        self.conn = conn
        self._after_commit: list[str] = []

    def wake(self, topic: str) -> None:
        """Wake the watcher of `topic` so that the run it starts sees this transaction's data."""
        if self.store.dialect == "sqlite":
            # We hold the write lock: a request seen pending here is consumed after our commit.
            request_wakeup_in_transaction(self.store, self.conn, topic)
        elif topic not in self._after_commit:
            # PostgreSQL: a read after the commit (and a write only when none is pending) keeps concurrent
            # webhooks from queueing on the topic's row lock until each of them commits.
            self._after_commit.append(topic)

    def committed(self) -> None:
        for topic in self._after_commit:
            request_wakeup(self.store, topic)


@dataclass(frozen=True)
class _InlineInvitation:
    """The inline flow's invitation, created after the event's transaction committed: it may take seconds,
    and the intake's transactions that create it must see the order."""

    order: OrderReceivedData


def _write_gate(store: StateStore) -> AbstractContextManager[Any]:
    # SQLite has one writer at a time: threads of this process queue on a Python lock (woken at once) rather
    # than in SQLite's busy handler (sleeps of growing length). The intake's gate: one queue per process.
    if getattr(store, "dialect", None) != "sqlite":
        return nullcontext()
    return write_gate(store)


def _deduplicated(
    envelope: WebhookEnvelope, data: KomboModel | None, deps: WebhookDeps, settings: PipelineSettings
) -> WebhookResponse:
    """Record the event, decide and store the answer in one transaction (the inline flow's invitation, which
    calls out, runs after it). A concurrent delivery of the same event waits for that transaction at the
    event's insert and then gets the stored answer."""
    store = deps.store
    events = WebhookEventLog(store)
    integration_id, order_id = _subject(data)
    with _write_gate(store), store.transaction() as conn:
        work = _EventWork(store, conn)
        event = events.record_or_get(envelope.id, envelope.type, integration_id, order_id, conn=conn)
        if not event.created:
            stored = _stored_answer(event, envelope, store, deps)
            if stored is not None:
                return stored
        outcome = _dispatch(envelope, data, deps, settings, work)
        if isinstance(outcome, WebhookResponse):
            events.store_response(envelope.id, outcome.status_code, outcome.body, conn=conn)
    work.committed()
    if isinstance(outcome, WebhookResponse):
        return outcome
    # The event is committed unanswered: a redelivery meanwhile gets 409 (in progress).
    response = _inline_invite(outcome.order, deps, settings, store)
    with _write_gate(store):
        events.store_response(envelope.id, response.status_code, response.body)
    return response


def _stored_answer(
    event: WebhookEvent, envelope: WebhookEnvelope, store: StateStore, deps: WebhookDeps
) -> WebhookResponse | None:
    """The answer to a redelivery, or None when the event must be processed again."""
    # A stored 5xx was a server fault (the inline invitation failed): the redelivery gets another chance.
    if event.answered and int(event.response_status or 0) < 500:
        log.info(
            "webhook event %s (%s): redelivery, stored answer %s",
            envelope.id,
            envelope.type,
            event.response_status,
        )
        body = event.response_body if isinstance(event.response_body, dict) else {}
        return WebhookResponse(int(event.response_status or 200), body)
    age = store.now() - event.received_at
    if not event.answered and age < timedelta(seconds=deps.in_progress_seconds):
        return _error(409, "EVENT_IN_PROGRESS", "This event is being processed; deliver it again later.")
    log.info("webhook event %s: processing again (first answer: %s)", envelope.id, event.response_status)
    return None


def _subject(data: KomboModel | None) -> tuple[str | None, str | None]:
    if isinstance(data, OrderReceivedData):
        return data.integration_id, data.id
    if isinstance(data, IntegrationCreatedData):
        return data.id, None
    if isinstance(data, IntegrationStateChangedData):
        return data.integration_id, None
    return None, None


def _dispatch(
    envelope: WebhookEnvelope,
    data: KomboModel | None,
    deps: WebhookDeps,
    settings: PipelineSettings,
    work: _EventWork,
) -> WebhookResponse | _InlineInvitation:
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


def order_received(
    order: OrderReceivedData,
    deps: WebhookDeps,
    settings: PipelineSettings,
    work: _EventWork,
    *,
    event_type: str = WEBHOOK_ASSESSMENT_ORDER_RECEIVED,
    inline: bool = False,
) -> WebhookResponse | _InlineInvitation:
    """Reject (422), or record and wake the intake (200), or for the inline flow record it and leave the
    invitation to run after the commit."""
    store, conn = work.store, work.conn
    repo = OrderRepository(store)
    payload = order.model_dump(mode="json", by_alias=True)
    existing, integration = _known_order_and_integration(conn, order.id, order.integration_id)
    if existing is not None:
        # Seen before (the poll, or an earlier event for the same order): the first decision stands.
        if existing.state == REJECTED:
            return rejection(existing.last_error or "This order was rejected.")
        repo.record_order(payload, "webhook", conn=conn)
        if inline:
            if existing.invitation_url:
                return WebhookResponse(200, {"assessment_url": existing.invitation_url})
            return _InlineInvitation(order)
        return _accepted(order.id, known=True)
    if order.status != ORDER_STATUS_OPEN:
        log.info("order %s arrived with status %s: not recorded", order.id, order.status[:32])
        return WebhookResponse(200, {"status": "IGNORED", "message": "Order is not open."})

    context = RuleContext(
        store=store,
        settings=settings,
        integration=integration,
        published_package_ids=published_package_ids(integration),
        event_type=event_type,
        now=store.now(),
        conn=conn,
    )
    try:
        decision = first_rejection(order, context, rules_for(settings, deps.extra_rules))
    except RuleConfigurationError as exc:
        # The team's rule is broken: not the sender's fault, and the order must not be rejected for it.
        log.error("order %s: rejection rules could not run (%s); answered 503", order.id, exc)
        return _error(
            503, "RULES_UNAVAILABLE", "The order could not be checked right now; please retry later."
        )
    if decision is not None:
        rule, message = decision
        response = rejection(message)
        recorded = repo.record_order(payload, "webhook", conn=conn)
        try:
            if recorded.state != REJECTED:
                repo.mark_rejected(order.id, response.body["message"], conn=conn)
        except InvalidTransition:
            # The poll recorded and claimed it between our read and our write: it is being invited.
            log.info("order %s: rule %s would reject it, but it is already being invited", order.id, rule)
            return _accepted(order.id, known=True)
        log.info("order %s (integration %s) rejected by rule %s", order.id, order.integration_id, rule)
        return response

    repo.record_order(payload, "webhook", conn=conn)
    if inline:
        return _InlineInvitation(order)
    work.wake(ORDERS_TOPIC)
    log.info("order %s (integration %s) accepted; intake woken", order.id, order.integration_id)
    return _accepted(order.id, known=False)


@dataclass(frozen=True)
class _KnownOrder:
    state: str
    last_error: str | None
    invitation_url: str | None


def _known_order_and_integration(
    conn: Connection, order_id: str, integration_id: str
) -> tuple[_KnownOrder | None, IntegrationRecord | None]:
    """The order's stored decision and the integration's registry row, read in the event's transaction."""
    known = conn.execute(
        sa.select(orders.c.state, orders.c.last_error, orders.c.invitation_url).where(orders.c.id == order_id)
    ).first()
    registry = (
        conn.execute(sa.select(integrations).where(integrations.c.id == integration_id)).mappings().first()
    )
    return (
        None if known is None else _KnownOrder(known.state, known.last_error, known.invitation_url),
        None if registry is None else from_row(IntegrationRecord, registry),
    )


def _accepted(order_id: str, *, known: bool) -> WebhookResponse:
    return WebhookResponse(200, {"status": "ACCEPTED", "order_id": order_id, "already_known": known})


_invite_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kombo-inline-invite")


def _inline_invite(
    order: OrderReceivedData, deps: WebhookDeps, settings: PipelineSettings, store: StateStore
) -> WebhookResponse:
    """Create the inline flow's invitation now (the order is committed); a failure leaves it to the intake."""
    timeout = settings.webhook.inline_timeout_seconds
    try:
        inviter = deps.inviter()
        future = _invite_pool.submit(deps.invite_now(), store, inviter, order, settings)
        url = future.result(timeout=timeout)
    except FutureTimeout:
        url, reason = None, f"the invitation channel did not answer within {timeout:g} s"
    except Exception as exc:  # any channel failure: Kombo must keep the order (not a 422)
        url, reason = None, f"{type(exc).__name__}: {exc}"[:300]
    else:
        reason = "the invitation channel returned no link"
    if url:
        log.info("inline order %s (integration %s) invited", order.id, order.integration_id)
        return WebhookResponse(200, {"assessment_url": url})
    # The order stays recorded; the intake invites it by e-mail or platform as soon as it can.
    log.warning("inline order %s: invitation not created now (%s); left to the intake", order.id, reason)
    request_wakeup(store, ORDERS_TOPIC)
    return _error(
        503, "INVITATION_FAILED", "The assessment could not be started right now; it will be sent later."
    )


def default_invite_now(
    store: StateStore, inviter: Any, order: OrderReceivedData, settings: PipelineSettings
) -> str | None:
    """Create the invitation through the intake's `invite_order_now` and return the candidate's link."""
    from kombo_sync.intake import invite_order_now

    result = invite_order_now(store, inviter, order, settings)
    url = _url_of(result)
    if url:
        return url
    record = OrderRepository(store).get(order.id)
    return record.invitation_url if record is not None else None


def _url_of(result: Any) -> str | None:
    if result is None:
        return None
    if isinstance(result, str):
        return result or None
    if isinstance(result, Mapping):
        for key in ("assessment_url", "url", "invitation_url"):
            if result.get(key):
                return str(result[key])
        return None
    for key in ("assessment_url", "url", "invitation_url"):
        value = getattr(result, key, None)
        if value:
            return str(value)
    return None


def _is_served(record: IntegrationRecord | None) -> bool:
    return (
        record is not None
        and record.category == ASSESSMENT
        and record.status == ACTIVE
        and record.enabled
        and record.deleted_at is None
    )


def _wake_if_newly_served(work: _EventWork, before: IntegrationRecord | None, integration_id: str) -> bool:
    after = IntegrationRepository(work.store).get(integration_id, conn=work.conn)
    if _is_served(after) and not _is_served(before):
        work.wake(INTEGRATIONS_TOPIC)
        log.info("integration %s is now served: package sync woken", integration_id)
        return True
    return False


def integration_created(data: IntegrationCreatedData, work: _EventWork) -> WebhookResponse:
    """Register the integration; a new assessment integration gets its packages published at once."""
    repo = IntegrationRepository(work.store)
    before = repo.get(data.id, conn=work.conn)
    created = repo.upsert(
        data.id,
        source="webhook",
        category=data.category,
        tool=data.tool,
        customer_key=data.end_user.origin_id,
        organization_name=data.end_user.organization_name,
        conn=work.conn,
    )
    woken = _wake_if_newly_served(work, before, data.id)
    return WebhookResponse(
        200, {"status": "OK", "integration_id": data.id, "created": created, "packages_sync_requested": woken}
    )


def integration_deleted(data: IntegrationDeletedData, work: _EventWork) -> WebhookResponse:
    """Mark the integration deleted and cancel its orders not yet invited: all work for it stops."""
    repo = IntegrationRepository(work.store)
    if repo.get(data.id, conn=work.conn) is None:
        repo.upsert(
            data.id,
            source="webhook",
            category=data.category,
            tool=data.tool,
            customer_key=data.end_user.origin_id,
            organization_name=data.end_user.organization_name,
            status=DELETED,
            conn=work.conn,
        )
    else:
        repo.mark_deleted(data.id, data.deleted_at, conn=work.conn)
    cancelled = cancel_open_orders(work.store, data.id, conn=work.conn)
    log.info("integration %s deleted; %d open order(s) cancelled", data.id, cancelled)
    return WebhookResponse(200, {"status": "OK", "integration_id": data.id, "orders_cancelled": cancelled})


def cancel_open_orders(store: StateStore, integration_id: str, *, conn: Connection | None = None) -> int:
    """Cancel the integration's orders still waiting for (or in the middle of) their invitation (in `conn`'s
    transaction when given, else one transaction per order)."""
    from kombo_sync.state.orders import INVITING, RECEIVED

    repo = OrderRepository(store)
    with store.transaction(readonly=True, conn=conn) as tx:
        order_ids = list(
            tx.execute(
                sa.select(orders.c.id).where(
                    orders.c.integration_id == integration_id, orders.c.state.in_((RECEIVED, INVITING))
                )
            ).scalars()
        )
    cancelled = 0
    for order_id in order_ids:
        try:
            cancelled += bool(repo.mark_cancelled(order_id, conn=conn))
        except InvalidTransition:
            continue  # invited meanwhile: nothing left to stop
    return cancelled


def integration_state_changed(data: IntegrationStateChangedData, work: _EventWork) -> WebhookResponse:
    """Record Kombo's state; an assessment integration that becomes active gets its packages published."""
    repo = IntegrationRepository(work.store)
    before = repo.get(data.integration_id, conn=work.conn)
    known_state = data.state if data.state in INTEGRATION_STATUSES and data.state != DELETED else None
    if known_state is None:
        log.warning("integration %s: unknown state %r kept as it was", data.integration_id, data.state[:32])
    repo.upsert(
        data.integration_id,
        source="webhook",
        category=data.integration_category,
        tool=data.integration_tool,
        customer_key=data.end_user.origin_id,
        organization_name=data.end_user.organization_name,
        status=known_state,
        setup_status=data.setup_status,
        qa_status=data.qa_status,
        conn=work.conn,
    )
    woken = _wake_if_newly_served(work, before, data.integration_id)
    return WebhookResponse(
        200, {"status": "OK", "integration_id": data.integration_id, "packages_sync_requested": woken}
    )
