"""The fidelity test: Kombo's official Python SDK (`kombo`), pointed at the sandbox, works unchanged.

Every call below goes through the SDK's own request building and response models, so a field the sandbox
leaves out, misnames or mistypes makes the SDK raise instead of returning.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombo import Kombo, errors

from sandbox.testing import KomboSandbox

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def integration_id(kombo_sandbox: KomboSandbox) -> str:
    return str(kombo_sandbox.admin.create_integration(tool="workday")["id"])


@pytest.fixture
def sdk(kombo_sandbox: KomboSandbox, integration_id: str) -> Any:
    with Kombo(
        api_key=kombo_sandbox.api_key, integration_id=integration_id, server_url=kombo_sandbox.api_url
    ) as sdk:
        yield sdk


@pytest.fixture
def orders(kombo_sandbox: KomboSandbox, integration_id: str) -> list[str]:
    """Seven orders ten seconds apart; the 2nd and 5th cancelled in the ATS."""
    ids = [
        kombo_sandbox.admin.create_order(
            integration_id,
            "pkg-ts",
            created_at=START + timedelta(seconds=10 * n),
            candidate={
                "email": f"c{n}@example.com",
                "first_name": "C",
                "last_name": str(n),
                "phone": "+49 30 1",
            },
            job={
                "remote_id": f"job-{n}",
                "name": "Engineer",
                "location": {"city": "Berlin", "country": "DE"},
                "hiring_team": [
                    {
                        "remote_id": "hm",
                        "email": "hm@acme.example.com",
                        "first_name": "H",
                        "last_name": "M",
                        "hiring_team_roles": ["HIRING_MANAGER", "RECRUITER"],
                    }
                ],
            },
            deliver_webhook=False,
        )["id"]
        for n in range(7)
    ]
    for index in (1, 4):
        kombo_sandbox.admin.cancel_order(ids[index])
    return ids


def sdk_pages(first: Any) -> list[list[Any]]:
    pages = []
    page = first
    while page is not None:
        pages.append(list(page.result.data.results))
        page = page.next()
        assert len(pages) < 50
    return pages


def test_general_endpoints_parse(sdk: Kombo, integration_id: str) -> None:
    checked = sdk.general.check_api_key()
    assert checked.STATUS == "success" and checked.data.environment_id
    details = sdk.general.get_integration_details(integration_id=integration_id)
    assert details.data.id == integration_id
    assert details.data.tool.id == "workday" and details.data.category == "ASSESSMENT"
    assert details.data.status == "ACTIVE" and details.data.end_user.organization_name == "Acme Inc."


def test_sdk_sets_and_gets_packages(sdk: Kombo, kombo_sandbox: KomboSandbox, integration_id: str) -> None:
    packages = [
        {"id": "pkg-ts", "type": "SKILLS_TEST", "name": "TypeScript", "description": "Coding test"},
        {"id": "pkg-ref", "type": "REFERENCE_CHECK", "name": "References", "description": "Two referees"},
    ]
    response = sdk.assessment.set_packages(packages=packages)
    assert response.STATUS == "success" and response.warnings == []
    got = sdk.assessment.get_packages()
    assert sorted((p.id, p.type, p.name) for p in got.data.packages) == [
        ("pkg-ref", "REFERENCE_CHECK", "References"),
        ("pkg-ts", "SKILLS_TEST", "TypeScript"),
    ]
    assert all(isinstance(p.updated_at, datetime) for p in got.data.packages)

    dropped = sdk.assessment.set_packages(packages=packages[:1])
    assert [w.message for w in dropped.warnings] and "pkg-ref" in dropped.warnings[0].message
    assert [p["id"] for p in kombo_sandbox.admin.list_packages(integration_id)] == ["pkg-ts"]


def test_sdk_pages_through_orders_with_next(sdk: Kombo, orders: list[str]) -> None:
    pages = sdk_pages(sdk.assessment.get_assessment_orders(page_size=3))
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [order for page in pages for order in page]
    assert [order.id for order in listed] == orders
    first = listed[0]
    assert first.status == "OPEN" and first.candidate.email == "c0@example.com"
    assert first.job.location is not None and first.job.location.city == "Berlin"
    assert first.job.hiring_team[0].hiring_team_roles == ["HIRING_MANAGER", "RECRUITER"]


def test_sdk_filters_by_status(sdk: Kombo, orders: list[str]) -> None:
    pages = sdk_pages(sdk.assessment.get_assessment_orders(page_size=2, statuses=["OPEN"]))
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [o.id for page in pages for o in page] == [orders[i] for i in (0, 2, 3, 5, 6)]
    cancelled = sdk_pages(
        sdk.assessment.get_assessment_orders(page_size=1, statuses=["CANCELLED", "REJECTED"])
    )
    assert [o.id for page in cancelled for o in page] == [orders[1], orders[4]]


def test_sdk_filters_by_ids(sdk: Kombo, orders: list[str]) -> None:
    wanted = [orders[6], orders[0], orders[3]]
    pages = sdk_pages(sdk.assessment.get_assessment_orders(page_size=1, ids=wanted))
    assert len(pages) == 3
    assert [o.id for page in pages for o in page] == [orders[0], orders[3], orders[6]]


def test_sdk_filters_by_created_after(sdk: Kombo, orders: list[str]) -> None:
    since = START + timedelta(seconds=30)
    pages = sdk_pages(sdk.assessment.get_assessment_orders(page_size=2, created_after=since))
    assert [len(page) for page in pages] == [2, 2]
    assert [o.id for page in pages for o in page] == orders[3:]
    combined = sdk_pages(
        sdk.assessment.get_assessment_orders(
            page_size=1, created_after=since, statuses=["OPEN"], ids=orders[:5]
        )
    )
    assert [o.id for page in combined for o in page] == [orders[3]]


def test_sdk_uses_an_explicit_cursor(sdk: Kombo, orders: list[str]) -> None:
    first = sdk.assessment.get_assessment_orders(page_size=4)
    cursor = first.result.data.next
    assert cursor
    second = sdk.assessment.get_assessment_orders(page_size=4, cursor=cursor)
    assert [o.id for o in second.result.data.results] == orders[4:]
    assert second.result.data.next is None and second.next() is None


def test_sdk_updates_a_result(sdk: Kombo, kombo_sandbox: KomboSandbox, orders: list[str]) -> None:
    report = base64.b64encode(b"%PDF-1.4 report").decode()
    response = sdk.assessment.update_order_result(
        assessment_order_id=orders[0],
        status="COMPLETED",
        result_url="https://platform.example.com/results/0",
        completed_at=datetime(2026, 5, 2, 8, 30, tzinfo=UTC),
        score=81.5,
        max_score=100,
        attributes=[
            {"type": "TEXT", "label": "Role fit", "value": "High"},
            {
                "type": "SUB_RESULT",
                "id": "logic",
                "label": "Logic",
                "score": {"value": 17, "max": 20},
                "status": "COMPLETED",
            },
        ],
        attachments=[{"name": "Report.pdf", "content_type": "application/pdf", "data": report}],
        remote_fields={"smartrecruiters": {"score_label": "B+"}},
    )
    assert response.STATUS == "success" and response.warnings == []
    stored = kombo_sandbox.admin.get_order(orders[0])
    assert stored["status"] == "COMPLETED"
    body = stored["result"]
    assert body["score"] == 81.5 and body["attributes"][1]["score"] == {"value": 17, "max": 20}
    assert body["completed_at"].startswith("2026-05-02T08:30:00")
    assert body["remote_fields"] == {"smartrecruiters": {"scoreLabel": "B+"}}

    cancelled = sdk.assessment.update_order_result(
        assessment_order_id=orders[2], status="CANCELLED", result_url="https://platform.example.com/results/2"
    )
    assert cancelled.STATUS == "success" and cancelled.warnings  # completed_at missing: a warning


def test_sdk_parses_sandbox_errors(sdk: Kombo, kombo_sandbox: KomboSandbox, orders: list[str]) -> None:
    with pytest.raises(errors.KomboAtsError) as raised:
        sdk.assessment.update_order_result(
            assessment_order_id=orders[1], status="COMPLETED", result_url="https://platform.example.com/r/1"
        )
    assert raised.value.data.error.code == "PLATFORM.INPUT_INVALID"
    assert raised.value.data.error.log_url and raised.value.raw_response.status_code == 400

    with Kombo(api_key="wrong", integration_id="workday:x", server_url=kombo_sandbox.api_url) as wrong:
        with pytest.raises(errors.KomboAtsError) as unauthorized:
            wrong.assessment.get_packages()
        assert unauthorized.value.data.error.code == "PLATFORM.AUTHENTICATION_INVALID"
        with pytest.raises(errors.KomboGeneralError) as general:
            wrong.general.check_api_key()
        assert general.value.data.error.code == "PLATFORM.AUTHENTICATION_INVALID"

    kombo_sandbox.admin.set_knobs(rate_limit=1, rate_limit_window_seconds=60)
    sdk.assessment.get_packages()
    with pytest.raises(errors.KomboAtsError) as limited:
        sdk.assessment.get_packages()
    assert limited.value.data.error.code == "PLATFORM.RATE_LIMIT_EXCEEDED"
    assert limited.value.raw_response.headers["ratelimit-remaining"] == "0"
