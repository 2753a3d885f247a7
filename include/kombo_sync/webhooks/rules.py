"""Rejection rules for `assessment:order-received`: each returns a message a recruiter understands, or None.

A rejected order is answered HTTP 422 `{"status": "ORDER_REJECTED", "message": ...}`; Kombo rejects it in the
ATS and shows the message there. The built-in rules, in order (the first message wins):

1. the integration is unknown, deleted, disabled or not active;
2. the package is not one this customer was given: checked against the package ids the catalog sync last
   published to Kombo for the integration (`integrations.published_package_ids`, written with each successful
   publish); while none are known the rule allows everything;
3. the candidate's e-mail address cannot receive an invitation (syntax and deliverability, without DNS);
4. the candidate already has an active order for the same package (`intake.duplicate_rule`, per integration).

The team adds its own with `webhook.extra_rejection_rule`: the dotted path of a callable
`(order, context) -> str | None` (`order` is the validated `OrderReceivedData`, `context` a `RuleContext`).
Messages never contain the candidate's e-mail, name or phone: the recruiter sees the candidate beside them.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Connection

from kombo_sync.candidate_hash import CandidateHasher
from kombo_sync.intake.duplicates import duplicate_rule_enabled
from kombo_sync.kombo.models import OrderReceivedData
from kombo_sync.serving import integration_refusal, package_refusal
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.integrations import IntegrationRecord
from kombo_sync.state.orders import active_duplicate_query
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at besides the order itself."""

    store: StateStore
    settings: PipelineSettings
    integration: IntegrationRecord | None
    # Package ids last published to Kombo for this integration; None when not known (the rule then allows).
    published_package_ids: frozenset[str] | None
    event_type: str
    now: datetime
    # The webhook's open transaction: rules that read the store use it (None: each read opens its own).
    conn: Connection | None = None
    # The salted e-mail hash (`kombo_sync.candidate_hash`): the duplicate rule matches active orders whose
    # candidate data was erased by it (None: no salt configured, not matched).
    email_hasher: CandidateHasher | None = None
    # The duplicate rule's answer read ahead with the event (the webhook's first statement); None: not read, the
    # rule reads it itself.
    prefetched_duplicate: PrefetchedDuplicate | None = None


@dataclass(frozen=True)
class PrefetchedDuplicate:
    """The other active order of the same candidate and package (`OrderRepository.find_active_duplicate`), or
    None when there is none."""

    order_id: str | None


class RejectionRule(Protocol):
    __name__: str

    def __call__(self, order: OrderReceivedData, context: RuleContext) -> str | None: ...


def integration_is_served(order: OrderReceivedData, context: RuleContext) -> str | None:
    """Reject orders from integrations we do not know, or that are deleted, switched off or not active."""
    return integration_refusal(context.integration)


def package_is_entitled(order: OrderReceivedData, context: RuleContext) -> str | None:
    """Reject a package this customer was not given (only when the published list is known)."""
    return package_refusal(order.package_id, context.published_package_ids)


def email_can_receive_invitation(order: OrderReceivedData, context: RuleContext) -> str | None:
    """Reject an address that no invitation could reach (checked offline: syntax and special-use domains)."""
    try:
        validate_email(order.candidate.email, check_deliverability=False)
    except EmailNotValidError as exc:
        return (
            "The candidate's e-mail address cannot receive an assessment invitation "
            f"({_email_reason(exc)}). Please correct the address in the ATS, then order again."
        )
    return None


def _email_reason(exc: EmailNotValidError) -> str:
    # Offline checks name the problem (a missing @-sign, a reserved domain), never the whole address.
    text = str(exc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else "the address is not valid"


def no_active_duplicate(order: OrderReceivedData, context: RuleContext) -> str | None:
    """Reject a second active order for the same candidate and package (per-integration switch)."""
    registry_settings = context.integration.settings if context.integration is not None else None
    if not duplicate_rule_enabled(context.settings.intake, order.integration_id, registry_settings):
        return None
    if context.prefetched_duplicate is not None:
        duplicate_of = context.prefetched_duplicate.order_id
    else:
        duplicate_of = _find_duplicate(order, context)
    if duplicate_of is None:
        return None
    return (
        "There is already an open order of this assessment for this candidate "
        f"(order {duplicate_of}). The candidate will receive only one invitation: please wait for that "
        "assessment to be completed, or cancel it before ordering again."
    )


def duplicate_question(
    order: OrderReceivedData, hasher: CandidateHasher | None
) -> tuple[sa.Select, dict[str, Any]] | None:
    """The duplicate rule's question for `order` (the statement and its parameters), asked by the rule itself or
    read ahead with the event (`webhooks.orders.order_lookup`); None when nothing identifies the candidate."""
    return active_duplicate_query(
        order.integration_id,
        order.package_id,
        order.candidate.email,
        order.application.remote_id,
        exclude_order_id=order.id,
        # An active order whose candidate data was erased is matched by its salted e-mail hash.
        candidate_email_hash=hasher.email_hash(order.candidate.email) if hasher is not None else None,
    )


def _find_duplicate(order: OrderReceivedData, context: RuleContext) -> str | None:
    question = duplicate_question(order, context.email_hasher)
    if question is None:
        return None
    query, params = question
    with context.store.transaction(readonly=True, conn=context.conn) as tx:
        found = tx.execute(query, params).scalar_one_or_none()
    return None if found is None else str(found)


BUILTIN_RULES: tuple[RejectionRule, ...] = (
    integration_is_served,
    package_is_entitled,
    email_can_receive_invitation,
    no_active_duplicate,
)


class RuleConfigurationError(RuntimeError):
    """The team's extra rule cannot be loaded (a server fault: the order is kept, not rejected)."""


_loaded: dict[str, RejectionRule] = {}
_loaded_lock = threading.Lock()


def load_rule(dotted_path: str) -> RejectionRule:
    """Import `package.module.function` (or `package.module:function`) once per process."""
    with _loaded_lock:
        rule = _loaded.get(dotted_path)
        if rule is not None:
            return rule
        module_name, sep, attribute = dotted_path.replace(":", ".").rpartition(".")
        if not sep or not module_name or not attribute:
            raise RuleConfigurationError(f"extra_rejection_rule {dotted_path!r} is not a dotted path")
        try:
            candidate = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise RuleConfigurationError(
                f"extra_rejection_rule {dotted_path!r} cannot be imported: {exc}"
            ) from exc
        if not callable(candidate):
            raise RuleConfigurationError(f"extra_rejection_rule {dotted_path!r} is not callable")
        _loaded[dotted_path] = candidate
        return candidate


def rules_for(settings: PipelineSettings, extra: Sequence[RejectionRule] = ()) -> list[RejectionRule]:
    """The built-in rules, then `extra`, then the team's rule named in the settings."""
    rules: list[RejectionRule] = [*BUILTIN_RULES, *extra]
    if settings.webhook.extra_rejection_rule:
        rules.append(load_rule(settings.webhook.extra_rejection_rule))
    return rules


def first_rejection(
    order: OrderReceivedData, context: RuleContext, rules: Collection[Callable[..., str | None]]
) -> tuple[str, str] | None:
    """(rule name, message) of the first rule that rejects the order, or None when every rule allows it."""
    for rule in rules:
        if rule in BUILTIN_RULES:
            message = rule(order, context)
        else:
            try:
                message = rule(order, context)
            except Exception as exc:
                log.exception("rejection rule %s failed", _name(rule))
                raise RuleConfigurationError(
                    f"rejection rule {_name(rule)} failed: {type(exc).__name__}"
                ) from exc
        if message is None:
            continue
        if not isinstance(message, str) or not message.strip():
            raise RuleConfigurationError(f"rejection rule {_name(rule)} returned {type(message).__name__}")
        return _name(rule), message.strip()
    return None


def _name(rule: Callable[..., Any]) -> str:
    return getattr(rule, "__name__", type(rule).__name__)
