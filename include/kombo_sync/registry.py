"""The integration registry's admin side: a bootstrap file loader and `python -m kombo_sync.registry`.

Kombo has no "list integrations" endpoint, so the pipeline keeps its own registry (table `integrations`),
fed by Kombo's integration webhooks, by a bootstrap file for customers connected before the webhooks were
set up, and by this command. Every write goes through `IntegrationRepository`. Adding or enabling an
integration asks the package sync to run at once (the `kombo_integrations_changed` asset's wake-up).

    python -m kombo_sync.registry add greenhouse:abc --customer-key 36123 [--from-kombo]
    python -m kombo_sync.registry disable greenhouse:abc
    python -m kombo_sync.registry enable greenhouse:abc
    python -m kombo_sync.registry remove greenhouse:abc
    python -m kombo_sync.registry list [--all] [--json]
    python -m kombo_sync.registry load-bootstrap include/config/integrations.example.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kombo_sync.state.integrations import IntegrationRecord, IntegrationRepository

if TYPE_CHECKING:
    from kombo_sync.kombo.client import KomboClient
    from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """A bootstrap file or an admin request that cannot be applied; nothing was written."""


class BootstrapIntegration(BaseModel):
    """One entry of the bootstrap file (see include/config/integrations.example.yaml)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=3, pattern=r"^[^:\s]+:\S+$")
    customer_key: str | None = None
    category: str | None = None
    tool: str | None = None
    organization_name: str | None = None
    status: Literal["ACTIVE", "INACTIVE", "INVALID"] | None = None
    enabled: bool | None = None
    invitation_channel: Literal["platform", "email"] | None = None

    @field_validator("customer_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("category", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


def parse_bootstrap(document: Any, *, where: str = "bootstrap file") -> list[BootstrapIntegration]:
    """Validate a whole bootstrap document; raises `RegistryError` naming every bad entry."""
    entries = document.get("integrations") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise RegistryError(f"{where}: expected `integrations:` with a list of entries")
    parsed: list[BootstrapIntegration] = []
    problems: list[str] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        try:
            item = BootstrapIntegration.model_validate(entry)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'entry'}: {error['msg']}"
                for error in exc.errors()
            )
            problems.append(f"entry {position}: {details}")
            continue
        if item.id in seen:
            problems.append(f"entry {position}: integration {item.id} is listed twice")
        seen.add(item.id)
        parsed.append(item)
    if problems:
        raise RegistryError(f"{where}: nothing loaded, fix these entries first:\n  " + "\n  ".join(problems))
    return parsed


def apply_entry(repository: IntegrationRepository, entry: BootstrapIntegration, *, source: str) -> bool:
    """Create or refresh one integration; fields the entry leaves out keep their stored values."""
    created = repository.upsert(
        entry.id,
        source=source,
        category=entry.category,
        tool=entry.tool,
        customer_key=entry.customer_key,
        organization_name=entry.organization_name,
        status=entry.status,
    )
    if entry.enabled is not None:
        repository.set_enabled(entry.id, entry.enabled)
    if entry.invitation_channel is not None:
        repository.set_invitation_channel(entry.id, entry.invitation_channel)
    return created


def load_bootstrap(store: StateStore, path: Path, *, wake: bool = True) -> dict[str, Any]:
    """Load a bootstrap YAML file into the registry (idempotent); returns counts and the ids touched."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read bootstrap file {path}: {exc}") from exc
    entries = parse_bootstrap(document, where=str(path))
    repository = IntegrationRepository(store)
    created: list[str] = []
    refreshed: list[str] = []
    for entry in entries:
        (created if apply_entry(repository, entry, source="bootstrap") else refreshed).append(entry.id)
    deleted = [entry.id for entry in entries if _is_deleted(repository.get(entry.id))]
    without_key = [entry.id for entry in entries if not (repository.get(entry.id) or _NO_KEY).customer_key]
    if wake and entries:
        _request_catalog_sync(store)
    log.info("bootstrap %s: %s created, %s refreshed", path, len(created), len(refreshed))
    return {
        "created": created,
        "refreshed": refreshed,
        "still_deleted": deleted,
        "without_customer_key": without_key,
    }


class _NoRecord:
    customer_key = None


_NO_KEY = _NoRecord()


def _is_deleted(record: IntegrationRecord | None) -> bool:
    return record is not None and (record.status == "DELETED" or record.deleted_at is not None)


def _request_catalog_sync(store: StateStore) -> None:
    """Wake `kombo_package_sync` (asset kombo_integrations_changed) so new integrations get packages now."""
    from kombo_sync.assets import INTEGRATIONS_TOPIC
    from kombo_sync.wakeups import request_wakeup

    request_wakeup(store, INTEGRATIONS_TOPIC)


def add_integration(
    store: StateStore,
    integration_id: str,
    *,
    customer_key: str | None = None,
    category: str | None = None,
    tool: str | None = None,
    organization_name: str | None = None,
    status: str | None = None,
    invitation_channel: str | None = None,
    client: KomboClient | None = None,
    wake: bool = True,
) -> dict[str, Any]:
    """Register (or refresh) one integration as an admin; with `client`, details come from Kombo's
    `GET /integrations/{id}` (explicit arguments win)."""
    fields: dict[str, Any] = {
        "id": integration_id,
        "customer_key": customer_key,
        "category": category,
        "tool": tool,
        "organization_name": organization_name,
        "status": status,
        "invitation_channel": invitation_channel,
    }
    if client is not None:
        details = client.get_integration(integration_id)
        end_user = details.end_user
        from_kombo = {
            "customer_key": getattr(end_user, "origin_id", None) if end_user else None,
            "organization_name": getattr(end_user, "organization_name", None) if end_user else None,
            "category": details.category,
            "tool": getattr(details.tool, "id", None) if details.tool else None,
            "status": details.status if details.status in ("ACTIVE", "INACTIVE", "INVALID") else None,
        }
        fields.update({key: value for key, value in from_kombo.items() if fields.get(key) is None})
    try:
        entry = BootstrapIntegration.model_validate(
            {key: value for key, value in fields.items() if value is not None}
        )
    except ValidationError as exc:
        raise RegistryError(f"cannot add {integration_id}: {exc}") from exc
    repository = IntegrationRepository(store)
    created = apply_entry(repository, entry, source="admin")
    record = repository.get(integration_id)
    if wake and record is not None and not _is_deleted(record):
        _request_catalog_sync(store)
    return {"created": created, "integration": _record_view(record) if record else None}


def set_enabled(store: StateStore, integration_id: str, enabled: bool, *, wake: bool = True) -> bool:
    """Switch the pipeline on or off for one integration; False if it is not registered."""
    changed = IntegrationRepository(store).set_enabled(integration_id, enabled)
    if changed and enabled and wake:
        _request_catalog_sync(store)
    return changed


def remove_integration(store: StateStore, integration_id: str) -> bool:
    """Mark an integration deleted (sticky: webhooks cannot bring it back); False if unknown or deleted."""
    return IntegrationRepository(store).mark_deleted(integration_id)


def list_integrations(store: StateStore, *, include_deleted: bool = False) -> list[IntegrationRecord]:
    return IntegrationRepository(store).list_all(include_deleted=include_deleted)


def _record_view(record: IntegrationRecord) -> dict[str, Any]:
    view = asdict(record)
    for key, value in view.items():
        if hasattr(value, "isoformat"):
            view[key] = value.isoformat()
    return view


def _format_table(records: Sequence[IntegrationRecord]) -> str:
    header = ("id", "customer_key", "category", "status", "enabled", "source", "packages_published_at")
    rows = [
        (
            record.id,
            record.customer_key or "-",
            record.category,
            record.status,
            "yes" if record.enabled else "no",
            record.source,
            record.packages_published_at.isoformat(timespec="seconds")
            if record.packages_published_at
            else "never",
        )
        for record in records
    ]
    widths = [max(len(str(row[index])) for row in [header, *rows]) for index in range(len(header))]
    lines = [
        "  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _default_store(url: str | None) -> StateStore:
    from kombo_sync.state.store import StateStore, resolve_state_url

    return StateStore(url or resolve_state_url())


def _default_client() -> KomboClient:
    from kombo_sync.runtime import kombo_client

    return kombo_client()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kombo_sync.registry",
        description="Manage the pipeline's registry of Kombo integrations.",
    )
    parser.add_argument(
        "--state-url",
        help="state database URL (default: connection kombo_state, KOMBO_STATE_DB_URL, local SQLite)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", help="register or refresh an integration")
    add.add_argument("integration_id", help="Kombo integration id, tool:xxx")
    add.add_argument("--customer-key", help="your customer id (Kombo end_user.origin_id)")
    add.add_argument("--category", help="default ASSESSMENT for a new integration")
    add.add_argument("--tool")
    add.add_argument("--organization-name")
    add.add_argument("--status", choices=["ACTIVE", "INACTIVE", "INVALID"])
    add.add_argument("--channel", choices=["platform", "email"], dest="invitation_channel")
    add.add_argument(
        "--from-kombo", action="store_true", help="fill missing details from Kombo (GET /integrations/{id})"
    )
    add.add_argument("--no-wakeup", action="store_true", help="do not trigger the package sync now")

    for name, text in (
        ("disable", "stop all work for an integration (kept in the registry)"),
        ("enable", "resume work for a disabled integration"),
        ("remove", "mark an integration deleted (permanent)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("integration_id")

    listing = commands.add_parser("list", help="show the registry")
    listing.add_argument("--all", action="store_true", help="include deleted integrations")
    listing.add_argument("--json", action="store_true", help="print JSON")

    bootstrap = commands.add_parser("load-bootstrap", help="load a bootstrap YAML file (idempotent)")
    bootstrap.add_argument("file", type=Path)
    bootstrap.add_argument("--no-wakeup", action="store_true", help="do not trigger the package sync now")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    store_factory: Callable[[str | None], StateStore] = _default_store,
    client_factory: Callable[[], KomboClient] = _default_client,
) -> int:
    """Run the admin command; returns the process exit code (0 ok, 1 not found, 2 invalid input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger().setLevel(logging.WARNING)  # importing Airflow may have configured INFO already
    store = store_factory(args.state_url)
    try:
        if args.command == "add":
            result = add_integration(
                store,
                args.integration_id,
                customer_key=args.customer_key,
                category=args.category,
                tool=args.tool,
                organization_name=args.organization_name,
                status=args.status,
                invitation_channel=args.invitation_channel,
                client=client_factory() if args.from_kombo else None,
                wake=not args.no_wakeup,
            )
            record = result["integration"] or {}
            print(
                f"{'added' if result['created'] else 'updated'} {args.integration_id}: "
                f"customer {record.get('customer_key') or '-'}, {record.get('category')}, {record.get('status')}, "
                f"{'enabled' if record.get('enabled') else 'disabled'}"
            )
            if record.get("status") == "DELETED":
                print(f"note: {args.integration_id} was deleted earlier and stays deleted", file=sys.stderr)
            if not record.get("customer_key"):
                print("warning: no customer key, so no packages can be published for it", file=sys.stderr)
            return 0
        if args.command in ("disable", "enable"):
            if not set_enabled(store, args.integration_id, args.command == "enable"):
                print(f"{args.integration_id} is not in the registry", file=sys.stderr)
                return 1
            print(f"{args.command}d {args.integration_id}")
            return 0
        if args.command == "remove":
            if not remove_integration(store, args.integration_id):
                print(f"{args.integration_id} is not in the registry or already deleted", file=sys.stderr)
                return 1
            print(f"removed {args.integration_id} (marked deleted)")
            return 0
        if args.command == "list":
            records = list_integrations(store, include_deleted=args.all)
            if args.json:
                print(json.dumps([_record_view(record) for record in records], indent=2))
            else:
                print(_format_table(records) if records else "no integrations registered")
            return 0
        summary = load_bootstrap(store, args.file, wake=not args.no_wakeup)
        print(f"loaded {args.file}: {len(summary['created'])} created, {len(summary['refreshed'])} refreshed")
        for key, text in (
            ("still_deleted", "deleted earlier, left deleted"),
            ("without_customer_key", "no customer key"),
        ):
            if summary[key]:
                print(f"warning: {text}: {', '.join(summary[key])}", file=sys.stderr)
        return 0
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.dispose()


if __name__ == "__main__":
    sys.exit(main())
