"""The duplicate rule: which of two active orders for the same candidate and package is the duplicate.
Used by the intake's dispatcher and by the webhook's rejection rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kombo_sync.settings import IntakeSettings
from kombo_sync.state.orders import ACTIVE_STATES, OrderRepository
from kombo_sync.state.schema import orders
from kombo_sync.state.store import StateStore


def duplicate_rule_enabled(
    settings: IntakeSettings, integration_id: str, registry_settings: Any = None
) -> bool:
    """Per-integration override in pipeline.yaml, then the registry's `settings.duplicate_rule`, then global."""
    override = settings.integrations.get(integration_id)
    if override is not None and override.duplicate_rule is not None:
        return override.duplicate_rule
    if isinstance(registry_settings, dict) and isinstance(registry_settings.get("duplicate_rule"), bool):
        return bool(registry_settings["duplicate_rule"])
    return settings.duplicate_rule


def duplicate_keys(
    package_id: str, candidate_email: str | None, application_remote_id: str | None
) -> set[str]:
    """The keys under which an order can collide with another: its package with the candidate's e-mail, and its
    package with the ATS application (the duplicate rule's "same e-mail or same application")."""
    keys = set()
    email = (candidate_email or "").strip().lower()
    if email:
        keys.add(f"{package_id}\x00email\x00{email}")
    if application_remote_id:
        keys.add(f"{package_id}\x00application\x00{application_remote_id}")
    return keys


def candidates_sharing_an_order(
    store: StateStore,
    integration_id: str,
    package_ids: Iterable[str],
    email_hashes: Mapping[str, str] | None = None,
) -> set[str]:
    """Duplicate keys (`duplicate_keys`) held by more than one active order of this integration: only orders
    with such a key can be duplicates, so the per-order rule (`find_active_duplicate`) runs for them alone."""
    wanted = {integration_id: DuplicateScope(frozenset(package_ids), dict(email_hashes or {}))}
    return shared_duplicate_keys(store, wanted)[integration_id]


@dataclass(frozen=True)
class DuplicateScope:
    """What one integration's claimed orders ask the duplicate pre-check about: their packages, and the
    salted hash -> e-mail of their candidates (empty without a salt)."""

    package_ids: frozenset[str]
    email_hashes: Mapping[str, str]


def shared_duplicate_keys(store: StateStore, wanted: Mapping[str, DuplicateScope]) -> dict[str, set[str]]:
    """`candidates_sharing_an_order` for several integrations at once (a dispatch batch): two queries in one
    read transaction for all of them instead of two per integration, and a third with e-mail hashes (an active
    order whose candidate data was erased holds only the hash). integration id -> its shared keys."""
    shared: dict[str, set[str]] = {integration_id: set() for integration_id in wanted}
    integrations = sorted(wanted)
    packages = sorted({package for scope in wanted.values() for package in scope.package_ids})
    if not integrations or not packages:
        return shared

    def add(integration_id: str, package_id: str, kind: str, value: str) -> None:
        # The IN lists pair every integration with every package: keep the pairs actually asked about.
        if package_id in wanted[integration_id].package_ids:
            shared[integration_id].add(f"{package_id}\x00{kind}\x00{value}")

    with store.transaction(readonly=True) as conn:
        for kind, column in (
            ("email", sa.func.lower(orders.c.candidate_email)),
            ("application", orders.c.application_remote_id),
        ):
            query = (
                sa.select(orders.c.integration_id, orders.c.package_id, column)
                .where(
                    orders.c.integration_id.in_(integrations),
                    orders.c.package_id.in_(packages),
                    orders.c.state.in_(ACTIVE_STATES),
                    column.is_not(None),
                )
                .group_by(orders.c.integration_id, orders.c.package_id, column)
                .having(sa.func.count() > 1)
            )
            for integration_id, package_id, value in conn.execute(query):
                add(integration_id, package_id, kind, value)
        hashes: dict[str, dict[str, str]] = {}  # salted hash -> integration id -> e-mail
        for integration_id, scope in wanted.items():
            for email_hash, email in scope.email_hashes.items():
                hashes.setdefault(email_hash, {})[integration_id] = email
        if hashes:
            query = sa.select(
                orders.c.integration_id, orders.c.package_id, orders.c.candidate_email_hash
            ).where(
                orders.c.integration_id.in_(integrations),
                orders.c.package_id.in_(packages),
                orders.c.state.in_(ACTIVE_STATES),
                orders.c.candidate_email_hash.in_(sorted(hashes)),
                orders.c.erased_at.is_not(None),
            )
            for integration_id, package_id, value in conn.execute(query):
                hashed_email = hashes.get(value, {}).get(integration_id)
                if hashed_email is not None:
                    add(integration_id, package_id, "email", hashed_email)
    return shared


def older_active_duplicate(
    repo: OrderRepository,
    *,
    order_id: str,
    integration_id: str,
    package_id: str,
    candidate_email: str | None,
    application_remote_id: str | None,
    received_at: datetime,
    candidate_email_hash: str | None = None,
) -> str | None:
    """The id of an active order for the same candidate and package that came *before* this one, or None.

    Only the younger of two orders is ever the duplicate (ordered by received_at, then id), so two workers
    checking a pair at the same time never mark both.
    """
    other_id = repo.find_active_duplicate(
        integration_id,
        package_id,
        candidate_email,
        application_remote_id,
        exclude_order_id=order_id,
        candidate_email_hash=candidate_email_hash,
    )
    if other_id is None:
        return None
    other = repo.get(other_id)
    if other is None:
        return None
    return other_id if (other.received_at, other.id) < (received_at, order_id) else None
