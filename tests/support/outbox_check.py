"""Does the result outbox tell the truth? Compare its final state per order with what the Kombo sandbox holds.

Used by the write-back convergence test (tests/integration/test_writeback_truth.py) and the scheduled soak:

    violations = outbox_matches_kombo(store, kombo_sandbox.admin, order_ids)
    assert violations == [], "\\n".join(violations)

`admin.get_order(id)` gives `result` (the body of the last applied write) and `results` (every write Kombo
accepted: `outcome` "applied" or "noop", and its `body`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import sqlalchemy as sa

from kombo_sync.state.schema import result_outbox
from kombo_sync.state.store import StateStore

# States a version may be left in once the outbox is drained.
SETTLED = ("sent", "superseded", "not_writable", "dead")


class KomboAdmin(Protocol):
    def get_order(self, order_id: str) -> dict[str, Any]: ...


def _canonical(payload: Any) -> str | None:
    """A payload as comparable text (the outbox stores what the client sends; Kombo echoes the wire body)."""
    if payload is None:
        return None
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def _versions(store: StateStore, order_ids: list[str]) -> dict[str, list[Mapping[str, Any]]]:
    """Every outbox version of these orders, oldest first (by the warehouse's updated_at, then by enqueue time)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    row = result_outbox.c
    with store.transaction(readonly=True) as conn:
        for start in range(0, len(order_ids), 500):
            query = sa.select(result_outbox).where(row.order_id.in_(order_ids[start : start + 500]))
            for version in conn.execute(query).mappings():
                found.setdefault(version["order_id"], []).append(dict(version))
    for versions in found.values():
        # Unknown updated_at first; created_at breaks ties (and orders those without one).
        versions.sort(
            key=lambda v: (
                v["source_updated_at"] is not None,
                v["source_updated_at"] or v["created_at"],
                v["created_at"],
                v["payload_hash"],
            )
        )
    return found


def outbox_matches_kombo(store: StateStore, admin: KomboAdmin, order_ids: Iterable[str]) -> list[str]:
    """Human-readable violations (empty when the outbox and Kombo agree) for these orders:

    - nothing lost: every order has a result in the outbox, and no version is still pending or sending; a dead
      letter or not-writable version carries its reason;
    - the version Kombo holds is one of ours, and it is recorded `sent` (a write that landed is never recorded
      not_writable, superseded or dead);
    - every version recorded `sent` was accepted by Kombo at some point;
    - the newest version: `sent` means Kombo holds exactly that payload; `not_writable` while Kombo holds its
      payload is a lie;
    - no order was written with two different payloads.
    """
    ids = sorted(set(order_ids))
    versions_by_order = _versions(store, ids)
    violations: list[str] = []
    for order_id in ids:
        versions = versions_by_order.get(order_id, [])
        if not versions:
            violations.append(f"order {order_id}: no result in the outbox (lost)")
            continue
        order = admin.get_order(order_id)
        held = _canonical(order.get("result"))
        accepted = [
            write for write in order.get("results") or [] if write.get("outcome") in ("applied", "noop")
        ]
        accepted_bodies = {_canonical(write.get("body")) for write in accepted}
        applied_bodies = {
            _canonical(write.get("body")) for write in accepted if write.get("outcome") == "applied"
        }
        by_payload = {_canonical(version["payload_json"]): version for version in versions}

        for version in versions:
            label = f"order {order_id} version {version['payload_hash'][:12]}"
            if version["state"] not in SETTLED:
                violations.append(f"{label}: left {version['state']} (not drained)")
            elif version["state"] in ("dead", "not_writable") and not (
                version["last_error_code"] and version["last_error_message"]
            ):
                violations.append(f"{label}: {version['state']} without a recorded reason")
            if version["state"] == "sent" and _canonical(version["payload_json"]) not in accepted_bodies:
                violations.append(f"{label}: recorded sent, but Kombo never accepted that payload")

        if len(applied_bodies) > 1:
            violations.append(f"order {order_id}: Kombo was written {len(applied_bodies)} different payloads")
        if held is not None:
            holder = by_payload.get(held)
            if holder is None:
                violations.append(f"order {order_id}: Kombo holds a payload that is no version in the outbox")
            elif holder["state"] != "sent":
                violations.append(
                    f"order {order_id}: Kombo holds version {holder['payload_hash'][:12]}, which the outbox "
                    f"records {holder['state']} ({holder['last_error_code']}: {holder['last_error_message']})"
                )

        newest = versions[-1]
        newest_payload = _canonical(newest["payload_json"])
        if newest["state"] == "sent" and held != newest_payload:
            violations.append(
                f"order {order_id}: the newest version is recorded sent, but Kombo holds "
                + ("nothing" if held is None else "another payload")
            )
        if newest["state"] == "not_writable" and held == newest_payload:
            violations.append(
                f"order {order_id}: the newest version is recorded not_writable, but Kombo holds exactly it "
                f"({newest['last_error_code']}: {newest['last_error_message']})"
            )
    return violations
