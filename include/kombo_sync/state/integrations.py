"""`IntegrationRepository`: the only writer of `integrations`.

Kombo has no "list integrations" endpoint, so this table is the registry, fed by the integration webhooks, a
bootstrap and admin tools. Deletion is sticky: a late webhook never brings a deleted integration back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kombo_sync.state._util import from_row, to_jsonable
from kombo_sync.state.schema import (
    INTEGRATION_SOURCES,
    INTEGRATION_STATUSES,
    INVITATION_CHANNELS,
    UTCDateTime,
    integrations,
)
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

ACTIVE = "ACTIVE"
DELETED = "DELETED"
ASSESSMENT = "ASSESSMENT"


@dataclass(frozen=True)
class IntegrationRecord:
    id: str
    tool: str
    category: str
    customer_key: str | None
    organization_name: str | None
    status: str
    setup_status: str | None
    qa_status: str | None
    source: str
    enabled: bool
    invitation_channel: str | None
    settings: dict[str, Any]
    packages_hash: str | None
    packages_published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    # Ids of the package list last published to Kombo (None: not recorded yet, e.g. published before 0003).
    published_package_ids: list[str] | None = None


class IntegrationRepository:
    """The registry of Kombo integrations and their per-integration options."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def upsert(
        self,
        integration_id: str,
        *,
        source: str,
        category: str | None = None,
        tool: str | None = None,
        customer_key: str | None = None,
        organization_name: str | None = None,
        status: str | None = None,
        setup_status: str | None = None,
        qa_status: str | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Create or refresh an integration from a webhook, the bootstrap or an admin; returns True if created.
        New rows default to category ASSESSMENT and status ACTIVE; on a refresh None leaves a stored value alone; `enabled`, `invitation_channel` and `settings` are never touched, and
        a deleted integration keeps status DELETED."""
        if source not in INTEGRATION_SOURCES:
            raise ValueError(f"source must be one of {INTEGRATION_SOURCES}, not {source!r}")
        if status is not None and status not in INTEGRATION_STATUSES:
            raise ValueError(f"status must be one of {INTEGRATION_STATUSES}, not {status!r}")
        now = self.store.now()
        row: dict[str, Any] = {
            "id": integration_id,
            "tool": tool or integration_id.split(":", 1)[0],
            "category": category or ASSESSMENT,
            "customer_key": customer_key,
            "organization_name": organization_name,
            "status": status or ACTIVE,
            "setup_status": setup_status,
            "qa_status": qa_status,
            "source": source,
            "enabled": True,
            "settings": {},
            "created_at": now,
            "updated_at": now,
            "deleted_at": now if status == DELETED else None,
        }
        # `source` records who first registered the integration; a refresh keeps it.
        refresh: dict[str, Any] = {"updated_at": now}
        for name, value in (
            ("category", category),
            ("tool", tool),
            ("customer_key", customer_key),
            ("organization_name", organization_name),
            ("setup_status", setup_status),
            ("qa_status", qa_status),
        ):
            if value is not None:
                refresh[name] = value
        if status is not None:
            # Deletion is sticky: a state-changed webhook that arrives after integration-deleted loses.
            refresh["status"] = sa.case((integrations.c.status == DELETED, DELETED), else_=status)
        if status == DELETED:
            refresh["deleted_at"] = sa.func.coalesce(
                integrations.c.deleted_at, sa.literal(now, UTCDateTime())
            )
        with self.store.transaction(conn=conn) as tx:
            created = bool(self.store.upsert(tx, integrations, [row], ["id"], []))
            if not created:
                tx.execute(sa.update(integrations).where(integrations.c.id == integration_id).values(refresh))
        log.info("integration %s %s from %s", integration_id, "created" if created else "refreshed", source)
        return created

    def set_status(
        self,
        integration_id: str,
        status: str,
        *,
        setup_status: str | None = None,
        qa_status: str | None = None,
    ) -> bool:
        """Record Kombo's state of an integration; False if unknown or deleted."""
        if status not in INTEGRATION_STATUSES or status == DELETED:
            raise ValueError(
                f"status must be one of ACTIVE, INACTIVE, INVALID (use mark_deleted), not {status!r}"
            )
        values: dict[str, Any] = {"status": status, "updated_at": self.store.now()}
        if setup_status is not None:
            values["setup_status"] = setup_status
        if qa_status is not None:
            values["qa_status"] = qa_status
        return self._update(integration_id, values, only_live=True)

    def mark_deleted(
        self, integration_id: str, deleted_at: datetime | None = None, *, conn: Connection | None = None
    ) -> bool:
        """Status DELETED with the deletion time; False if unknown or already deleted."""
        now = self.store.now()
        return self._update(
            integration_id,
            {"status": DELETED, "deleted_at": deleted_at or now, "updated_at": now},
            only_live=True,
            conn=conn,
        )

    def set_enabled(self, integration_id: str, enabled: bool) -> bool:
        """Switch the pipeline on or off for one integration (admin); False if unknown."""
        return self._update(integration_id, {"enabled": enabled, "updated_at": self.store.now()})

    def set_invitation_channel(self, integration_id: str, channel: str | None) -> bool:
        """Per-integration channel override (None = the pipeline default); False if unknown."""
        if channel is not None and channel not in INVITATION_CHANNELS:
            raise ValueError(f"channel must be one of {INVITATION_CHANNELS} or None, not {channel!r}")
        return self._update(integration_id, {"invitation_channel": channel, "updated_at": self.store.now()})

    def set_settings(self, integration_id: str, settings: Mapping[str, Any]) -> bool:
        """Replace the per-integration options; False if unknown."""
        return self._update(
            integration_id, {"settings": to_jsonable(dict(settings)), "updated_at": self.store.now()}
        )

    def record_packages_publish(
        self,
        integration_id: str,
        packages_hash: str,
        published_at: datetime | None = None,
        *,
        package_ids: Iterable[str] | None = None,
    ) -> bool:
        """Remember the package list last published to Kombo: its hash and, when given, its package ids (what
        the webhook's package rule accepts; sorted, without repeats). False if the integration is unknown."""
        now = self.store.now()
        values: dict[str, Any] = {
            "packages_hash": packages_hash,
            "packages_published_at": published_at or now,
            "updated_at": now,
        }
        if package_ids is not None:
            values["published_package_ids"] = sorted({str(package_id) for package_id in package_ids})
        return self._update(integration_id, values)

    def _update(
        self,
        integration_id: str,
        values: dict[str, Any],
        *,
        only_live: bool = False,
        conn: Connection | None = None,
    ) -> bool:
        stmt = sa.update(integrations).where(integrations.c.id == integration_id).values(values)
        if only_live:
            stmt = stmt.where(integrations.c.status != DELETED)
        with self.store.transaction(conn=conn) as tx:
            return bool(tx.execute(stmt).rowcount)

    def get(self, integration_id: str, *, conn: Connection | None = None) -> IntegrationRecord | None:
        """The integration, or None."""
        with self.store.transaction(readonly=True, conn=conn) as tx:
            row = (
                tx.execute(sa.select(integrations).where(integrations.c.id == integration_id))
                .mappings()
                .first()
            )
        return None if row is None else from_row(IntegrationRecord, row)

    def list_active(self) -> list[IntegrationRecord]:
        """Integrations the pipeline serves: ASSESSMENT, status ACTIVE, enabled, not deleted; ordered by id."""
        query = (
            sa.select(integrations)
            .where(
                integrations.c.category == ASSESSMENT,
                integrations.c.status == ACTIVE,
                integrations.c.enabled.is_(True),
                integrations.c.deleted_at.is_(None),
            )
            .order_by(integrations.c.id)
        )
        with self.store.transaction(readonly=True) as conn:
            return [from_row(IntegrationRecord, row) for row in conn.execute(query).mappings()]

    def list_all(self, *, include_deleted: bool = False) -> list[IntegrationRecord]:
        """Every integration (for admin views), ordered by id."""
        query = sa.select(integrations).order_by(integrations.c.id)
        if not include_deleted:
            query = query.where(integrations.c.status != DELETED)
        with self.store.transaction(readonly=True) as conn:
            return [from_row(IntegrationRecord, row) for row in conn.execute(query).mappings()]
