"""The catalog column contract: every bad value is named with its row, good rows survive, hashes are stable."""

from __future__ import annotations

import pandas as pd
import pytest

from kombo_sync.catalog.contract import PackageDef, package_list_hash, validate_catalog
from kombo_sync.catalog.source import CONTRACT_COLUMNS, CatalogSourceError, catalog_frame_from_mapping


def row(customer="c1", package="p1", type_="SKILLS_TEST", name="Name", description="Desc", active=True):
    return {
        "customer_key": customer,
        "package_id": package,
        "type": type_,
        "name": name,
        "description": description,
        "active": active,
    }


def frame(*rows):
    return pd.DataFrame(list(rows), columns=list(CONTRACT_COLUMNS), dtype=object)


def test_good_rows_become_sorted_lists_per_customer():
    catalog = validate_catalog(
        frame(row(package="b"), row(package="a", type_="behavioral"), row(customer="c2", package="a"))
    )
    assert catalog.bad_rows == []
    assert [package.id for package in catalog.packages_for("c1")] == ["a", "b"]
    # the type is normalised to Kombo's spelling
    assert catalog.packages_for("c1")[0] == PackageDef("a", "BEHAVIORAL", "Name", "Desc")
    assert catalog.packages_for("unknown") == ()


def test_missing_column_fails_the_whole_catalog_and_names_it():
    broken = frame(row()).drop(columns=["description", "type"])
    with pytest.raises(CatalogSourceError, match="missing column\\(s\\) type, description"):
        validate_catalog(broken)


def test_column_names_are_matched_case_insensitively():
    upper = frame(row()).rename(columns=str.upper)
    assert validate_catalog(upper).packages_for("c1")


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (row(type_="SKILL"), "type 'SKILL' is not one of Kombo's types"),
        (row(type_=None), "type is missing"),
        (row(name="   "), "name is empty"),
        (row(description=None), "description is missing"),
        (row(active="maybe"), "active must be true or false, not 'maybe'"),
        (row(active=None), "active is missing"),
        (row(package=""), "package_id is empty"),
    ],
)
def test_each_bad_value_is_named_with_its_row(bad, problem):
    catalog = validate_catalog(frame(row(package="ok"), bad))
    assert len(catalog.bad_rows) == 1
    assert catalog.bad_rows[0].row_number == 2
    assert problem in catalog.bad_rows[0].reason
    assert catalog.bad_rows[0].reason.startswith("row 2: ")
    # the good row of the same customer is kept, and the customer is marked as affected
    assert [package.id for package in catalog.packages_for("c1")] == ["ok"]
    assert "c1" in catalog.tainted


def test_several_problems_of_one_row_are_all_reported():
    catalog = validate_catalog(frame(row(type_="X", name="", description=None)))
    reason = catalog.bad_rows[0].reason
    assert "type 'X'" in reason and "name is empty" in reason and "description is missing" in reason


def test_row_without_customer_key_taints_nobody():
    catalog = validate_catalog(frame(row(customer=None), row(customer="c2")))
    assert [bad.row_number for bad in catalog.unattributed_bad_rows] == [1]
    assert catalog.tainted == {}
    assert catalog.packages_for("c2")


def test_numeric_keys_from_a_warehouse_are_text():
    catalog = validate_catalog(frame(row(customer=36123), row(customer=36124.0, package=7)))
    assert catalog.bad_rows == []
    assert catalog.packages_for("36123") and catalog.packages_for("36124")[0].id == "7"


def test_active_accepts_warehouse_booleans_and_inactive_rows_are_left_out():
    catalog = validate_catalog(
        frame(row(package="a", active=1), row(package="b", active=0), row(package="c", active="false"))
    )
    assert [package.id for package in catalog.packages_for("c1")] == ["a"]
    assert catalog.inactive_rows == 2


def test_only_inactive_rows_mean_an_empty_list():
    catalog = validate_catalog(frame(row(active=False)))
    assert catalog.packages_for("c1") == ()
    assert "c1" in catalog.packages_by_customer


def test_identical_repeats_collapse_but_conflicting_repeats_are_bad():
    catalog = validate_catalog(
        frame(
            row(package="same"),
            row(package="same"),
            row(package="clash", name="One"),
            row(package="clash", name="Two"),
        )
    )
    assert [package.id for package in catalog.packages_for("c1")] == ["same"]
    assert catalog.duplicate_rows == 1
    assert [bad.row_number for bad in catalog.bad_rows] == [3, 4]
    assert (
        "appears 2 times for customer 'c1' with different definitions (rows 3, 4)"
        in catalog.bad_rows[0].reason
    )


def test_hash_is_order_independent_and_sensitive_to_every_field():
    first = PackageDef("a", "SKILLS_TEST", "A", "d")
    second = PackageDef("b", "BEHAVIORAL", "B", "d")
    assert package_list_hash([first, second]) == package_list_hash([second, first])
    assert package_list_hash([]) == package_list_hash(())
    for changed in (
        first._replace(type="BEHAVIORAL"),
        first._replace(name="A2"),
        first._replace(description="d2"),
        first._replace(id="a2"),
    ):
        assert package_list_hash([changed, second]) != package_list_hash([first, second])
    # stored in the database: the value must not change between releases (sha256 of canonical JSON)
    assert package_list_hash([first]) == "cb980ab565d18b490a645c40800a80af3d0f53915cf3c6f3e5e76e6359bc64ab"


def test_yaml_mapping_flattens_star_and_reports_undefined_packages():
    document = {
        "packages": [
            {"id": "a", "type": "SKILLS_TEST", "name": "A", "description": "d"},
            {"id": "b", "type": "BEHAVIORAL", "name": "B", "description": "d", "active": False},
        ],
        "entitlements": {"all": "*", "some": ["a", "ghost"], 36123: ["a"]},
    }
    catalog = validate_catalog(catalog_frame_from_mapping(document))
    assert [package.id for package in catalog.packages_for("all")] == ["a"]
    assert [package.id for package in catalog.packages_for("36123")] == ["a"]
    assert len(catalog.bad_rows) == 1
    bad = catalog.bad_rows[0]
    assert (bad.customer_key, bad.package_id) == ("some", "ghost")
    assert "type is missing" in bad.reason


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "top level must be a mapping"),
        ({"packages": {"a": 1}}, "`packages` must be a list"),
        ({"entitlements": ["a"]}, "`entitlements` must map"),
        ({"packages": [{"name": "no id"}]}, "needs at least an `id`"),
        ({"entitlements": {"c": "a"}}, "must be a list of package ids or '\\*'"),
    ],
)
def test_yaml_structure_errors_stop_everything(document, message):
    with pytest.raises(CatalogSourceError, match=message):
        catalog_frame_from_mapping(document)


def test_empty_catalog_is_valid_and_empty():
    catalog = validate_catalog(frame())
    assert catalog.rows == 0 and catalog.packages_by_customer == {} and catalog.bad_rows == []


def test_odd_cell_values_are_reported_not_crashed_on():
    from decimal import Decimal

    catalog = validate_catalog(
        frame(
            row(customer=Decimal("36123")),
            row(customer="  ", package="x"),
            row(package="y", name=["a", "list"]),
        )
    )
    assert catalog.packages_for("36123")
    reasons = {bad.row_number: bad for bad in catalog.bad_rows}
    assert "customer_key is empty" in reasons[2].reason and reasons[2].customer_key is None
    assert reasons[3].reason.startswith("row 3: name ") and reasons[3].row["name"] == "['a', 'list']"


def test_whitespace_variants_of_one_definition_are_the_same_package():
    catalog = validate_catalog(frame(row(name="Name "), row(name=" Name")))
    assert catalog.bad_rows == [] and catalog.duplicate_rows == 1


def test_a_catalog_of_only_bad_rows_reports_each_and_publishes_nothing():
    catalog = validate_catalog(frame(row(type_="X"), row(customer="c2", name=None), row(customer=None)))
    assert [bad.row_number for bad in catalog.bad_rows] == [1, 2, 3]
    assert catalog.packages_by_customer == {}
    assert set(catalog.tainted) == {"c1", "c2"}
