"""The demo warehouse's catalog tables (`include/sql/warehouse_catalog_schema.sql`): create and fill them.

Used by the demo, the tests and the benchmark; a real warehouse has its own tables and only the catalog
query's columns are a contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from kombo_sync.settings import PROJECT_ROOT

SCHEMA_FILE = PROJECT_ROOT / "include" / "sql" / "warehouse_catalog_schema.sql"


def sql_statements(text: str) -> list[str]:
    """The statements of a plain DDL file (no semicolons inside literals), comments removed."""
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def create_catalog_tables(engine: Engine, schema_file: Path = SCHEMA_FILE) -> None:
    """Create `catalog_packages` and `catalog_entitlements` if they do not exist."""
    with engine.begin() as conn:
        for statement in sql_statements(schema_file.read_text()):
            conn.exec_driver_sql(statement)


def write_catalog_tables(
    engine: Engine,
    packages: Iterable[Mapping[str, Any]],
    entitlements: Mapping[str, Iterable[str]],
    *,
    replace: bool = True,
) -> None:
    """Fill the demo tables: `packages` rows (package_id, type, name, description, active) and
    `entitlements` as customer key -> package ids. `replace` empties both tables first."""
    metadata = sa.MetaData()
    package_table = sa.Table("catalog_packages", metadata, autoload_with=engine)
    entitlement_table = sa.Table("catalog_entitlements", metadata, autoload_with=engine)
    package_rows = [
        {
            "package_id": package["package_id"],
            "type": package["type"],
            "name": package["name"],
            "description": package["description"],
            "active": bool(package.get("active", True)),
        }
        for package in packages
    ]
    entitlement_rows = [
        {"customer_key": customer_key, "package_id": package_id}
        for customer_key, package_ids in entitlements.items()
        for package_id in package_ids
    ]
    with engine.begin() as conn:
        if replace:
            conn.execute(sa.delete(entitlement_table))
            conn.execute(sa.delete(package_table))
        if package_rows:
            conn.execute(sa.insert(package_table), package_rows)
        if entitlement_rows:
            conn.execute(sa.insert(entitlement_table), entitlement_rows)
