"""The catalog's column contract, checked with pandas (shape, normalisation, duplicates) and pydantic (values).

Each row is one entitlement: `customer_key, package_id, type, name, description, active`. A row that breaks the
contract is reported with its row number and every problem found, and quarantined; the customer it belongs to
is *tainted*, and the planner holds a tainted customer back when its list would change (so a bad row never
half-publishes a customer). Kombo's own rules are part of the contract: a non-empty id, name and description,
one of the five package types, and one definition per package id and customer.

Over 400 lines on purpose: the whole column contract (every column's rule and Kombo's) reads in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from kombo_sync.catalog.source import CONTRACT_COLUMNS, CatalogSourceError
from kombo_sync.kombo.models import PACKAGE_TYPES
from kombo_sync.storable import text_problem

if TYPE_CHECKING:
    import pandas as pd

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


# Longer numbers are no key anyone writes: left as they are, the contract rejects them (and turning 1E+999999
# into digits would take minutes).
_MAX_NUMERIC_KEY = 10**30


def _key_text(value: Any) -> Any:
    # Warehouses hand numeric keys back as int, Decimal, or float when the column has NULLs (36123.0).
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return str(int(value)) if abs(int(value)) < _MAX_NUMERIC_KEY else value
    finite = (
        value.is_finite() if isinstance(value, Decimal) else isinstance(value, float) and math.isfinite(value)
    )
    if finite and abs(value) < _MAX_NUMERIC_KEY:
        return str(int(value)) if value == int(value) else str(value)
    return value


def _shown(value: Any, limit: int = 200) -> str:
    """A value quoted in a problem: its repr, cut short (a bad cell may be megabytes or nested absurdly)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Opaque:
    """A list or mapping found in a cell: hashable for grouping, still rejected by the contract."""

    def __init__(self, value: Any) -> None:
        self.text = _shown(value, 1000)

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Opaque) and other.text == self.text

    def __repr__(self) -> str:
        return self.text


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return _Opaque(value)
    return value


def _storable(value: str, info: ValidationInfo) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(f"{info.field_name} {problem}")
    return value


class PackageRow(BaseModel):
    """The package half of a row: what Kombo receives, plus `active` (strings are stripped)."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    package_id: str = Field(min_length=1)
    type: str
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    active: bool

    @field_validator("package_id", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        return _key_text(value)

    @field_validator("package_id", "name", "description")
    @classmethod
    def _storable_text(cls, value: str, info: ValidationInfo) -> str:
        return _storable(value, info)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        normalised = value.strip().upper()
        if normalised not in PACKAGE_TYPES:
            raise ValueError(
                f"type {_shown(value)} is not one of Kombo's types {', '.join(SORTED_PACKAGE_TYPES)}"
            )
        return normalised

    def package(self) -> PackageDef:
        return PackageDef(self.package_id, self.type, self.name, self.description)


class CustomerRow(BaseModel):
    """The customer half of a row."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    customer_key: str = Field(min_length=1)

    @field_validator("customer_key", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        return _key_text(value)

    @field_validator("customer_key")
    @classmethod
    def _storable_text(cls, value: str, info: ValidationInfo) -> str:
        return _storable(value, info)


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


def _contract_columns(frame: pd.DataFrame) -> pd.DataFrame:
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
    frame = frame.where(frame.notna(), None).reset_index(drop=True)
    for column in CONTRACT_COLUMNS:
        values = frame[column]
        nested = values.map(lambda value: _hashable(value) is not value)
        if nested.any():
            frame[column] = values.map(_hashable)
    return frame


def _describe(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else "row"
    value = error.get("input")
    if value is None or error.get("type") == "missing":
        return f"{name} is missing"
    kind = str(error.get("type", ""))
    if kind == "string_too_short":
        return f"{name} is empty"
    if kind.startswith("bool"):
        return f"{name} must be true or false, not {_shown(value)}"
    if kind == "value_error":
        return str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{name} {error.get('msg', 'is invalid')} (got {_shown(value)})"


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, _Opaque):
            out[key] = value.text
        else:
            item = getattr(value, "item", None)
            out[key] = item() if callable(item) else str(value)
    return out


def _text_or_none(value: Any) -> str | None:
    value = _key_text(value)
    return value.strip() or None if isinstance(value, str) else None


def _problems(model: type[BaseModel], record: Mapping[str, Any]) -> tuple[BaseModel | None, tuple[str, ...]]:
    try:
        return model.model_validate(record), ()
    except ValidationError as exc:
        return None, tuple(dict.fromkeys(_describe(error) for error in exc.errors()))


_PACKAGE_COLUMNS = ["package_id", "type", "name", "description", "active"]


def validate_catalog(frame: pd.DataFrame) -> ValidatedCatalog:
    """Check every row against the contract; raises `CatalogSourceError` only when a column is missing.

    A catalog repeats the same package definitions and customer keys many times (1,000 customers x 50 shared
    packages is 50,000 rows but a few hundred definitions), so pydantic validates each distinct value once and
    pandas maps the verdicts back onto the rows.
    """
    # Imported here, where rows are read: the publish tasks use this module's PackageDef without them.
    import numpy as np
    import pandas as pd

    frame = _contract_columns(frame)
    rows = len(frame)
    # Group ids of identical raw values (None included); one pydantic validation per group.
    def_group = frame.groupby(_PACKAGE_COLUMNS, dropna=False, sort=False).ngroup().to_numpy()
    key_group = frame.groupby("customer_key", dropna=False, sort=False).ngroup().to_numpy()
    first_def = frame.assign(_g=def_group).drop_duplicates("_g").sort_values("_g")
    first_key = frame.assign(_g=key_group).drop_duplicates("_g").sort_values("_g")

    definitions: list[tuple[PackageDef, bool] | None] = []
    def_problems: list[tuple[str, ...]] = []
    for record in first_def[_PACKAGE_COLUMNS].to_dict("records"):
        model, problems = _problems(PackageRow, record)
        definitions.append(None if model is None else (model.package(), model.active))  # type: ignore[attr-defined]
        def_problems.append(problems)
    keys: list[str | None] = []
    key_problems: list[tuple[str, ...]] = []
    for record in first_key[["customer_key"]].to_dict("records"):
        model, problems = _problems(CustomerRow, record)
        keys.append(None if model is None else model.customer_key)  # type: ignore[attr-defined]
        key_problems.append(problems)

    def_ok = (
        np.array([item is not None for item in definitions], dtype=bool)[def_group]
        if rows
        else np.array([], bool)
    )
    key_ok = (
        np.array([item is not None for item in keys], dtype=bool)[key_group] if rows else np.array([], bool)
    )
    bad_positions = np.flatnonzero(~(def_ok & key_ok))

    bad: list[BadRow] = []
    for position in bad_positions:
        problems = key_problems[key_group[position]] + def_problems[def_group[position]]
        record = frame.iloc[position].to_dict()
        definition = definitions[def_group[position]]
        bad.append(
            BadRow(
                int(position) + 1,
                keys[key_group[position]] or _text_or_none(record.get("customer_key")),
                definition[0].id if definition else _text_or_none(record.get("package_id")),
                problems,
                _jsonable(record),
            )
        )

    # Good rows: (customer, definition). Kombo needs unique package ids per integration: repeats that agree
    # collapse, repeats that disagree are all bad, since nobody can tell which one the customer should see.
    good_positions = np.flatnonzero(def_ok & key_ok)
    canonical: dict[tuple[PackageDef, bool], int] = {}
    canonical_of_group = np.array(
        [-1 if item is None else canonical.setdefault(item, len(canonical)) for item in definitions],
        dtype=np.int64,
    )
    canonical_items = list(canonical)
    good = pd.DataFrame(
        {
            "position": good_positions,
            "customer": np.array(keys, dtype=object)[key_group[good_positions]] if rows else [],
            "definition": canonical_of_group[def_group[good_positions]] if rows else [],
        }
    )
    good["package_id"] = [canonical_items[index][0].id for index in good["definition"]]
    per_package = good.groupby(["customer", "package_id"], sort=False)["definition"]
    variants = per_package.transform("nunique")
    conflicting = good[variants > 1]
    for (customer, package_id), members in conflicting.groupby(["customer", "package_id"], sort=False):
        numbers = [int(position) + 1 for position in members["position"]]
        problem = (
            f"package_id {package_id!r} appears {len(numbers)} times for customer {customer!r} "
            f"with different definitions (rows {', '.join(map(str, numbers))})"
        )
        for position in members["position"]:
            bad.append(
                BadRow(
                    int(position) + 1,
                    customer,
                    package_id,
                    (problem,),
                    _jsonable(frame.iloc[position].to_dict()),
                )
            )
    consistent = good[variants <= 1].drop_duplicates(["customer", "package_id"])
    duplicates = int((variants <= 1).sum()) - len(consistent)
    active_flags = np.array([item[1] for item in canonical_items], dtype=bool)
    is_active = active_flags[consistent["definition"].to_numpy()] if len(consistent) else np.array([], bool)
    inactive = int((~is_active).sum())

    lists: dict[str, list[PackageDef]] = {customer: [] for customer in good["customer"].unique()}
    for customer, definition in zip(
        consistent["customer"][is_active], consistent["definition"][is_active], strict=True
    ):
        lists[customer].append(canonical_items[definition][0])

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
        rows=rows,
        inactive_rows=inactive,
        duplicate_rows=duplicates,
        tainted=dict(tainted),
    )
    log.info(
        "catalog contract: %s rows (%s distinct packages, %s customers), %s bad rows (%s customers affected), "
        "%s inactive, %s identical repeats",
        rows,
        len(definitions),
        len(result.packages_by_customer),
        len(bad),
        len(result.tainted),
        inactive,
        duplicates,
    )
    return result


def describe_bad_rows(bad_rows: Sequence[BadRow], limit: int = 20) -> list[str]:
    """Human-readable lines for logs and summaries (the first `limit`)."""
    lines = [
        f"{bad.reason} (customer {bad.customer_key or '?'}, package {bad.package_id or '?'})"
        for bad in bad_rows[:limit]
    ]
    if len(bad_rows) > limit:
        lines.append(f"... and {len(bad_rows) - limit} more")
    return lines
