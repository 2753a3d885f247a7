"""The catalog's column contract, checked with pandas (shape, normalisation, duplicates) and pydantic (values).

Each row is one entitlement: `customer_key, package_id, type, name, description, active`. A row that breaks the
contract is reported with its row number and every problem found, and quarantined; the customer it belongs to
is *tainted*, and the planner holds a tainted customer back when its list would change (so a bad row never
half-publishes a customer). Kombo's own rules are part of the contract: a non-empty id, name and description,
one of the five package types, and one definition per package id and customer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kombo_sync.catalog.source import CONTRACT_COLUMNS, CatalogSourceError
from kombo_sync.kombo.models import PACKAGE_TYPES

log = logging.getLogger(__name__)

SORTED_PACKAGE_TYPES = tuple(sorted(PACKAGE_TYPES))


class PackageDef(NamedTuple):
    """One package exactly as it is sent to Kombo (`PUT /assessment/packages`)."""

    id: str
    type: str
    name: str
    description: str

    def to_kombo(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type, "name": self.name, "description": self.description}


def package_list_hash(packages: Iterable[PackageDef]) -> str:
    """A stable hash of a package list: canonical JSON of the packages sorted by id, then SHA-256."""
    canonical = sorted((tuple(package) for package in packages), key=lambda item: item[0])
    payload = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _key_text(value: Any) -> Any:
    # Warehouses hand numeric keys back as int, or as float when the column has NULLs (36123.0).
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return value


class CatalogRow(BaseModel):
    """One entitlement row as the contract defines it (strings already stripped by the pandas step)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    customer_key: str = Field(min_length=1)
    package_id: str = Field(min_length=1)
    type: str
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    active: bool

    @field_validator("customer_key", "package_id", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        return _key_text(value)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        normalised = value.strip().upper()
        if normalised not in PACKAGE_TYPES:
            raise ValueError(f"type {value!r} is not one of Kombo's types {', '.join(SORTED_PACKAGE_TYPES)}")
        return normalised

    def package(self) -> PackageDef:
        return PackageDef(self.package_id, self.type, self.name, self.description)


@dataclass(frozen=True)
class BadRow:
    """A row that breaks the contract: where it is, whose it is (when known), and every problem found."""

    row_number: int  # 1-based position in the query result / flattened file
    customer_key: str | None
    package_id: str | None
    problems: tuple[str, ...]
    row: dict[str, Any]

    @property
    def reason(self) -> str:
        return f"row {self.row_number}: " + "; ".join(self.problems)

    @property
    def source_key(self) -> str:
        return f"{self.customer_key or '?'}/{self.package_id or '?'}"


@dataclass
class ValidatedCatalog:
    """The catalog after the contract check: the good lists, the bad rows, and the customers they taint."""

    packages_by_customer: dict[str, tuple[PackageDef, ...]]
    bad_rows: list[BadRow]
    rows: int
    inactive_rows: int = 0
    duplicate_rows: int = 0
    tainted: dict[str, list[BadRow]] = field(default_factory=dict)

    @property
    def unattributed_bad_rows(self) -> list[BadRow]:
        """Bad rows without a usable customer key: nobody can be held back for them."""
        return [bad for bad in self.bad_rows if bad.customer_key is None]

    def packages_for(self, customer_key: str) -> tuple[PackageDef, ...]:
        """The customer's active packages sorted by id; no entitlement rows means no packages."""
        return self.packages_by_customer.get(customer_key, ())


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    missing = [column for column in CONTRACT_COLUMNS if column not in frame.columns]
    if missing:
        raise CatalogSourceError(
            f"the catalog is missing column(s) {', '.join(missing)}; the contract is "
            f"{', '.join(CONTRACT_COLUMNS)} (found {', '.join(map(str, frame.columns)) or 'no columns'})"
        )
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise CatalogSourceError(f"the catalog has column(s) {', '.join(duplicated)} more than once")
    frame = frame.loc[:, list(CONTRACT_COLUMNS)].astype(object)
    for column in ("customer_key", "package_id", "type", "name", "description"):
        values = frame[column]
        is_text = values.map(lambda value: isinstance(value, str))
        # Blank stays "" (not NULL) so the report says "is empty" rather than "is missing".
        frame[column] = values.where(~is_text, values[is_text].str.strip())
    frame["active"] = frame["active"].map(lambda value: value.strip() if isinstance(value, str) else value)
    return frame.astype(object).where(frame.notna(), None)


def _describe(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else "row"
    value = error.get("input")
    if value is None or error.get("type") == "missing":
        return f"{name} is missing"
    kind = str(error.get("type", ""))
    if kind == "string_too_short":
        return f"{name} is empty"
    if kind.startswith("bool"):
        return f"{name} must be true or false, not {value!r}"
    if kind == "value_error":
        return str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{name} {error.get('msg', 'is invalid')} (got {value!r})"


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        else:
            item = getattr(value, "item", None)
            out[key] = item() if callable(item) else str(value)
    return out


def _text_or_none(value: Any) -> str | None:
    value = _key_text(value)
    return value if isinstance(value, str) and value else None


def validate_catalog(frame: pd.DataFrame) -> ValidatedCatalog:
    """Check every row against the contract; raises `CatalogSourceError` only when a column is missing."""
    frame = _normalise(frame)
    records: list[dict[str, Any]] = frame.to_dict("records")
    good: list[tuple[int, CatalogRow]] = []
    bad: list[BadRow] = []
    for number, record in enumerate(records, start=1):
        try:
            good.append((number, CatalogRow.model_validate(record)))
        except ValidationError as exc:
            problems = tuple(dict.fromkeys(_describe(error) for error in exc.errors()))
            bad.append(
                BadRow(
                    number,
                    _text_or_none(record.get("customer_key")),
                    _text_or_none(record.get("package_id")),
                    problems,
                    _jsonable(record),
                )
            )

    # Kombo needs unique package ids per integration: repeats that agree collapse, repeats that disagree
    # are all bad, since nobody can tell which definition the customer should see.
    groups: dict[tuple[str, str], list[tuple[int, CatalogRow]]] = defaultdict(list)
    for number, row in good:
        groups[(row.customer_key, row.package_id)].append((number, row))
    lists: dict[str, list[PackageDef]] = defaultdict(list)
    inactive = duplicates = 0
    for (customer_key, package_id), members in groups.items():
        variants = {(row.type, row.name, row.description, row.active) for _, row in members}
        if len(variants) > 1:
            numbers = ", ".join(str(number) for number, _ in members)
            problem = (
                f"package_id {package_id!r} appears {len(members)} times for customer {customer_key!r} "
                f"with different definitions (rows {numbers})"
            )
            for number, row in members:
                bad.append(
                    BadRow(number, customer_key, package_id, (problem,), _jsonable(records[number - 1]))
                )
            continue
        duplicates += len(members) - 1
        row = members[0][1]
        lists.setdefault(customer_key, [])
        if row.active:
            lists[customer_key].append(row.package())
        else:
            inactive += 1

    bad.sort(key=lambda item: item.row_number)
    tainted: dict[str, list[BadRow]] = defaultdict(list)
    for item in bad:
        if item.customer_key is not None:
            tainted[item.customer_key].append(item)
    result = ValidatedCatalog(
        packages_by_customer={
            customer: tuple(sorted(packages, key=lambda package: package.id))
            for customer, packages in lists.items()
        },
        bad_rows=bad,
        rows=len(records),
        inactive_rows=inactive,
        duplicate_rows=duplicates,
        tainted=dict(tainted),
    )
    log.info(
        "catalog contract: %s rows, %s customers, %s bad rows (%s customers affected), %s inactive, "
        "%s identical repeats",
        result.rows,
        len(result.packages_by_customer),
        len(bad),
        len(result.tainted),
        inactive,
        duplicates,
    )
    return result


def describe_bad_rows(bad_rows: Sequence[BadRow], limit: int = 20) -> list[str]:
    """Human-readable lines for logs and summaries (the first `limit`)."""
    lines = [f"{bad.reason} (customer {bad.customer_key or '?'}, package {bad.package_id or '?'})" for bad in bad_rows[:limit]]
    if len(bad_rows) > limit:
        lines.append(f"... and {len(bad_rows) - limit} more")
    return lines
