"""Hostile catalog rows and catalog files: every bad row is reported with its row number and problem, never a
crash, and every good customer keeps exactly its good packages."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kombo_sync.catalog.contract import describe_bad_rows, package_list_hash, validate_catalog
from kombo_sync.catalog.source import (
    CONTRACT_COLUMNS,
    CatalogSourceError,
    catalog_frame_from_mapping,
    read_catalog_yaml,
)
from kombo_sync.state._util import to_jsonable
from kombo_sync.storable import storable_text, text_problem
from tests.support.fuzz import assert_enough, fuzz_settings, hostile_values, json_values, tried

pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisWarning"
)  # long reprs, on purpose
ROWS = "catalog rows: hostile cells mixed with good rows"
DOCUMENTS = "catalog YAML: hostile documents"
FILES = "catalog YAML: hostile bytes"


def good_row(customer: str, package: str) -> dict[str, Any]:
    return {
        "customer_key": customer,
        "package_id": package,
        "type": "SKILLS_TEST",
        "name": f"Package {package}",
        "description": "Timed coding test",
        "active": True,
    }


@fuzz_settings(max_examples=150)
@given(
    good_customers=st.integers(1, 3),
    bad=st.lists(
        st.dictionaries(st.sampled_from(CONTRACT_COLUMNS), hostile_values, min_size=1, max_size=3),
        min_size=1,
        max_size=4,
    ),
    data=st.data(),
)
@example(good_customers=1, bad=[{"customer_key": Decimal("1E+999999")}], data=None)  # hung expanding digits
@example(good_customers=1, bad=[{"name": bytearray(b"\xff")}], data=None)  # unhashable: TypeError
@example(good_customers=1, bad=[{"package_id": Decimal("1E+5000")}], data=None)  # ValueError: 4300 digits
@example(good_customers=1, bad=[{"customer_key": "\ud800"}], data=None)  # accepted, then hash failed
@example(good_customers=1, bad=[{"package_id": "a\x00b"}], data=None)  # accepted: PostgreSQL refuses NUL
def test_hostile_cells_are_reported_and_good_customers_keep_their_packages(good_customers, bad, data):
    tried(ROWS)
    good = [good_row(f"good-{c}", f"p{p}") for c in range(good_customers) for p in range(2)]
    bad_rows = [{**good_row(f"bad-{index}", "p0"), **changes} for index, changes in enumerate(bad)]
    for index, row in enumerate(bad_rows):
        if isinstance(row["customer_key"], str) and row["customer_key"].startswith("good-"):
            row["customer_key"] = f"bad-{index}"
    rows = good + bad_rows
    order = list(range(len(rows))) if data is None else data.draw(st.permutations(range(len(rows))))
    frame = pd.DataFrame([rows[index] for index in order], columns=list(CONTRACT_COLUMNS), dtype=object)

    catalog = validate_catalog(frame)  # must not raise: the columns are all there

    assert catalog.rows == len(rows)
    for customer in range(good_customers):
        packages = catalog.packages_for(f"good-{customer}")
        assert [package.id for package in packages] == ["p0", "p1"]
        assert f"good-{customer}" not in catalog.tainted
    for lines in catalog.packages_by_customer.values():  # every accepted list can be hashed and sent
        package_list_hash(lines)
        assert all(text_problem(value) is None for package in lines for value in package)
    reported = {bad_row.row_number for bad_row in catalog.bad_rows}
    for position, index in enumerate(order, start=1):
        if index >= len(good) and position not in reported:  # a "bad" row that happens to be valid
            row = rows[index]
            assert any(catalog.packages_by_customer.values()) or not row["active"]
    for bad_row in catalog.bad_rows:
        assert bad_row.problems and all(isinstance(problem, str) for problem in bad_row.problems)
        assert text_problem(storable_text(bad_row.reason)) is None
        json.dumps(to_jsonable(bad_row.row))  # the quarantine row can be written
    describe_bad_rows(catalog.bad_rows)


@fuzz_settings(max_examples=120)
@given(
    document=json_values
    | st.fixed_dictionaries(
        {"packages": st.lists(json_values | st.fixed_dictionaries({"id": json_values}), max_size=3)},
        optional={
            "entitlements": st.dictionaries(
                json_values.filter(lambda v: v is None or isinstance(v, str | int)), json_values, max_size=3
            )
        },
    )
)
def test_hostile_catalog_documents_are_refused_by_name_or_validated(document):
    tried(DOCUMENTS)
    try:
        frame = catalog_frame_from_mapping(document, where="catalog.yaml")
    except CatalogSourceError as exc:
        assert str(exc).startswith("catalog.yaml: ")
        return
    validate_catalog(frame)


@fuzz_settings(max_examples=80)
@given(
    body=st.binary(max_size=200)
    | st.sampled_from(
        [
            b"packages: [\n",
            b"\xff\xfe packages: []",
            b"packages: " + b"[" * 5000,
            b"packages:\n  - id: " + b"9" * 5000,
            b'packages:\n  - {id: "\\ud800", name: x}\nentitlements: {c: "*"}',
            b"a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
            b"!!python/object/apply:os.system ['true']",
        ]
    )
)
def test_hostile_catalog_files_are_refused_by_name_or_validated(tmp_path_factory, body):
    tried(FILES)
    path = Path(tmp_path_factory.mktemp("catalog")) / "catalog.yaml"
    path.write_bytes(body)
    try:
        frame = read_catalog_yaml(path)
    except CatalogSourceError as exc:
        assert str(path) in str(exc)
        return
    validate_catalog(frame)


@pytest.fixture(scope="module", autouse=True)
def _enough_examples():
    yield
    assert_enough(ROWS, 150)
    assert_enough(DOCUMENTS, 100)
    assert_enough(FILES, 80)
