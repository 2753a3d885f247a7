"""Where the package catalog comes from: the team's SQL file on the warehouse, or a YAML file.

Both sources produce the same table, one row per (customer, package) entitlement, with the columns of
`CONTRACT_COLUMNS`. Nothing is validated here beyond the shape of the YAML file: the column contract is
checked in `kombo_sync.catalog.contract`, so both sources report bad rows the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

from kombo_sync.storable import read_yaml_file

log = logging.getLogger(__name__)

# The column contract of the catalog query (and of the flattened YAML file), in this order.
CONTRACT_COLUMNS: tuple[str, ...] = ("customer_key", "package_id", "type", "name", "description", "active")

# In catalog.yaml, an entitlement to "*" means every package the file defines.
ALL_PACKAGES = "*"


class CatalogSourceError(ValueError):
    """The catalog cannot be read at all (missing file, broken YAML, missing columns): nothing is sent."""


def read_catalog_sql(engine: Engine, sql_file: Path) -> pd.DataFrame:
    """Run the team's catalog query on the warehouse; the result keeps the query's own columns."""
    if not sql_file.exists():
        raise CatalogSourceError(f"catalog SQL file {sql_file} does not exist")
    try:
        query = sql_file.read_text(encoding="utf-8").strip().rstrip(";").strip()
    except UnicodeDecodeError as exc:
        raise CatalogSourceError(
            f"catalog SQL file {sql_file} is not UTF-8 text (byte {exc.start})"
        ) from None
    if not query:
        raise CatalogSourceError(f"catalog SQL file {sql_file} is empty")
    with engine.connect() as conn:
        # Run as written: no bind-parameter parsing, so `tool:xxx` in a literal or a comment is harmless;
        # drivers with %-placeholders (psycopg) get `%` escaped, so LIKE '%x' works too.
        if engine.dialect.paramstyle in ("format", "pyformat"):
            query = query.replace("%", "%%")
        result = conn.exec_driver_sql(query)
        columns = list(result.keys())
        import pandas as pd  # only where rows are read: the publish tasks never pay for it

        # Plain tuples: building a frame from Row objects probes each one for attributes (slow).
        frame = pd.DataFrame([tuple(row) for row in result], columns=columns, dtype=object)
    log.info("catalog query %s returned %s rows on %s", sql_file.name, len(frame), engine.dialect.name)
    return frame


def read_catalog_yaml(yaml_file: Path) -> pd.DataFrame:
    """Read `catalog.yaml` (`packages:` definitions and `entitlements:` per customer) into contract rows."""
    if not yaml_file.exists():
        raise CatalogSourceError(f"catalog YAML file {yaml_file} does not exist")
    try:
        document = read_yaml_file(yaml_file)
    except ValueError as exc:
        raise CatalogSourceError(f"catalog YAML file {yaml_file}: {exc}") from None
    frame = catalog_frame_from_mapping(document or {}, where=str(yaml_file))
    log.info("catalog file %s yields %s entitlement rows", yaml_file.name, len(frame))
    return frame


def catalog_frame_from_mapping(document: Any, *, where: str = "catalog") -> pd.DataFrame:
    """Flatten `{packages: [...], entitlements: {customer: [package ids]}}` into contract rows.

    A package id a customer is entitled to but the file does not define becomes a row with empty fields, so
    the contract check quarantines it like any other bad row (instead of the customer silently losing it).
    """
    if not isinstance(document, Mapping):
        raise CatalogSourceError(
            f"{where}: the top level must be a mapping with `packages` and `entitlements`"
        )
    packages = document.get("packages") or []
    entitlements = document.get("entitlements") or {}
    if not isinstance(packages, list):
        raise CatalogSourceError(f"{where}: `packages` must be a list of package definitions")
    if not isinstance(entitlements, Mapping):
        raise CatalogSourceError(
            f"{where}: `entitlements` must map each customer key to a list of package ids"
        )

    definitions: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for position, package in enumerate(packages, start=1):
        if not isinstance(package, Mapping) or package.get("id") in (None, ""):
            raise CatalogSourceError(f"{where}: packages[{position}] needs at least an `id`")
        package_id = str(package["id"])
        if package_id not in definitions:
            order.append(package_id)
        # A repeated id keeps its first definition; the contract check sees both and flags the conflict.
        definitions.setdefault(package_id, dict(package))
        if definitions[package_id] != dict(package):
            definitions[package_id] = {**definitions[package_id], "_conflict": dict(package)}

    rows: list[dict[str, Any]] = []
    for customer_key, entitled in entitlements.items():
        ids: Iterable[Any]
        if entitled == ALL_PACKAGES or entitled == [ALL_PACKAGES]:
            ids = order
        elif isinstance(entitled, list):
            ids = entitled
        else:
            raise CatalogSourceError(
                f"{where}: entitlements of customer {customer_key!r} must be a list of package ids or '*'"
            )
        for package_id in ids:
            definition = definitions.get(str(package_id), {})
            rows.append(_row(customer_key, package_id, definition))
            if "_conflict" in definition:
                rows.append(_row(customer_key, package_id, definition["_conflict"]))
    import pandas as pd

    return pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS), dtype=object)


def _row(customer_key: Any, package_id: Any, definition: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "customer_key": customer_key,
        "package_id": package_id,
        "type": definition.get("type"),
        "name": definition.get("name"),
        "description": definition.get("description"),
        # A package without `active` in the file is offered; the SQL contract has no such default.
        "active": definition.get("active", True) if definition else None,
    }
