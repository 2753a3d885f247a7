"""The Kombo sandbox checks request bodies against Kombo's own OpenAPI document as well as by hand
(`sandbox.kombo_validation`): what breaks the schema is refused naming the field, what the schema allows passes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.kombo_validation import (
    OPENAPI_PATH,
    InputInvalid,
    request_body_validator,
    validate_against_openapi,
    validate_packages,
    validate_result,
)

PACKAGES = ("PUT", "/assessment/packages")
RESULT = ("PUT", "/assessment/orders/{assessment_order_id}/result")
DELETE_INTEGRATION = ("DELETE", "/integrations/{integration_id}")

VALID_PACKAGES = {
    "packages": [{"id": "p1", "type": "SKILLS_TEST", "name": "TypeScript", "description": "TS"}]
}
VALID_RESULT: dict[str, Any] = {
    "status": "COMPLETED",
    "result_url": "https://platform.example.com/results/1",
    "completed_at": "2026-04-04T00:00:00.000Z",
    "score": 90,
    "max_score": 100,
    "attributes": [
        {"type": "TEXT", "label": "Role fit", "value": "Excellent"},
        {
            "type": "SUB_RESULT",
            "id": "l",
            "label": "Logic",
            "score": {"value": 17, "max": 20},
            "status": "COMPLETED",
        },
    ],
    "attachments": [{"name": "Report.pdf", "data_url": "https://files.example.com/r.pdf"}],
    "remote_fields": {"smartrecruiters": {"scoreLabel": "A"}, "recruitee": {"subtitle": "Top"}},
}


def _openapi_request_bodies() -> list[tuple[str, str, Any]]:
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body:
                examples = body["content"]["application/json"].get("examples", {})
                found += [(method.upper(), path, example["value"]) for example in examples.values()]
                found += [(method.upper(), path, None)] if not examples else []
    return found


def test_every_request_body_in_the_openapi_resolves_and_its_examples_pass() -> None:
    bodies = _openapi_request_bodies()
    assert {(method, path) for method, path, _ in bodies} == {PACKAGES, RESULT, DELETE_INTEGRATION}
    for method, path, example in bodies:
        validator = request_body_validator(method, path)  # resolves the $ref into components
        if example is not None:
            assert list(validator.iter_errors(example)) == []


@pytest.mark.parametrize(
    ("route", "valid", "broken", "field"),
    [
        pytest.param(PACKAGES, VALID_PACKAGES, {"packages": [{"id": "p1"}]}, "packages[0]", id="packages"),
        pytest.param(
            RESULT,
            VALID_RESULT,
            {**VALID_RESULT, "attributes": [{"type": "SUB_RESULT", "id": "l", "label": "Logic"}]},
            "attributes[0]",
            id="result",
        ),
        pytest.param(DELETE_INTEGRATION, {}, ["not", "an", "object"], None, id="delete integration"),
    ],
)
def test_each_route_refuses_what_breaks_its_schema_and_accepts_what_fits(
    route: tuple[str, str], valid: Any, broken: Any, field: str | None
) -> None:
    validate_against_openapi(valid, *route)
    with pytest.raises(InputInvalid, match="does not match Kombo's schema") as refused:
        validate_against_openapi(broken, *route)
    assert (
        (f"`{field}`" in str(refused.value)) if field else str(refused.value).startswith("The request body")
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            {**VALID_RESULT, "remote_fields": {"smartrecruiters": "A"}}, "remote_fields.smartrecruiters"
        ),
        pytest.param(
            {**VALID_RESULT, "remote_fields": {"recruitee": {"subtitle": 5}}},
            "remote_fields.recruitee.subtitle",
        ),
    ],
)
def test_the_result_schema_catches_what_the_hand_checks_let_through(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InputInvalid, match=f"`{field}` does not match Kombo's schema"):
        validate_result(body)


def test_valid_bodies_pass_both_layers() -> None:
    assert validate_packages(VALID_PACKAGES) == VALID_PACKAGES["packages"]
    assert validate_result(VALID_RESULT) == []


def test_the_hand_checks_keep_their_friendlier_messages() -> None:
    with pytest.raises(InputInvalid, match=r"^`packages\[0\].type` must be one of"):
        validate_packages({"packages": [{"id": "a", "type": "QUIZ", "name": "n", "description": "d"}]})
    with pytest.raises(InputInvalid, match=r"^`status` is required\.$"):
        validate_result({"result_url": "https://x.example/r"})
