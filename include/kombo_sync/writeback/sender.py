"""Drain the result outbox: concurrent PUTs to Kombo, lost acknowledgements resolved by reading the order back.

The outbox is claimed in batches with a lease (``ResultOutbox.claim_batch``), so memory does not grow with the
backlog and a dead worker's rows come back after the lease. A thread pool sends them; the shared
``KomboClient`` keeps every thread inside Kombo's rate budget and the per-integration in-flight cap, and
retries what Kombo calls transient. What happens to each result:

- 2xx: sent.
- A refusal (fatal error) or a give-up after transient errors: the order is read back
  (``GET /assessment/orders?ids=``). Kombo shows only the order's status, so it is compared with the versions of
  the result that may have been applied (``maybe_applied`` in the outbox: an attempt without an answer, a lost
  reply, a timeout; never a version whose every attempt got a definite error answer). Exactly one of them with
  the status Kombo shows: if it is this version, the write landed and only the reply was lost: sent; if it is an
  earlier version, that one is recorded sent and this one ``not_writable``. None (the order left OPEN otherwise)
  or several (cannot tell which): ``not_writable``. Still OPEN: nothing of ours is there; a refusal is a dead
  letter (Kombo's code, message and log_url), a transient failure is retried later, and after ``max_attempts``
  becomes a dead letter.
- Before sending, a result whose order the state store holds as ``cancelled`` (closed in the ATS before or after
  its invitation, its integration deleted: found by the intake, the webhook or the reconcile job) is not sent
  (``not_writable``, code ``ORDER_CANCELLED``): Kombo no longer accepts a result for it. An order that expired
  without a result (``kombo_sync.lifecycle``) is cancelled too, but its own expiry result (the CANCELLED one whose
  hash the order records) is sent; any other result of it is ``not_writable`` with code ``ORDER_EXPIRED``.
- Before sending, a result whose order already took a COMPLETED / CANCELLED result from us is not sent
  (``not_writable``): Kombo accepts a result only while the order is OPEN, and a second, different payload for
  one order is what the pipeline must never write. When another version may have been applied, the order is read
  back first, with the rule above; an order still OPEN clears the flag of the versions whose sends have ended.

The sends run on one asyncio event loop in a thread of its own (``KomboClient.put_result_async``, the payload
sent as queued: it was validated when it was enqueued) or, with ``send_with: threads`` or a client without the
asyncio path, in ``max_concurrency`` threads. Either way the main thread claims, screens and records.

Over 400 lines on purpose: the send loop (claims, pacing, concurrency, answers and read-backs) is one
exactly-once protocol and is read as one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

from kombo_sync.backoff import exponential_delay
from kombo_sync.heap import frozen_heap
from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.errors import (
    AUTHENTICATION_INVALID,
    INTEGRATION_NOT_FOUND,
    KomboError,
    KomboFatalError,
)
from kombo_sync.kombo.models import ORDER_STATUS_OPEN, Order
from kombo_sync.settings import WritebackSettings
from kombo_sync.state.orders import CANCELLED, OrderRepository
from kombo_sync.state.outbox import SENT, OutboxItem, OutboxVersion, ResultOutbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

# Outcome kinds, also the keys of the summary.
SENT_OK = "sent"
RESOLVED = "resolved_by_readback"
RETRY = "retry"
DEAD = "dead"
NOT_WRITABLE = "not_writable"
LEASE_LOST = "lease_lost"

# The sender records outcomes in batches of this many, or at least this often (seconds).
RECORD_BATCH = 100
RECORD_INTERVAL = 0.25
# How long the main thread collects outcomes between looks at them while some wait to be recorded.
COLLECT_SECONDS = 0.02

# Our own codes, for outcomes Kombo did not name (Kombo's codes are dotted, these are not).
ORDER_NOT_OPEN = "ORDER_NOT_OPEN"
ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
READBACK_FAILED = "READBACK_FAILED"
ORDER_CANCELLED = "ORDER_CANCELLED"
ORDER_EXPIRED = "ORDER_EXPIRED"  # the order expired (kombo_sync.lifecycle): only its expiry result is sent
UNEXPECTED_ERROR = "UNEXPECTED_ERROR"

_TERMINAL = ("COMPLETED", "CANCELLED")
# Refusals that concern the key or the integration, not the order: reading the order back cannot help.
_NOT_ABOUT_THE_ORDER_PREFIXES = ("INTEGRATION.",)
_NOT_ABOUT_THE_ORDER = frozenset(
    {AUTHENTICATION_INVALID, INTEGRATION_NOT_FOUND, "PLATFORM.IP_NOT_WHITELISTED"}
)


@dataclass(frozen=True)
class Outcome:
    kind: str
    code: str | None = None
    message: str | None = None
    log_url: str | None = None
    # Whether Kombo may hold this version now: True (an attempt got no answer), False (a read-back showed the
    # order OPEN after the attempts ended), None (unchanged: every attempt got a definite error answer).
    maybe_applied: bool | None = None
    # An earlier version of the order that the read-back found at Kombo: recorded as sent.
    landed_hash: str | None = None


@dataclass
class _Siblings:
    """What the outbox knows about other versions of the claimed orders."""

    terminal_sent: dict[str, tuple[str, Any]] = field(default_factory=dict)  # order -> (status, sent_at)
    # order -> its other versions that Kombo may hold (not sent with a final status)
    maybe_applied: dict[str, list[OutboxVersion]] = field(default_factory=dict)


def default_owner() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix."""
    return f"writeback:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _payload_status(item: OutboxItem) -> str | None:
    status = item.payload_json.get("status") if isinstance(item.payload_json, dict) else None
    return str(status) if status is not None else None


def _with_flag(outcome: Outcome, maybe_applied: bool | None) -> Outcome:
    """The outcome, recording what is now known about whether this version is at Kombo."""
    return outcome if maybe_applied is None else replace(outcome, maybe_applied=maybe_applied)


def _error_outcome(kind: str, error: KomboError, prefix: str = "") -> Outcome:
    return Outcome(
        kind,
        error.code or (f"HTTP_{error.http_status}" if error.http_status else None),
        prefix + error.message,
        error.log_url,
    )


class ResultSender:
    """Sends what the outbox holds, ``max_concurrency`` PUTs at a time, and records each outcome."""

    def __init__(
        self,
        store: StateStore,
        client: KomboClient,
        settings: WritebackSettings,
        *,
        owner: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.outbox = ResultOutbox(store)
        self.client = client
        self.settings = settings
        self.owner = owner or default_owner()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys(
            (SENT_OK, RESOLVED, RETRY, DEAD, NOT_WRITABLE, LEASE_LOST), 0
        )
        self.dead_letters: list[dict[str, Any]] = []

    @property
    def uses_asyncio(self) -> bool:
        """Whether the sends run on an event loop (``send_with: asyncio`` and a client that has that path)."""
        return self.settings.send_with == "asyncio" and bool(getattr(self.client, "supports_async", False))

    def run(
        self, *, integration_ids: Iterable[str] | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """Claim and send until nothing is due (or ``max_seconds`` passed); returns the summary."""
        # No full garbage collection over the process's long-lived objects while the sends run: it would stop
        # the sends' loop for 100-200 ms and let the sends due meanwhile leave together (kombo_sync.heap).
        with frozen_heap("write-back"):
            return self._run(integration_ids, max_seconds)

    def _run(self, integration_ids: Iterable[str] | None, max_seconds: float | None) -> dict[str, Any]:
        settings = self.settings
        started = self._monotonic()
        budget = max_seconds if max_seconds is not None else settings.max_send_seconds
        deadline = None if budget is None else started + budget
        wanted = None if integration_ids is None else list(integration_ids)
        claimed_total = 0
        batches = 0
        exhausted = False
        last_progress = started
        done: queue.SimpleQueue[tuple[OutboxItem, Outcome]] = queue.SimpleQueue()
        sends: _ThreadSends | _AsyncSends = (
            _AsyncSends(self, done, settings.max_concurrency)
            if self.uses_asyncio
            else _ThreadSends(self, done, settings.max_concurrency)
        )
        queued = 0  # handed to the workers and not yet back
        received: list[tuple[OutboxItem, Outcome]] = []  # back from the workers, not yet recorded
        counted = 0  # of `received`, already taken off `queued`
        last_record = started
        # Claim again when fewer than this many are queued, so the workers never run dry between batches.
        refill_below = max(settings.max_concurrency * 2, settings.claim_batch_rows // 2)
        try:
            while True:
                out_of_time = deadline is not None and self._monotonic() >= deadline
                if not exhausted and not out_of_time and queued < refill_below:
                    # The first claim is small, so that the sends start after milliseconds, not after a whole
                    # batch was claimed and screened; the next claim follows at once.
                    rows = (
                        settings.claim_batch_rows
                        if batches
                        else min(settings.claim_batch_rows, refill_below // 2)
                    )
                    batch = self.outbox.claim_batch(
                        self.owner, rows, settings.lease_seconds, integration_ids=wanted
                    )
                    if not batch:
                        exhausted = True
                    else:
                        batches += 1
                        claimed_total += len(batch)
                        to_send = self._screen(batch)
                        sends.submit(to_send)
                        queued += len(to_send)
                        continue
                if queued == 0:
                    break
                try:
                    if received:
                        # Outcomes are already waiting to be recorded: collect more for a while rather than
                        # wake for each one (hundreds a second), then take all that arrived.
                        time.sleep(COLLECT_SECONDS)
                    else:
                        received.append(done.get(timeout=5.0))
                except queue.Empty:
                    if not received and not sends.alive():
                        # Their rows stay leased and come back to a later run when the lease expires.
                        raise RuntimeError(
                            f"all sender threads died with {queued} result(s) in hand"
                        ) from None
                while True:
                    try:
                        received.append(done.get_nowait())
                    except queue.Empty:
                        break
                queued -= len(received) - counted
                counted = len(received)
                # Outcomes are written by this thread only, in batches (every RECORD_BATCH outcomes or
                # RECORD_INTERVAL seconds): one writer and few commits keep the database and this thread off
                # the workers' path.
                if received and (
                    len(received) >= RECORD_BATCH
                    or queued == 0
                    or self._monotonic() - last_record >= RECORD_INTERVAL
                ):
                    self._record_many(received)
                    received, counted, last_record = [], 0, self._monotonic()
                now = self._monotonic()
                if now - last_progress >= 10:
                    last_progress = now
                    log.info(
                        "write-back progress: %s claimed, %s sent, %s resolved, %s retry, %s dead, %s not writable",
                        claimed_total,
                        self.counts[SENT_OK],
                        self.counts[RESOLVED],
                        self.counts[RETRY],
                        self.counts[DEAD],
                        self.counts[NOT_WRITABLE],
                    )
            if received:
                self._record_many(received)
        finally:
            sends.close()
        elapsed = self._monotonic() - started
        delivered = self.counts[SENT_OK] + self.counts[RESOLVED]
        summary: dict[str, Any] = {
            "claimed": claimed_total,
            "batches": batches,
            **self.counts,
            "elapsed_seconds": round(elapsed, 3),
            "results_per_second": round(delivered / elapsed, 2) if elapsed > 0 else None,
            "stopped_early": bool(deadline is not None and not exhausted),
            "dead_letters": self.dead_letters[:50],
        }
        log.info(
            "write-back sent %s result(s) (%s resolved by reading the order back) in %.1f s; "
            "%s to retry, %s dead letter(s), %s not writable",
            delivered,
            self.counts[RESOLVED],
            elapsed,
            self.counts[RETRY],
            self.counts[DEAD],
            self.counts[NOT_WRITABLE],
        )
        return summary

    # Before sending

    def _siblings(self, items: Sequence[OutboxItem]) -> _Siblings:
        """Other versions of these orders: delivered with a final status, or possibly applied."""
        siblings = _Siblings()
        own = {(item.order_id, item.payload_hash) for item in items}
        for order_id, versions in self.outbox.versions(item.order_id for item in items).items():
            for version in versions:
                if (order_id, version.payload_hash) in own:
                    continue
                if version.state == SENT and version.status in _TERMINAL:
                    siblings.terminal_sent[order_id] = (version.status, version.sent_at)
                elif version.may_be_at_kombo and version.state != SENT:
                    siblings.maybe_applied.setdefault(order_id, []).append(version)
        return siblings

    def _screen(self, batch: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Drop (and record) results that must not be sent; read back orders an earlier version may have reached."""
        siblings = self._siblings(batch)
        states = OrderRepository(self.store).states_of(item.order_id for item in batch)
        to_send: list[OutboxItem] = []
        uncertain: list[OutboxItem] = []
        expiries = OrderRepository(self.store).expiry_payload_hashes(
            item.order_id for item in batch if states.get(item.order_id) == CANCELLED
        )
        for item in batch:
            expiry = expiries.get(item.order_id)
            if (
                expiry is not None
                and item.payload_hash == expiry
                and item.order_id not in siblings.terminal_sent
            ):
                # The order's own expiry result (CANCELLED): sent like any result while the order is OPEN.
                if item.order_id in siblings.maybe_applied:
                    uncertain.append(item)
                else:
                    to_send.append(item)
            elif (
                expiry is not None
                and item.payload_hash != expiry
                and item.order_id not in siblings.terminal_sent
            ):
                self._record(
                    item,
                    Outcome(
                        NOT_WRITABLE,
                        ORDER_EXPIRED,
                        "the order expired without a result before this one arrived; its CANCELLED result with "
                        "the expiry attribute goes to Kombo instead, so this result was not sent",
                    ),
                )
            elif states.get(item.order_id) == CANCELLED and item.order_id not in siblings.terminal_sent:
                self._record(
                    item,
                    Outcome(
                        NOT_WRITABLE,
                        ORDER_CANCELLED,
                        "the order was cancelled (closed in the ATS or its integration deleted) before this "
                        "result; Kombo accepts a result only while the order is OPEN, so it was not sent",
                    ),
                )
            elif item.order_id in siblings.terminal_sent:
                status, sent_at = siblings.terminal_sent[item.order_id]
                when = sent_at.isoformat() if sent_at is not None else "earlier"
                self._record(
                    item,
                    Outcome(
                        NOT_WRITABLE,
                        ORDER_NOT_OPEN,
                        f"the order already took a {status} result from this pipeline ({when}); Kombo accepts a "
                        "result only while the order is OPEN, so this changed result was not sent",
                    ),
                )
            elif item.order_id in siblings.maybe_applied:
                uncertain.append(item)
            else:
                to_send.append(item)
        if uncertain:
            to_send.extend(self._screen_uncertain(uncertain, siblings))
        return to_send

    def _screen_uncertain(self, items: Sequence[OutboxItem], siblings: _Siblings) -> list[OutboxItem]:
        by_integration: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_integration.setdefault(item.integration_id, []).append(item)
        to_send: list[OutboxItem] = []
        for integration_id, group in by_integration.items():
            try:
                statuses = self._read_back(integration_id, [item.order_id for item in group])
            except KomboError as error:
                for item in group:
                    self._record(item, self._retry_or_dead(item, error, "could not read the order back: "))
                continue
            still_open = [item for item in group if statuses.get(item.order_id) == ORDER_STATUS_OPEN]
            if still_open:
                # Every other version's send has ended (one version of an order is in flight at a time): none
                # of them reached Kombo.
                self.outbox.mark_not_applied([item.order_id for item in still_open], owner=self.owner)
            for item in group:
                status = statuses.get(item.order_id)
                if status == ORDER_STATUS_OPEN:
                    to_send.append(replace(item, maybe_applied=False))
                    continue
                if status is None:
                    to_send.append(item)
                    continue
                others = siblings.maybe_applied.get(item.order_id, [])
                outcome = self._match(item, status, others, this_maybe_applied=item.maybe_applied)
                if outcome is None:
                    outcome = Outcome(
                        NOT_WRITABLE,
                        ORDER_NOT_OPEN,
                        f"Kombo shows the order {status} and no version of this result that may have reached "
                        "it has that status; Kombo accepts a result only while the order is OPEN, so this one "
                        "was not sent",
                    )
                self._record(item, outcome)
        return to_send

    def _match(
        self,
        item: OutboxItem,
        status: str,
        others: Sequence[OutboxVersion],
        *,
        this_maybe_applied: bool,
        refusal: KomboError | None = None,
    ) -> Outcome | None:
        """The order is ``status`` (not OPEN) at Kombo: which version of ours, if any, is there?

        Only versions that may have been applied count; the one whose status Kombo shows is there. None when
        no version matches (the order left OPEN otherwise)."""
        candidates = [
            version.payload_hash for version in others if version.may_be_at_kombo and version.status == status
        ]
        if this_maybe_applied and _payload_status(item) == status:
            candidates.append(item.payload_hash)
        log_url = refusal.log_url if refusal is not None else None
        code = (refusal.code if refusal is not None else None) or ORDER_NOT_OPEN
        if candidates == [item.payload_hash]:
            log.info(
                "order %s is %s at Kombo: this version's write landed, its acknowledgement was lost",
                item.order_id,
                status,
            )
            return Outcome(RESOLVED)
        if len(candidates) == 1:
            log.info(
                "order %s is %s at Kombo with an earlier version of the result (%s)",
                item.order_id,
                status,
                candidates[0][:12],
            )
            return Outcome(
                NOT_WRITABLE,
                ORDER_NOT_OPEN,
                f"Kombo shows the order {status}: it holds an earlier version of this result, whose reply was "
                "lost (now recorded as sent); Kombo accepts a result only while the order is OPEN, so this "
                "changed result was not written",
                log_url,
                landed_hash=candidates[0],
            )
        if candidates:
            return Outcome(
                NOT_WRITABLE,
                code,
                f"Kombo shows the order {status} and {len(candidates)} versions of this result with that status "
                "may have reached it; which one it holds cannot be told, so this one was not written",
                log_url,
            )
        return None

    # Sending

    def _read_back(self, integration_id: str, order_ids: Sequence[str]) -> dict[str, str | None]:
        orders: list[Order] = self.client.get_orders_by_ids(integration_id, order_ids)
        return {order.id: order.status for order in orders}

    def _send_safely(self, item: OutboxItem) -> tuple[OutboxItem, Outcome]:
        try:
            outcome = self._send(item)
        except Exception as exc:  # a bug or an unexpected library error must not lose the row
            outcome = self._unexpected(item, exc)
        return item, outcome

    def _send(self, item: OutboxItem) -> Outcome:
        try:
            self.client.put_result(item.integration_id, item.order_id, item.payload_json)
        except KomboError as error:
            return self._after_error(item, error)
        return Outcome(SENT_OK)

    async def _send_async_safely(self, item: OutboxItem) -> tuple[OutboxItem, Outcome]:
        """``_send_safely`` on the event loop; a failed PUT is resolved (read back) in a thread of the loop's
        pool, so the other sends go on meanwhile."""
        try:
            try:
                await self.client.put_result_async(
                    item.integration_id, item.order_id, item.payload_json, validated=True
                )
                outcome = Outcome(SENT_OK)
            except KomboError as error:
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(None, partial(self._after_error, item, error))
        except Exception as exc:  # as in _send_safely
            outcome = self._unexpected(item, exc)
        return item, outcome

    def _unexpected(self, item: OutboxItem, exc: Exception) -> Outcome:
        log.error(
            "unexpected error sending the result of order %s",
            item.order_id,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        outcome = self._retry_or_dead(item, None, f"{type(exc).__name__}: {exc}")
        # The PUT may have gone out before the error.
        return replace(outcome, maybe_applied=True)

    def _after_error(self, item: OutboxItem, error: KomboError) -> Outcome:
        # The client says whether some attempt of the call got no definite answer (then it may have been
        # applied); an error it did not mark (a test double) counts as possibly applied.
        unanswered = error.maybe_applied is not False
        refused = isinstance(error, KomboFatalError)
        # KomboRetriesExhaustedError, or a retriable error that escaped the client's retries: not refused.
        return self._resolve(item, error, refused=refused, unanswered=unanswered)

    def _resolve(self, item: OutboxItem, error: KomboError, *, refused: bool, unanswered: bool) -> Outcome:
        """After a refusal or a give-up: read the order back to tell a lost acknowledgement from a failure.

        ``unanswered``: some attempt of this call got no answer (or no definite error answer), so it may have
        been applied."""
        maybe = True if unanswered else None
        code = error.code or ""
        if refused and (code in _NOT_ABOUT_THE_ORDER or code.startswith(_NOT_ABOUT_THE_ORDER_PREFIXES)):
            return _with_flag(_error_outcome(DEAD, error), maybe)
        try:
            statuses = self._read_back(item.integration_id, [item.order_id])
        except KomboError as readback_error:
            log.warning(
                "order %s: reading it back failed too (%s)",
                item.order_id,
                readback_error.code or type(readback_error).__name__,
            )
            if refused:
                return _with_flag(_error_outcome(DEAD, error), maybe)
            return _with_flag(self._retry_or_dead(item, error), maybe)
        if item.order_id not in statuses:
            if refused:
                return _with_flag(_error_outcome(DEAD, error, "Kombo does not list the order: "), maybe)
            return _with_flag(self._retry_or_dead(item, error), maybe)
        status = statuses[item.order_id]
        if status is None:
            return _with_flag(
                _error_outcome(DEAD, error) if refused else self._retry_or_dead(item, error), maybe
            )
        if status == ORDER_STATUS_OPEN:
            # Read after every attempt ended: this version is not at Kombo.
            return _with_flag(
                _error_outcome(DEAD, error) if refused else self._retry_or_dead(item, error), False
            )
        others = [
            version
            for version in self.outbox.versions([item.order_id]).get(item.order_id, [])
            if version.payload_hash != item.payload_hash
        ]
        outcome = self._match(
            item, status, others, this_maybe_applied=unanswered or item.maybe_applied, refusal=error
        )
        if outcome is None:
            outcome = Outcome(
                NOT_WRITABLE,
                error.code or ORDER_NOT_OPEN,
                f"the order is {status} at Kombo, which accepts a result only while it is OPEN: {error.message}",
                error.log_url,
            )
        return _with_flag(outcome, maybe)

    def _retry_or_dead(self, item: OutboxItem, error: KomboError | None, detail: str = "") -> Outcome:
        code = (
            None
            if error is None
            else (error.code or (f"HTTP_{error.http_status}" if error.http_status else None))
        )
        message = detail + ("" if error is None else error.message)
        log_url = None if error is None else error.log_url
        if item.attempts >= self.settings.max_attempts:
            return Outcome(
                DEAD,
                code or UNEXPECTED_ERROR,
                f"gave up after {item.attempts} attempts: {message}",
                log_url,
            )
        return Outcome(RETRY, code or (UNEXPECTED_ERROR if error is None else None), message, log_url)

    # After sending

    def _record_many(self, outcomes: Sequence[tuple[OutboxItem, Outcome]]) -> None:
        """Write outcomes: deliveries in one transaction (the common case, hundreds a second), the rest one by one."""
        delivered = [(item, outcome) for item, outcome in outcomes if outcome.kind in (SENT_OK, RESOLVED)]
        if delivered:
            marked = self.outbox.mark_sent_many([(item.order_id, item.payload_hash) for item, _ in delivered])
            for item, outcome in delivered:
                self._count(item, outcome, (item.order_id, item.payload_hash) in marked)
        for item, outcome in outcomes:
            if outcome.kind not in (SENT_OK, RESOLVED):
                self._record(item, outcome)

    def _record(self, item: OutboxItem, outcome: Outcome) -> None:
        outbox = self.outbox
        if outcome.kind in (SENT_OK, RESOLVED):
            changed = outbox.mark_sent(item.order_id, item.payload_hash)
        elif outcome.kind == RETRY:
            delay = exponential_delay(self.settings.retry_backoff_seconds, item.attempts - 1, max_doublings=6)
            changed = outbox.mark_retry(
                item.order_id,
                item.payload_hash,
                outcome.code,
                outcome.message,
                outcome.log_url,
                self.store.now() + timedelta(seconds=delay),
                owner=self.owner,
                maybe_applied=outcome.maybe_applied,
            )
        elif outcome.kind == DEAD:
            changed = outbox.mark_dead(
                item.order_id,
                item.payload_hash,
                outcome.code,
                outcome.message,
                outcome.log_url,
                owner=self.owner,
                maybe_applied=outcome.maybe_applied,
            )
        else:
            if outcome.landed_hash is not None:
                # Kombo holds that earlier version: it is what was delivered for the order.
                outbox.mark_landed(item.order_id, outcome.landed_hash)
            changed = outbox.mark_not_writable(
                item.order_id,
                item.payload_hash,
                outcome.code,
                outcome.message,
                outcome.log_url,
                owner=self.owner,
                maybe_applied=outcome.maybe_applied,
            )
        self._count(item, outcome, changed)

    def _count(self, item: OutboxItem, outcome: Outcome, changed: bool) -> None:
        with self._lock:
            if not changed:
                # Another worker took the row over after our lease expired; its outcome stands.
                self.counts[LEASE_LOST] += 1
                return
            self.counts[outcome.kind] += 1
            if outcome.kind in (DEAD, NOT_WRITABLE):
                self.dead_letters.append(
                    {
                        "order_id": item.order_id,
                        "integration_id": item.integration_id,
                        "state": outcome.kind,
                        "code": outcome.code,
                        "message": outcome.message,
                        "log_url": outcome.log_url,
                    }
                )
        if outcome.kind in (DEAD, NOT_WRITABLE):
            log.warning(
                "result of order %s (integration %s) is %s: %s %s (log: %s)",
                item.order_id,
                item.integration_id,
                outcome.kind,
                outcome.code,
                outcome.message,
                outcome.log_url,
            )


class _ThreadSends:
    """Sends in up to ``concurrency`` threads, started as work arrives."""

    def __init__(
        self, sender: ResultSender, done: queue.SimpleQueue[tuple[OutboxItem, Outcome]], concurrency: int
    ) -> None:
        self._sender, self._done, self._concurrency = sender, done, concurrency
        self._todo: queue.SimpleQueue[OutboxItem | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []

    def submit(self, items: Sequence[OutboxItem]) -> None:
        for item in items:
            if len(self._workers) < self._concurrency:
                worker = threading.Thread(
                    target=self._work, name=f"kombo-writeback-{len(self._workers)}", daemon=True
                )
                worker.start()
                self._workers.append(worker)
            self._todo.put(item)

    def _work(self) -> None:
        while (item := self._todo.get()) is not None:
            self._done.put(self._sender._send_safely(item))

    def alive(self) -> bool:
        return any(worker.is_alive() for worker in self._workers)

    def close(self) -> None:
        """Let the workers finish what they hold, then stop them."""
        for _ in self._workers:
            self._todo.put(None)
        for worker in self._workers:
            worker.join()


class _AsyncSends:
    """Sends on one event loop in a thread of its own, at most ``concurrency`` at a time."""

    def __init__(
        self, sender: ResultSender, done: queue.SimpleQueue[tuple[OutboxItem, Outcome]], concurrency: int
    ) -> None:
        self._sender, self._done, self._concurrency = sender, done, concurrency
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kombo-writeback-loop", daemon=True
        )
        self._thread.start()

    def submit(self, items: Sequence[OutboxItem]) -> None:
        if items:
            # One wake-up of the loop per claimed batch, not per result.
            self._loop.call_soon_threadsafe(self._start, list(items))

    def _start(self, items: list[OutboxItem]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        for item in items:
            task = self._loop.create_task(self._one(item, self._slots))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, item: OutboxItem, slots: asyncio.Semaphore) -> None:
        async with slots:
            self._done.put(await self._sender._send_async_safely(item))

    def alive(self) -> bool:
        return self._thread.is_alive()

    async def _finish(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._sender.client.aclose()

    def close(self) -> None:
        """Let the sends in hand finish, close the client's session on this loop, then stop the loop."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._finish(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
