"""Step 2 of the intake: send every recorded order's candidate exactly one invitation.

Exactly once, step by step (docs/intake.md, section 5):

1. **claim**: a batch of due orders is taken by compare-and-set with a lease (`claim_orders_for_invite`);
   two workers never hold the same order, and a dead worker's orders come back when its lease expires.
2. **re-check**: right before sending, the batch is read back from Kombo (`GET /assessment/orders?ids=`);
   an order no longer OPEN is closed (cancelled / rejected) and not invited; the duplicate rule and the e-mail
   syntax are checked under the lease.
3. **send**: the channel is called with the Kombo order id as idempotency key. The platform API creates one
   invitation per key, so a re-send after a crash returns the same invitation. SMTP cannot deduplicate: a crash
   between the server's "accepted" and step 4 sends a second e-mail with the same Message-ID (docs/intake.md).
4. **commit**: marked invited only if the lease is still ours, in a group commit (`intake.commits`): the orders
   whose send finished while the previous commit ran share one transaction, each fenced on its own.

Failures: a retriable channel error puts the order back with `next_attempt_at` (exponential backoff); after
`max_attempts` it becomes `failed` with the reason. A permanent error (malformed e-mail, 4xx) fails that order
only. ``on_step(step, order_id)`` is called after each step (used by the crash tests).

The webhook's inline flow (`invite_order_now`) is a one-order dispatch: it claims its order, then
`Dispatcher.dispatch_one` builds the request and sends through `Dispatcher.deliver`, the one send step (send,
error classification, attempt counting, failure rules, commit) that the batch's `Dispatcher.send` uses too.

Over 400 lines on purpose: claim, re-check, send and commit share the lease fence and the counters; the one
send path for an order lives here and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email

from kombo_sync.backoff import exponential_delay
from kombo_sync.candidate_hash import CandidateHasher, normalize_email
from kombo_sync.intake.claims import IntakeOrders
from kombo_sync.intake.commits import SQLITE_COMMIT_PAUSE_SECONDS, GroupCommit
from kombo_sync.intake.duplicates import (
    DuplicateScope,
    duplicate_keys,
    duplicate_rule_enabled,
    older_active_duplicate,
    shared_duplicate_keys,
)
from kombo_sync.intake.poll import _Counters, _error_text, select_integrations
from kombo_sync.invites import InviterConfigurationError, Inviters
from kombo_sync.invites.base import (
    CHANNEL_EMAIL,
    InvitationError,
    InvitationRequest,
    InvitationResult,
    Inviter,
    PermanentInvitationError,
    RetriableInvitationError,
)
from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.models import ORDER_STATUS_OPEN, ORDER_STATUS_REJECTED, Order
from kombo_sync.serving import package_refusal, published_package_ids
from kombo_sync.settings import IntakeSettings, PipelineSettings
from kombo_sync.state.integrations import IntegrationRecord
from kombo_sync.state.orders import (
    INVITED,
    INVITING,
    RECEIVED,
    ClaimedOrder,
    InvalidTransition,
    OrderNotFound,
    SentInvitation,
)
from kombo_sync.state.outbox import ResultOutbox
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

STEP_CLAIMED = "claimed"
STEP_SENT = "sent"  # the channel accepted the invitation
STEP_BEFORE_COMMIT = "before_commit"
STEP_COMMITTED = "committed"
STEPS = (STEP_CLAIMED, STEP_SENT, STEP_BEFORE_COMMIT, STEP_COMMITTED)

StepHook = Callable[[str, str], None]
Clock = Callable[[], datetime]

# A claim is closed for good only after the order left the claimable states; until then it must not be
# re-claimed, so the release before the final transition sets a retry time this far away.


def make_owner(label: str = "intake") -> str:
    """A lease owner unique to this process and call (host, pid, random part)."""
    return f"{label}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:255]


def retry_delay(intake: IntakeSettings, attempts: int) -> timedelta:
    """Backoff before the next attempt after ``attempts`` failed ones."""
    seconds = exponential_delay(
        intake.retry_backoff_seconds, attempts - 1, cap=intake.retry_backoff_max_seconds
    )
    return timedelta(seconds=seconds)


def email_problem(address: str | None) -> str | None:
    """Why this candidate e-mail cannot receive an invitation (syntax only, no DNS), or None if it can."""
    if not address:
        return "candidate e-mail is missing"
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"candidate e-mail is malformed: {exc}"
    return None


# The parts of a dispatch whose time the summary reports (`step_seconds`, summed over threads).
TIMED_STEPS = ("claim", "recheck_kombo", "duplicate_check", "send", "commit")


class _StepTimes:
    """Seconds spent per step, summed over the threads that ran it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = dict.fromkeys(TIMED_STEPS, 0.0)

    def add(self, step: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        with self._lock:
            self.seconds[step] += elapsed

    def rounded(self) -> dict[str, float]:
        with self._lock:
            return {step: round(seconds, 3) for step, seconds in self.seconds.items()}


@dataclass
class _Plan:
    claim: ClaimedOrder
    channel: str
    request: InvitationRequest


class _PackageNames:
    """Package names for e-mails: pipeline.yaml's `package_names`, then Kombo's copy of the catalog."""

    def __init__(self, client: KomboClient | None, configured: Mapping[str, str]) -> None:
        self._client = client
        self._configured = dict(configured)
        self._by_integration: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def name(self, integration_id: str, package_id: str) -> str | None:
        if package_id in self._configured:
            return self._configured[package_id]
        if self._client is None:
            return None
        with self._lock:
            names = self._by_integration.get(integration_id)
        if names is None:
            try:
                names = {p.id: p.name for p in self._client.get_packages(integration_id) if p.name}
            except Exception as exc:  # a missing name must not stop an invitation
                log.warning(
                    "integration %s: package names unavailable (%s)", integration_id, type(exc).__name__
                )
                names = {}
            with self._lock:
                self._by_integration[integration_id] = names
        return names.get(package_id)


class Dispatcher:
    """One dispatch run: claims, re-checks, sends and commits, with counters for the summary."""

    def __init__(
        self,
        store: StateStore,
        client: KomboClient | None,
        inviters: Inviters,
        settings: PipelineSettings,
        *,
        owner: str,
        clock: Clock | None = None,
        on_step: StepHook | None = None,
        registry: Mapping[str, IntegrationRecord] | None = None,
        hasher: CandidateHasher | None = None,
    ) -> None:
        self.store = store
        # The salted e-mail hash matches active orders whose candidate data was erased (None: not matched).
        self.hasher = hasher
        self.client = client
        self.inviters = inviters
        self.settings = settings
        self.intake = settings.intake
        self.owner = owner
        self.clock: Clock = clock or store.now
        self.on_step = on_step
        self.registry = dict(registry or {})
        self.repo = IntakeOrders(store)
        self.counters = _Counters()
        self.times = _StepTimes()
        self.commits = GroupCommit(
            self._commit_many,
            pause_after_commit=SQLITE_COMMIT_PAUSE_SECONDS if store.dialect == "sqlite" else 0.0,
        )
        self.package_names = _PackageNames(client, self.intake.package_names)

    def _step(self, step: str, order_id: str) -> None:
        if self.on_step is not None:
            self.on_step(step, order_id)

    def _commit_many(self, sent: Sequence[SentInvitation]) -> dict[str, bool | None]:
        started = time.perf_counter()
        try:
            return self.repo.mark_invited_many(sent, self.owner, now=self.clock())
        finally:
            self.times.add("commit", started)

    def _hash_of(self, email: str | None) -> str | None:
        return self.hasher.email_hash(email) if self.hasher is not None else None

    def _email_hashes(self, claims: Iterable[ClaimedOrder]) -> dict[str, str]:
        """Salted hash -> normalised e-mail of these claims (empty without a salt)."""
        hashes: dict[str, str] = {}
        for claim in claims:
            email_hash = self._hash_of(claim.candidate_email)
            if email_hash is not None:
                hashes[email_hash] = normalize_email(claim.candidate_email)
        return hashes

    def channel_for(self, integration_id: str) -> str:
        record = self.registry.get(integration_id)
        return self.inviters.channel_for(integration_id, record.invitation_channel if record else None)

    def request_for(self, claim: ClaimedOrder, channel: str) -> InvitationRequest:
        package_name = None
        if channel == CHANNEL_EMAIL:
            package_name = self.package_names.name(claim.integration_id, claim.package_id)
        return InvitationRequest(
            order_id=claim.order_id,
            integration_id=claim.integration_id,
            package_id=claim.package_id,
            candidate_email=claim.candidate_email or "",
            candidate_first_name=claim.candidate_first_name,
            candidate_last_name=claim.candidate_last_name,
            candidate_remote_id=claim.candidate_remote_id,
            application_remote_id=claim.application_remote_id,
            job_remote_id=claim.job_remote_id,
            job_name=claim.job_name,
            package_name=package_name,
            attempt=claim.attempts,
        )

    def _close(self, claim: ClaimedOrder, final: Callable[[], bool], counter: str) -> None:
        """Close an order we hold straight into its final state (fenced by our lease)."""
        try:
            closed = final()
        except InvalidTransition as exc:
            log.warning("order %s could not be closed: %s", claim.order_id, exc)
            return
        self.counters.add(counter if closed else "lease_lost")

    def close_not_open(self, claim: ClaimedOrder, status: str | None) -> None:
        reason = f"Kombo lists the order as {status}" if status else "Kombo no longer lists the order"
        log.info("order %s not invited: %s", claim.order_id, reason)
        if status == ORDER_STATUS_REJECTED:
            self._close(
                claim,
                lambda: self.repo.mark_rejected(claim.order_id, reason, owner=self.owner),
                "rejected",
            )
        else:
            self._close(claim, lambda: self.repo.mark_cancelled(claim.order_id, reason=reason), "cancelled")

    def revoke_earlier_invitation(self, claim: ClaimedOrder, channel: str, status: str | None) -> bool:
        """Before closing a re-claimed order that left OPEN: an earlier try may have sent its invitation and died
        before the commit, so it is revoked (the platform answers ``not_found`` if there was none; e-mail
        ``not_revocable``). False if the channel could not answer: the order is put back."""
        reason = f"Kombo lists the order as {status}" if status else "Kombo no longer lists the order"
        try:
            answer = self.inviters.revoker(channel).revoke(claim.order_id, reason)
        except (InvitationError, InviterConfigurationError) as exc:
            self.retry_later(claim, f"could not revoke an earlier try's invitation: {exc}")
            return False
        log.info("order %s: an earlier try's invitation: %s", claim.order_id, answer.status)
        return True

    def with_result(self, order_ids: Iterable[str]) -> set[str]:
        """Which of these orders have a result of their candidate in the outbox: their invitation went out."""
        wanted = set(order_ids)
        return set(ResultOutbox(self.store).versions(wanted)) if wanted else set()

    def fail(self, claim: ClaimedOrder, reason: str) -> None:
        if self.repo.mark_failed(claim.order_id, reason, owner=self.owner):
            self.counters.add("failed")
            log.warning("order %s failed: %s", claim.order_id, reason.split(":")[0])
        else:
            self.counters.add("lease_lost")

    def retry_later(self, claim: ClaimedOrder, reason: str, *, count_attempt: bool = True) -> None:
        if count_attempt and claim.attempts >= self.intake.max_attempts:
            self.fail(claim, f"gave up after {claim.attempts} attempts: {reason}")
            return
        now = self.clock()
        retry_at = now + retry_delay(self.intake, claim.attempts)
        if self.repo.release_with_error(claim.order_id, self.owner, reason, retry_at, now=now):
            self.counters.add("retry_later")
        else:
            self.counters.add("lease_lost")

    def duplicate_rule_applies(self, integration_id: str) -> bool:
        record = self.registry.get(integration_id)
        return duplicate_rule_enabled(self.intake, integration_id, record.settings if record else None)

    def shared_keys(self, groups: Mapping[str, list[ClaimedOrder]]) -> dict[str, set[str]]:
        """The duplicate pre-check of a batch (`shared_duplicate_keys`) for the integrations whose rule is on."""
        started = time.perf_counter()
        wanted = {
            integration_id: DuplicateScope(
                frozenset(c.package_id for c in claims), self._email_hashes(claims)
            )
            for integration_id, claims in groups.items()
            if self.duplicate_rule_applies(integration_id)
        }
        shared = shared_duplicate_keys(self.store, wanted) if wanted else {}
        self.times.add("duplicate_check", started)
        return shared

    def recheck(
        self, integration_id: str, claims: list[ClaimedOrder], shared: set[str] | None = None
    ) -> list[_Plan]:
        """Read the claimed orders back from Kombo; close those no longer OPEN, apply the duplicate rule and
        the e-mail check; return what is left to send. ``shared``: the batch's duplicate pre-check for this
        integration (`shared_keys`); None runs it here."""
        if self.client is not None:
            started = time.perf_counter()
            try:
                current: dict[str, Order] = {
                    order.id: order
                    for order in self.client.get_orders_by_ids(integration_id, [c.order_id for c in claims])
                }
            except Exception as exc:
                reason = f"could not re-check with Kombo: {_error_text(exc)}"
                log.error("integration %s: %s; %s order(s) put back", integration_id, reason, len(claims))
                for claim in claims:
                    self.retry_later(claim, reason, count_attempt=False)
                return []
            finally:
                self.times.add("recheck_kombo", started)
        plans: list[_Plan] = []
        record = self.registry.get(integration_id)
        if shared is None:
            shared = self.shared_keys({integration_id: claims}).get(integration_id, set())
        channel = self.channel_for(integration_id)
        allowed_packages = published_package_ids(record)
        not_open: set[str] = set()
        if self.client is not None:
            not_open = {
                claim.order_id
                for claim in claims
                if (fresh := current.get(claim.order_id)) is None
                or (fresh.status is not None and fresh.status != ORDER_STATUS_OPEN)
            }
        finished = self.with_result(not_open)
        for claim in claims:
            if claim.order_id in not_open:
                fresh = current.get(claim.order_id)
                status = fresh.status if fresh is not None else None
                if fresh is not None:
                    self.repo.record_order(
                        fresh.model_dump(mode="json", by_alias=True),
                        "poll",
                        integration_id=integration_id,
                    )
                if claim.order_id in finished:
                    # An earlier try sent the invitation and died before its commit; the candidate finished and
                    # the write-back may already have closed the order in Kombo with the result. The order was
                    # invited: it is sent again with the same key (the platform answers with its invitation)
                    # and recorded invited, never closed as cancelled.
                    log.info("order %s: Kombo lists it as %s, with a result of its candidate: recorded invited",
                             claim.order_id, status or "missing")  # fmt: skip
                    plans.append(_Plan(claim, channel, self.request_for(claim, channel)))
                    continue
                if claim.attempts > 1 and not self.revoke_earlier_invitation(claim, channel, status):
                    continue
                self.close_not_open(claim, status)
                continue
            refusal = package_refusal(claim.package_id, allowed_packages)
            if refusal is not None:
                # The webhook answers such an order 422; one found by the poll is closed the same way, uninvited.
                self._close(
                    claim,
                    functools.partial(self.repo.mark_rejected, claim.order_id, refusal, owner=self.owner),
                    "rejected",
                )
                continue
            if duplicate_keys(claim.package_id, claim.candidate_email, claim.application_remote_id) & shared:
                duplicate_of = older_active_duplicate(
                    self.repo,
                    order_id=claim.order_id,
                    integration_id=claim.integration_id,
                    package_id=claim.package_id,
                    candidate_email=claim.candidate_email,
                    application_remote_id=claim.application_remote_id,
                    received_at=claim.received_at,
                    candidate_email_hash=self._hash_of(claim.candidate_email),
                )
                if duplicate_of is not None:
                    self._close(
                        claim,
                        functools.partial(
                            self.repo.mark_duplicate, claim.order_id, duplicate_of, owner=self.owner
                        ),
                        "duplicate",
                    )
                    continue
            problem = email_problem(claim.candidate_email)
            if problem is not None:
                self.fail(claim, problem)
                continue
            plans.append(_Plan(claim, channel, self.request_for(claim, channel)))
        return plans

    def send(self, plan: _Plan) -> InvitationResult | None:
        """The batch's send: `deliver`, with a failure already applied to the order and counted."""
        try:
            return self.deliver(plan)
        except InvitationError:
            return None

    def deliver(self, plan: _Plan) -> InvitationResult:
        """The one send step of every dispatch (a batch's orders and the inline flow's one order): send through
        the channel with the Kombo order id as idempotency key, then commit with the lease as fence.

        A failure is applied to the order before it is raised as an `InvitationError`: a permanent error fails
        it; a retriable or unexpected one counts the attempt and puts it back with backoff, or fails it after
        `intake.max_attempts`; a lease too short to send in puts it back without counting an attempt.
        """
        claim = plan.claim
        margin = timedelta(seconds=self.intake.lease_seconds * 0.25)
        if self.clock() >= claim.lease_expires_at - margin:
            # Sending now could outlive the lease and race a worker that re-claims the order.
            reason = "lease ran short before sending"
            self.retry_later(claim, reason, count_attempt=False)
            self.counters.add("deferred")
            raise RetriableInvitationError(reason, channel=plan.channel)
        started = time.perf_counter()
        try:
            inviter: Inviter = self.inviters.get(plan.channel)
            result = inviter.send(plan.request, claim.order_id)
        except PermanentInvitationError as exc:
            self.fail(claim, str(exc))
            raise
        except RetriableInvitationError as exc:
            self.counters.add("channel_errors")
            self.retry_later(claim, str(exc))
            raise
        except Exception as exc:  # a bug or an unexpected channel answer: this order only
            log.exception("order %s: unexpected error from channel %s", claim.order_id, plan.channel)
            reason = f"unexpected {type(exc).__name__} from channel {plan.channel}"
            self.counters.add("channel_errors")
            self.retry_later(claim, reason)
            raise RetriableInvitationError(reason, channel=plan.channel) from exc
        finally:
            self.times.add("send", started)
        self._step(STEP_SENT, claim.order_id)
        self._step(STEP_BEFORE_COMMIT, claim.order_id)
        committed = self.commits.commit(
            SentInvitation(claim.order_id, result.channel, result.external_id, result.url, result.external_id)
        )
        if committed is None:
            raise OrderNotFound(claim.order_id)
        self._step(STEP_COMMITTED, claim.order_id)
        if committed:
            self.counters.add("invited")
        else:
            self.counters.add("lease_lost")
            log.warning(
                "order %s: invitation sent but the order changed meanwhile (lease lost)", claim.order_id
            )
        return result

    def dispatch_one(self, claim: ClaimedOrder, channel: str) -> InvitationResult:
        """Dispatch one claimed order now through ``channel`` (the inline flow): the e-mail check, then the
        same request and send step as a batch. No re-check with Kombo (the order has just arrived from it, and
        the webhook's rules, the duplicate and package rules among them, decided it in the event's transaction).
        Raises `InvitationError` with the order already failed or put back."""
        self.counters.add("claimed")
        self._step(STEP_CLAIMED, claim.order_id)
        problem = email_problem(claim.candidate_email)
        if problem is not None:
            self.fail(claim, problem)
            raise PermanentInvitationError(problem, channel=channel, code="BAD_ADDRESS")
        return self.deliver(_Plan(claim, channel, self.request_for(claim, channel)))

    def _log_batch(self, batch: int, claimed: int, sending: int) -> None:
        log.info(
            "batch %s: %s claimed, %s to send; so far %s invited, %s retry later, %s failed, %s closed",
            batch,
            claimed,
            sending,
            self.counters.get("invited"),
            self.counters.get("retry_later"),
            self.counters.get("failed"),
            self.counters.get("cancelled") + self.counters.get("rejected") + self.counters.get("duplicate"),
        )

    def run(
        self, integration_ids: Iterable[str] | None = None, *, max_orders: int | None = None
    ) -> dict[str, Any]:
        intake = self.intake
        started = time.monotonic()
        limit_ids = list(integration_ids) if integration_ids is not None else None
        batches = 0
        claimed_total = 0
        # The sends of the batch before: the next batch is claimed and re-checked while they go out.
        in_flight: list[Future[InvitationResult | None]] = []
        with (
            ThreadPoolExecutor(
                max_workers=intake.poll_concurrency, thread_name_prefix="intake-recheck"
            ) as rechecks,
            ThreadPoolExecutor(
                max_workers=intake.send_concurrency, thread_name_prefix="intake-send"
            ) as senders,
        ):
            while max_orders is None or claimed_total < max_orders:
                size = intake.claim_batch_size
                if max_orders is not None:
                    size = min(size, max_orders - claimed_total)
                claim_started = time.perf_counter()
                claims = self.repo.claim_orders_for_invite(
                    self.owner, intake.lease_seconds, size, limit_ids, now=self.clock()
                )
                self.times.add("claim", claim_started)
                if not claims:
                    break
                batches += 1
                claimed_total += len(claims)
                self.counters.add("claimed", len(claims))
                for claim in claims:
                    self._step(STEP_CLAIMED, claim.order_id)
                groups: dict[str, list[ClaimedOrder]] = defaultdict(list)
                for claim in claims:
                    groups[claim.integration_id].append(claim)
                shared = self.shared_keys(groups)
                rechecked = [
                    rechecks.submit(self.recheck, integration_id, group, shared.get(integration_id, set()))
                    for integration_id, group in groups.items()
                ]
                # An integration's orders go out as soon as its own re-check is back, not after the batch's
                # slowest; they queue behind the batch before's, so at most two batches are claimed at a time.
                sends: list[Future[InvitationResult | None]] = []
                for done in as_completed(rechecked):
                    sends.extend(senders.submit(self.send, plan) for plan in done.result())
                for sending in in_flight:
                    sending.result()
                in_flight = sends
                self._log_batch(batches, len(claims), len(sends))
            for sending in in_flight:
                sending.result()
        summary: dict[str, Any] = {
            "owner": self.owner,
            "batches": batches,
            "claimed": claimed_total,
            **{
                name: self.counters.get(name)
                for name in (
                    "invited",
                    "retry_later",
                    "failed",
                    "cancelled",
                    "rejected",
                    "duplicate",
                    "deferred",
                    "lease_lost",
                    "channel_errors",
                )
            },
            "seconds": round(time.monotonic() - started, 3),
            "step_seconds": self.times.rounded(),
            "commit_transactions": self.commits.transactions,
        }
        log.info("dispatch summary: %s", summary)
        return summary


def dispatch_invitations(
    store: StateStore,
    client: KomboClient | None,
    inviters: Inviters,
    settings: PipelineSettings,
    *,
    owner: str | None = None,
    integration_ids: Iterable[str] | None = None,
    dry_run: bool = False,
    clock: Clock | None = None,
    on_step: StepHook | None = None,
    max_orders: int | None = None,
    hasher: CandidateHasher | None = None,
) -> dict[str, Any]:
    """Invite every due order of the active integrations (or those given); returns a summary of counts.

    ``hasher`` (`kombo_sync.candidate_hash`) lets the duplicate rule match active orders whose candidate data was
    erased; the intake task passes the configured one.

    ``client`` re-checks orders with Kombo before sending (None skips that, for tests of the channel only).
    ``dry_run`` claims nothing and reports how many orders are waiting.
    """
    integrations, not_active = select_integrations(store, integration_ids)
    if dry_run:
        counts = IntakeOrders(store).counts_by_state()
        waiting = {"dry_run": True, "waiting": counts.get(RECEIVED, 0), "inviting": counts.get(INVITING, 0)}
        log.info("dry run: %s order(s) waiting for an invitation, nothing sent", waiting["waiting"])
        return waiting
    registry = {integration.id: integration for integration in integrations}
    if not registry:
        log.info("no active integration to dispatch for")
        return {"claimed": 0, "invited": 0, "integrations_not_active": not_active}
    # Build every channel the run needs before claiming anything. A channel whose connection is missing or
    # broken holds back its integrations' orders (their attempts are not spent) while the others are invited;
    # the run then fails and names it.
    unavailable: dict[str, str] = {}
    for channel in sorted({inviters.channel_for(i.id, i.invitation_channel) for i in integrations}):
        try:
            inviters.get(channel)
        except InviterConfigurationError as exc:
            unavailable[channel] = str(exc)
            log.error("channel %s unavailable, its orders wait: %s", channel, exc)
    if unavailable:
        registry = {
            i.id: i
            for i in integrations
            if inviters.channel_for(i.id, i.invitation_channel) not in unavailable
        }
    dispatcher = Dispatcher(
        store,
        client,
        inviters,
        settings,
        owner=owner or make_owner(),
        clock=clock,
        on_step=on_step,
        registry=registry,
        hasher=hasher,
    )
    summary: dict[str, Any] = dispatcher.run(list(registry), max_orders=max_orders) if registry else {}
    summary["integrations_not_active"] = not_active
    if unavailable:
        raise InviterConfigurationError(
            f"invitations went out for the other channels ({summary.get('invited', 0)} sent), but "
            + "; ".join(unavailable.values())
        )
    return summary


def invite_order_now(
    store: StateStore,
    inviter: Inviter,
    order: Order | Mapping[str, Any],
    settings: PipelineSettings,
    *,
    owner: str | None = None,
    wait_seconds: float = 5.0,
    clock: Clock | None = None,
) -> InvitationResult:
    """Invite one order synchronously (the webhook's inline flow): record it if new, claim it, then dispatch
    it as a one-order `Dispatcher` run (`Dispatcher.dispatch_one`: the batch's request building, send step,
    commit, attempt counting and failure rules).

    Idempotent: an order already invited returns its stored invitation. Raises RetriableInvitationError when
    the channel failed (the order is put back with backoff, or failed after `intake.max_attempts`) or another
    worker is inviting the order right now (the webhook then answers an error that keeps the order with Kombo),
    PermanentInvitationError when the order cannot be invited.
    """
    payload = order.model_dump(mode="json", by_alias=True) if isinstance(order, Order) else dict(order)
    order_id = str(payload.get("id") or "")
    if not order_id:
        raise PermanentInvitationError("order has no id")
    repo = IntakeOrders(store)
    clock = clock or store.now
    owner = owner or make_owner("inline")
    intake = settings.intake
    if repo.get(order_id) is None:
        repo.record_order(payload, "webhook")
    deadline = time.monotonic() + wait_seconds
    while True:
        record = repo.get(order_id)
        if record is None:  # pragma: no cover - recorded above
            raise RetriableInvitationError("order vanished from the state store")
        if record.state == INVITED:
            return InvitationResult(
                record.invitation_id, record.invitation_url, record.channel or inviter.channel
            )
        if record.state not in (RECEIVED, INVITING):
            raise PermanentInvitationError(f"order is {record.state}, not invitable")
        claim = repo.claim_order(order_id, owner, intake.lease_seconds, now=clock())
        if claim is not None:
            break
        if time.monotonic() >= deadline:
            raise RetriableInvitationError("another worker is inviting this order right now")
        time.sleep(0.1)

    # A one-order dispatch through this inviter: the batch's request, send step, commit and failure rules.
    dispatcher = Dispatcher(
        store, None, Inviters(settings, {inviter.channel: inviter}), settings, owner=owner, clock=clock
    )
    return dispatcher.dispatch_one(claim, inviter.channel)
