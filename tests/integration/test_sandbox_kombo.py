"""The Kombo sandbox over real HTTP: auth, envelopes, paging, validation, the OPEN-only rule, knobs, admin API
and signed webhooks. The contract is docs/kombo/openapi-assessment.json."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.testing import KomboSandbox, WebhookRecorder

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PDF_BASE64 = base64.b64encode(b"%PDF-1.4 tiny report").decode()

VALID_RESULT: dict[str, Any] = {
    "status": "COMPLETED",
    "score": 90,
    "max_score": 100,
    "result_url": "https://platform.example.com/results/1",
    "completed_at": "2026-04-04T00:00:00.000Z",
    "attributes": [
        {"type": "TEXT", "label": "Role fit", "value": "Excellent"},
        {
            "type": "SUB_RESULT",
            "id": "logic",
            "label": "Logical reasoning",
            "score": {"value": 17, "max": 20},
            "status": "COMPLETED",
        },
    ],
    "attachments": [{"name": "Report.pdf", "content_type": "application/pdf", "data": PDF_BASE64}],
}


def expected_signature(body: bytes, secret: str) -> str:
    """Computed here independently of the sandbox: HMAC-SHA256, base64url, no padding (API.md 3.1)."""
    mac = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert set(body["error"]) == {"code", "title", "message", "log_url"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["log_url"].startswith("http")
    return body["error"]


@pytest.fixture
def integration_id(kombo_sandbox: KomboSandbox) -> str:
    return str(kombo_sandbox.admin.create_integration(tool="workday")["id"])


@pytest.fixture
def api(kombo_sandbox: KomboSandbox, integration_id: str) -> Any:
    with kombo_sandbox.client(integration_id) as client:
        yield client


def all_pages(client: httpx.Client, path: str, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert set(data) == {"next", "results"}
        pages.append(data["results"])
        cursor = data["next"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "paging does not end"


# auth and envelopes


def test_check_api_key_and_authentication(kombo_sandbox: KomboSandbox) -> None:
    ok = httpx.get(f"{kombo_sandbox.api_url}/check-api-key", headers=kombo_sandbox.headers())
    assert ok.status_code == 200
    body = ok.json()
    assert body["status"] == "success"
    assert body["data"]["environment_id"] and body["data"]["customer_id"] == body["data"]["environment_id"]

    for headers in (
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {kombo_sandbox.api_key}"},
    ):
        error = assert_error(
            httpx.get(f"{kombo_sandbox.api_url}/check-api-key", headers=headers),
            401,
            "PLATFORM.AUTHENTICATION_INVALID",
        )
        # log_url points at the sandbox's own record of this request.
        logged = httpx.get(error["log_url"]).json()
        assert logged["path"] == "/v1/check-api-key" and logged["status"] == 401


def test_assessment_endpoints_need_a_known_active_integration(
    kombo_sandbox: KomboSandbox, integration_id: str
) -> None:
    url = f"{kombo_sandbox.api_url}/assessment/packages"
    assert_error(httpx.get(url, headers=kombo_sandbox.headers()), 400, "PLATFORM.INPUT_INVALID")
    assert_error(
        httpx.get(url, headers=kombo_sandbox.headers("workday:doesnotexist")),
        404,
        "PLATFORM.INTEGRATION_NOT_FOUND",
    )
    assert_error(
        httpx.get(url, headers={"X-Integration-Id": integration_id}), 401, "PLATFORM.AUTHENTICATION_INVALID"
    )
    assert httpx.get(url, headers=kombo_sandbox.headers(integration_id)).status_code == 200

    kombo_sandbox.admin.set_integration_state(integration_id, status="INACTIVE")
    assert_error(httpx.get(url, headers=kombo_sandbox.headers(integration_id)), 403, "INTEGRATION.INACTIVE")
    kombo_sandbox.admin.set_integration_state(integration_id, status="ACTIVE")
    assert httpx.get(url, headers=kombo_sandbox.headers(integration_id)).status_code == 200


def test_integration_details_have_the_full_shape(kombo_sandbox: KomboSandbox) -> None:
    created = kombo_sandbox.admin.create_integration(
        tool="greenhouse",
        organization_name="Globex",
        creator_email="ops@globex.example.com",
        origin_id="cust-42",
    )
    assert re.fullmatch(r"greenhouse:[A-Za-z0-9]{24}", created["id"])
    response = httpx.get(
        f"{kombo_sandbox.api_url}/integrations/{created['id']}", headers=kombo_sandbox.headers()
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {
        "id", "tool", "category", "status", "setup_status", "end_user", "scope_config",
        "data_expired_at", "created_at", "beta", "read_models", "write_actions",
    }  # fmt: skip
    assert set(data["tool"]) == {"id", "label", "internal_label", "logo_url", "icon_url"}
    assert data["tool"]["id"] == "greenhouse" and data["category"] == "ASSESSMENT"
    assert data["end_user"] == {
        "organization_name": "Globex",
        "creator_email": "ops@globex.example.com",
        "origin_id": "cust-42",
    }
    assert TIMESTAMP_RE.match(data["created_at"])
    assert_error(
        httpx.get(f"{kombo_sandbox.api_url}/integrations/greenhouse:nope", headers=kombo_sandbox.headers()),
        404,
        "PLATFORM.INTEGRATION_NOT_FOUND",
    )


def test_delete_integration_checks_a_body_against_kombos_schema(kombo_sandbox: KomboSandbox) -> None:
    """The body of `DELETE /integrations/{id}` is optional; one that is sent must be what the OpenAPI declares."""
    first, second = (kombo_sandbox.admin.create_integration(tool="workday")["id"] for _ in range(2))
    headers = {**kombo_sandbox.headers(), "Content-Type": "application/json"}
    with httpx.Client(base_url=kombo_sandbox.api_url, headers=headers, timeout=10.0) as client:
        refused = client.request("DELETE", f"/integrations/{first}", content=b'["not", "an", "object"]')
        error = assert_error(refused, 400, "PLATFORM.INPUT_INVALID")
        assert "Kombo's schema" in error["message"]
        assert client.get(f"/integrations/{first}").status_code == 200  # not deleted
        assert client.request("DELETE", f"/integrations/{first}", content=b"{}").status_code == 200
        assert client.delete(f"/integrations/{second}").status_code == 200  # no body at all
    for deleted in (first, second):
        assert_error(
            httpx.get(f"{kombo_sandbox.api_url}/integrations/{deleted}", headers=kombo_sandbox.headers()),
            404,
            "PLATFORM.INTEGRATION_NOT_FOUND",
        )


def test_unknown_v1_route_answers_with_the_error_envelope(kombo_sandbox: KomboSandbox) -> None:
    response = httpx.get(f"{kombo_sandbox.api_url}/assessment/nothing-here", headers=kombo_sandbox.headers())
    assert_error(response, 404, None)


# packages


def test_packages_are_replaced_in_full_and_keep_updated_at(
    api: httpx.Client, kombo_sandbox: KomboSandbox
) -> None:
    first = [
        {"id": "pkg-ts", "type": "SKILLS_TEST", "name": "TypeScript", "description": "Coding"},
        {"id": "pkg-video", "type": "VIDEO_INTERVIEW", "name": "Video", "description": "Interview"},
    ]
    response = api.put("/assessment/packages", json={"packages": first})
    assert response.status_code == 200
    assert response.json() == {"status": "success", "data": {}, "warnings": []}
    listed = api.get("/assessment/packages").json()["data"]["packages"]
    assert sorted(package["id"] for package in listed) == ["pkg-ts", "pkg-video"]
    assert all(TIMESTAMP_RE.match(package["updated_at"]) for package in listed)
    assert set(listed[0]) == {"id", "name", "description", "updated_at", "type"}
    ts_updated_at = next(p["updated_at"] for p in listed if p["id"] == "pkg-ts")

    time.sleep(0.01)
    second = [
        {**first[0]},
        {"id": "pkg-bg", "type": "BACKGROUND_CHECK", "name": "Background", "description": "BG"},
    ]
    response = api.put("/assessment/packages", json={"packages": second})
    assert response.status_code == 200
    warnings = response.json()["warnings"]
    assert len(warnings) == 1 and "pkg-video" in warnings[0]["message"]
    listed = {p["id"]: p for p in api.get("/assessment/packages").json()["data"]["packages"]}
    assert set(listed) == {"pkg-ts", "pkg-bg"}
    assert listed["pkg-ts"]["updated_at"] == ts_updated_at  # unchanged package
    assert listed["pkg-bg"]["updated_at"] > ts_updated_at

    history = kombo_sandbox.admin.package_history(api.headers["X-Integration-Id"])
    assert history["puts"] == 2 and [p["id"] for p in history["deleted"]] == ["pkg-video"]

    assert api.put("/assessment/packages", json={"packages": []}).status_code == 200
    assert api.get("/assessment/packages").json()["data"]["packages"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"packages": [{"id": "a", "type": "QUIZ", "name": "n", "description": "d"}]},
        {"packages": [{"id": "a", "name": "n", "description": "d"}]},
        {"packages": [{"id": "a", "type": "SKILLS_TEST", "name": "", "description": "d"}]},
        {"packages": [{"id": "", "type": "SKILLS_TEST", "name": "n", "description": "d"}]},
        {"packages": [{"id": "a", "type": "SKILLS_TEST", "name": "n"}]},
        {
            "packages": [
                {"id": "a", "type": "SKILLS_TEST", "name": "n", "description": "d"},
                {"id": "a", "type": "BEHAVIORAL", "name": "m", "description": "e"},
            ]
        },
        {"packages": "a"},
        {},
    ],
)
def test_invalid_packages_are_rejected_and_change_nothing(api: httpx.Client, body: dict[str, Any]) -> None:
    keep = [{"id": "keep", "type": "REFERENCE_CHECK", "name": "Refs", "description": "References"}]
    assert api.put("/assessment/packages", json={"packages": keep}).status_code == 200
    assert_error(api.put("/assessment/packages", json=body), 400, "PLATFORM.INPUT_INVALID")
    assert [p["id"] for p in api.get("/assessment/packages").json()["data"]["packages"]] == ["keep"]


def test_packages_reject_a_body_that_is_not_json(api: httpx.Client) -> None:
    response = api.put(
        "/assessment/packages", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "PLATFORM.INPUT_INVALID")


# orders: listing and paging


@pytest.fixture
def seven_orders(kombo_sandbox: KomboSandbox, integration_id: str) -> list[dict[str, Any]]:
    """Seven orders one minute apart (the 4th and 6th cancelled), plus one of another integration."""
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    orders = [
        kombo_sandbox.admin.create_order(
            integration_id, "pkg-ts", created_at=start + timedelta(minutes=minute), deliver_webhook=False
        )
        for minute in range(7)
    ]
    for index in (3, 5):
        kombo_sandbox.admin.cancel_order(orders[index]["id"])
    other = kombo_sandbox.admin.create_integration(tool="lever")["id"]
    kombo_sandbox.admin.create_order(other, "pkg-ts", created_at=start, deliver_webhook=False)
    return orders


def test_orders_page_through_everything_in_creation_order(
    api: httpx.Client, seven_orders: list[dict[str, Any]]
) -> None:
    pages = all_pages(api, "/assessment/orders", {"page_size": 3})
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [order for page in pages for order in page]
    assert [order["id"] for order in listed] == [order["id"] for order in seven_orders]
    first = listed[0]
    assert set(first) == {"id", "package_id", "status", "candidate", "application", "job"}
    assert set(first["candidate"]) == {"remote_id", "email", "first_name", "last_name", "phone"}
    assert set(first["job"]) >= {"remote_id", "name", "job_code", "description", "location", "hiring_team"}
    assert [order["status"] for order in listed].count("CANCELLED") == 2


def test_orders_filter_by_status_over_several_pages(
    api: httpx.Client, seven_orders: list[dict[str, Any]]
) -> None:
    pages = all_pages(api, "/assessment/orders", {"page_size": 2, "statuses": "OPEN"})
    assert [len(page) for page in pages] == [2, 2, 1]
    assert {order["status"] for page in pages for order in page} == {"OPEN"}
    both = all_pages(api, "/assessment/orders", {"page_size": 1, "statuses": "CANCELLED,REJECTED"})
    assert [order["id"] for page in both for order in page] == [seven_orders[3]["id"], seven_orders[5]["id"]]
    assert len(both) == 2


def test_orders_filter_by_ids_over_several_pages(
    api: httpx.Client, seven_orders: list[dict[str, Any]]
) -> None:
    wanted = [seven_orders[index]["id"] for index in (6, 0, 4, 2)]
    pages = all_pages(api, "/assessment/orders", {"page_size": 1, "ids": ",".join(wanted)})
    assert len(pages) == 4
    assert [order["id"] for page in pages for order in page] == [seven_orders[i]["id"] for i in (0, 2, 4, 6)]
    unknown = api.get("/assessment/orders", params={"ids": "nope1,nope2"}).json()["data"]
    assert unknown == {"next": None, "results": []}


def test_orders_filter_by_created_after_is_inclusive(
    api: httpx.Client, seven_orders: list[dict[str, Any]]
) -> None:
    pages = all_pages(
        api, "/assessment/orders", {"page_size": 1, "created_after": "2026-03-01T09:03:00.000Z"}
    )
    assert len(pages) == 4
    assert [order["id"] for page in pages for order in page] == [o["id"] for o in seven_orders[3:]]
    for form in ("2026-03-01T09:03:00Z", "2026-03-01T09:03:00", "2026-03-01T09:03:00.000000Z"):
        results = api.get("/assessment/orders", params={"created_after": form}).json()["data"]["results"]
        assert len(results) == 4, form
    assert (
        len(api.get("/assessment/orders", params={"created_after": "2026-03-02"}).json()["data"]["results"])
        == 0
    )


def test_orders_with_the_same_created_at_are_ordered_by_id(
    kombo_sandbox: KomboSandbox, api: httpx.Client, integration_id: str
) -> None:
    ids = kombo_sandbox.admin.bulk_create_orders(
        integration_id, 9, created_at_start="2026-01-01T00:00:00Z", created_at_step_ms=0
    )
    pages = all_pages(api, "/assessment/orders", {"page_size": 4})
    assert [order["id"] for page in pages for order in page] == sorted(ids)


def test_default_page_size_is_100(
    kombo_sandbox: KomboSandbox, api: httpx.Client, integration_id: str
) -> None:
    kombo_sandbox.admin.bulk_create_orders(integration_id, 101)
    data = api.get("/assessment/orders").json()["data"]
    assert len(data["results"]) == 100 and data["next"]
    rest = api.get("/assessment/orders", params={"cursor": data["next"]}).json()["data"]
    assert len(rest["results"]) == 1 and rest["next"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": "0"},
        {"page_size": "251"},
        {"page_size": "ten"},
        {"statuses": "OPEN,DONE"},
        {"created_after": "yesterday"},
        {"created_after": "2026-03-01T09:00:00+02:00"},
        {"created_after": "2026-13-01T09:00:00Z"},
        {"cursor": "not-a-cursor"},
    ],
)
def test_invalid_order_queries_are_input_invalid(api: httpx.Client, params: dict[str, str]) -> None:
    assert_error(api.get("/assessment/orders", params=params), 400, "PLATFORM.INPUT_INVALID")


def test_a_cursor_only_works_with_the_same_filters(
    api: httpx.Client, seven_orders: list[dict[str, Any]]
) -> None:
    cursor = api.get("/assessment/orders", params={"page_size": 2, "statuses": "OPEN"}).json()["data"]["next"]
    assert cursor
    ok = api.get("/assessment/orders", params={"page_size": 2, "statuses": "OPEN", "cursor": cursor})
    assert ok.status_code == 200
    changed = api.get(
        "/assessment/orders", params={"page_size": 2, "statuses": "CANCELLED", "cursor": cursor}
    )
    assert "filters" in assert_error(changed, 400, "PLATFORM.INPUT_INVALID")["message"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    assert_error(
        api.get("/assessment/orders", params={"statuses": "OPEN", "cursor": tampered}),
        400,
        "PLATFORM.INPUT_INVALID",
    )


def test_deprecated_open_orders_endpoint(api: httpx.Client, seven_orders: list[dict[str, Any]]) -> None:
    pages = all_pages(api, "/assessment/orders/open", {"page_size": 2})
    listed = [order for page in pages for order in page]
    assert len(pages) == 3
    assert [order["id"] for order in listed] == [
        o["id"] for i, o in enumerate(seven_orders) if i not in (3, 5)
    ]
    assert all("status" not in order for order in listed)
    assert_error(api.get("/assessment/orders/open", params={"page_size": 500}), 400, "PLATFORM.INPUT_INVALID")


# results


@pytest.fixture
def open_order(kombo_sandbox: KomboSandbox, integration_id: str) -> str:
    return str(kombo_sandbox.admin.create_order(integration_id, "pkg-ts", deliver_webhook=False)["id"])


def test_result_write_is_stored_and_only_open_orders_change(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str
) -> None:
    path = f"/assessment/orders/{open_order}/result"
    response = api.put(path, json=VALID_RESULT)
    assert response.status_code == 200
    assert response.json() == {"status": "success", "data": {}, "warnings": []}
    order = kombo_sandbox.admin.get_order(open_order)
    assert order["status"] == "COMPLETED" and order["result"] == VALID_RESULT
    assert [write["outcome"] for write in order["results"]] == ["applied"]
    assert TIMESTAMP_RE.match(order["results"][0]["at"])

    # The identical payload again (e.g. after a lost response): accepted, nothing changes.
    again = api.put(path, json=VALID_RESULT)
    assert again.status_code == 200 and again.json()["warnings"]
    # A different status on a non-OPEN order: an error with a code.
    error = assert_error(
        api.put(path, json={**VALID_RESULT, "status": "CANCELLED"}), 400, "PLATFORM.INPUT_INVALID"
    )
    assert "OPEN" in error["message"]
    order = kombo_sandbox.admin.get_order(open_order)
    assert order["status"] == "COMPLETED"
    assert [write["outcome"] for write in order["results"]] == ["applied", "noop"]

    # Same status, different details: recorded, so a test can see two different payloads were written.
    assert api.put(path, json={**VALID_RESULT, "score": 91}).status_code == 200
    applied = [
        w["body"]["score"]
        for w in kombo_sandbox.admin.get_order(open_order)["results"]
        if w["outcome"] == "applied"
    ]
    assert applied == [90, 91]


def test_result_write_to_an_order_cancelled_in_the_ats_fails(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str
) -> None:
    kombo_sandbox.admin.cancel_order(open_order)
    assert_error(
        api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT), 400, "PLATFORM.INPUT_INVALID"
    )
    cancelled = {**VALID_RESULT, "status": "CANCELLED"}
    assert api.put(f"/assessment/orders/{open_order}/result", json=cancelled).status_code == 200
    assert kombo_sandbox.admin.get_order(open_order)["status"] == "CANCELLED"


def test_result_write_to_an_unknown_or_foreign_order_fails(
    api: httpx.Client, kombo_sandbox: KomboSandbox
) -> None:
    assert_error(api.put("/assessment/orders/nope/result", json=VALID_RESULT), 404, "PLATFORM.INPUT_INVALID")
    other = kombo_sandbox.admin.create_integration(tool="lever")["id"]
    foreign = kombo_sandbox.admin.create_order(other, "pkg", deliver_webhook=False)["id"]
    assert_error(
        api.put(f"/assessment/orders/{foreign}/result", json=VALID_RESULT), 404, "PLATFORM.INPUT_INVALID"
    )
    assert kombo_sandbox.admin.get_order(foreign)["status"] == "OPEN"


def test_result_write_to_an_integration_with_invalid_credentials_fails(
    api: httpx.Client, kombo_sandbox: KomboSandbox, integration_id: str, open_order: str
) -> None:
    kombo_sandbox.admin.set_integration_state(integration_id, status="INVALID")
    response = api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT)
    assert_error(response, 403, "INTEGRATION.AUTHENTICATION_INVALID")
    assert kombo_sandbox.admin.get_order(open_order)["status"] == "OPEN"


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID_RESULT.items() if k != key}


def _sub_result(**changes: Any) -> dict[str, Any]:
    sub = {
        "type": "SUB_RESULT",
        "id": "s",
        "label": "S",
        "score": {"value": 1, "max": 10},
        "status": "COMPLETED",
    }
    return {**VALID_RESULT, "attributes": [{**sub, **changes}]}


def _attachment(**fields: Any) -> dict[str, Any]:
    return {**VALID_RESULT, "attachments": [{"name": "Report.pdf", **fields}]}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_without("status"), id="status missing"),
        pytest.param({**VALID_RESULT, "status": "COMPLETE"}, id="status COMPLETE"),
        pytest.param({**VALID_RESULT, "status": "REJECTED"}, id="status REJECTED"),
        pytest.param(_without("result_url"), id="result_url missing"),
        pytest.param({**VALID_RESULT, "result_url": "not a url"}, id="result_url not a URI"),
        pytest.param({**VALID_RESULT, "result_url": "https://"}, id="result_url without host"),
        pytest.param({**VALID_RESULT, "completed_at": "04/04/2026"}, id="completed_at format"),
        pytest.param({**VALID_RESULT, "completed_at": "2026-02-30T00:00:00Z"}, id="completed_at not a date"),
        pytest.param({**VALID_RESULT, "completed_at": "2026-04-04T00:00:00+00:00"}, id="completed_at offset"),
        pytest.param({**VALID_RESULT, "score": "90"}, id="score string"),
        pytest.param({**VALID_RESULT, "score": None}, id="score null"),
        pytest.param({**VALID_RESULT, "max_score": True}, id="max_score bool"),
        pytest.param({**VALID_RESULT, "attributes": {"type": "TEXT"}}, id="attributes object"),
        pytest.param(
            {**VALID_RESULT, "attributes": [{"type": "TEXT", "label": "x"}]}, id="TEXT without value"
        ),
        pytest.param(
            {**VALID_RESULT, "attributes": [{"key": "x", "value": "y"}]}, id="old key/value attribute"
        ),
        pytest.param(_sub_result(id=None), id="SUB_RESULT without id"),
        pytest.param(_sub_result(score={"value": 1, "max": 0}), id="SUB_RESULT max < 1"),
        pytest.param(_sub_result(score={"value": 1}), id="SUB_RESULT without max"),
        pytest.param(_sub_result(status="OPEN"), id="SUB_RESULT status OPEN"),
        pytest.param(_attachment(), id="attachment without data"),
        pytest.param(
            _attachment(data=PDF_BASE64, data_url="https://x.example/r.pdf", content_type="application/pdf"),
            id="attachment with both",
        ),
        pytest.param(_attachment(data=PDF_BASE64), id="data without content_type"),
        pytest.param(_attachment(data="SGk_dGhlcmU-", content_type="application/pdf"), id="base64url data"),
        pytest.param(_attachment(data="SGkgdGhlcmU", content_type="application/pdf"), id="unpadded base64"),
        pytest.param(_attachment(data=PDF_BASE64, content_type="pdf"), id="bad content_type"),
        pytest.param(_attachment(data_url="not a url"), id="data_url not a URI"),
        pytest.param(
            {**VALID_RESULT, "attachments": [{"data": PDF_BASE64, "content_type": "application/pdf"}]},
            id="attachment without name",
        ),
        pytest.param({**VALID_RESULT, "attachments": VALID_RESULT["attachments"] * 6}, id="six attachments"),
        pytest.param({**VALID_RESULT, "remote_fields": []}, id="remote_fields list"),
        # let through by the hand checks, refused by Kombo's OpenAPI schema
        pytest.param(
            {**VALID_RESULT, "remote_fields": {"smartrecruiters": "A"}},
            id="schema: remote_fields ATS not object",
        ),
        pytest.param(
            {**VALID_RESULT, "remote_fields": {"recruitee": {"subtitle": 5}}},
            id="schema: subtitle not string",
        ),
    ],
)
def test_invalid_results_are_rejected_and_not_applied(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str, body: dict[str, Any]
) -> None:
    assert_error(api.put(f"/assessment/orders/{open_order}/result", json=body), 400, "PLATFORM.INPUT_INVALID")
    order = kombo_sandbox.admin.get_order(open_order)
    assert order["status"] == "OPEN" and order["results"] == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"status": "COMPLETED", "result_url": "https://x.example/r"}, id="minimal"),
        pytest.param({**VALID_RESULT, "completed_at": "2026-04-04"}, id="date only"),
        pytest.param(
            _attachment(data_url="https://files.example.com/r.pdf"), id="data_url without content_type"
        ),
        pytest.param({**VALID_RESULT, "status": "OPEN"}, id="status OPEN"),
        pytest.param(
            {**VALID_RESULT, "remote_fields": {"smartrecruiters": {"scoreLabel": "A"}}}, id="remote_fields"
        ),
        pytest.param({**VALID_RESULT, "unknown_extra": 1}, id="extra top-level key"),
    ],
)
def test_valid_result_variants_are_accepted(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str, body: dict[str, Any]
) -> None:
    response = api.put(f"/assessment/orders/{open_order}/result", json=body)
    assert response.status_code == 200, response.text
    assert kombo_sandbox.admin.get_order(open_order)["status"] == body["status"]


def test_missing_completed_at_gives_a_warning(api: httpx.Client, open_order: str) -> None:
    response = api.put(f"/assessment/orders/{open_order}/result", json=_without("completed_at"))
    assert response.status_code == 200
    assert any("completed_at" in warning["message"] for warning in response.json()["warnings"])


def test_data_url_attachments_are_downloaded_when_asked(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str
) -> None:
    kombo_sandbox.admin.set_knobs(fetch_attachment_urls=True)
    missing = _attachment(data_url=f"{kombo_sandbox.url}/_sandbox/no-such-file.pdf")
    assert_error(
        api.put(f"/assessment/orders/{open_order}/result", json=missing), 400, "PLATFORM.INPUT_INVALID"
    )
    reachable = _attachment(data_url=f"{kombo_sandbox.url}/_sandbox/health")
    assert api.put(f"/assessment/orders/{open_order}/result", json=reachable).status_code == 200


# knobs


def test_rate_limit_answers_429_with_headers_and_resets(
    api: httpx.Client, kombo_sandbox: KomboSandbox
) -> None:
    kombo_sandbox.admin.set_knobs(rate_limit=3, rate_limit_window_seconds=1)
    remaining = []
    for _ in range(3):
        response = api.get("/assessment/packages")
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "3"
        assert 0 <= int(response.headers["ratelimit-reset"]) <= 1
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    limited = api.get("/assessment/packages")
    assert_error(limited, 429, "PLATFORM.RATE_LIMIT_EXCEEDED")
    assert limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["ratelimit-reset"]) in (0, 1)
    assert kombo_sandbox.admin.health()  # the admin API is never limited
    time.sleep(1.05)
    assert api.get("/assessment/packages").status_code == 200


def test_concurrency_cap_is_per_integration(kombo_sandbox: KomboSandbox, integration_id: str) -> None:
    kombo_sandbox.admin.set_knobs(concurrency_limit=2, latency_ms=800)
    other = kombo_sandbox.admin.create_integration(tool="lever")["id"]
    barrier = threading.Barrier(6)
    responses: list[tuple[str, httpx.Response]] = []
    lock = threading.Lock()

    def call(target: str) -> None:
        with kombo_sandbox.client(target) as client:
            barrier.wait()
            response = client.get("/assessment/packages")
        with lock:
            responses.append((target, response))

    threads = [threading.Thread(target=call, args=(integration_id,)) for _ in range(5)]
    threads.append(threading.Thread(target=call, args=(other,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mine = [response for target, response in responses if target == integration_id]
    assert sorted(r.status_code for r in mine) == [200, 200, 429, 429, 429]
    for response in mine:
        assert response.headers["Concurrency-Limit"] == "2"
        if response.status_code == 429:
            assert_error(response, 429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED")
            assert response.headers["Concurrency-Remaining"] == "0"
    assert [r.status_code for target, r in responses if target == other] == [200]
    stats = kombo_sandbox.admin.stats()
    assert stats["max_concurrency_by_integration"][integration_id] == 2
    assert stats["by_route"]["GET /v1/assessment/packages"]["429"] == 3


def test_error_knobs_answer_5xx_and_429(api: httpx.Client, kombo_sandbox: KomboSandbox) -> None:
    kombo_sandbox.admin.set_knobs(error_rate=1.0)
    assert_error(api.get("/assessment/packages"), 503, "REMOTE.SERVICE_UNAVAILABLE")
    assert kombo_sandbox.admin.health()  # faults never touch the admin API

    kombo_sandbox.admin.set_knobs(error_rate=0.0, bare_503_rate=1.0)
    bare = api.get("/assessment/packages")
    assert bare.status_code == 503 and bare.headers["content-type"].startswith("text/html")

    kombo_sandbox.admin.set_knobs(bare_503_rate=0.0, throttle_rate=1.0)
    assert_error(api.get("/assessment/packages"), 429, "PLATFORM.RATE_LIMIT_EXCEEDED")

    kombo_sandbox.admin.set_knobs(throttle_rate=1.0, fault_methods=["PUT"])
    assert api.get("/assessment/packages").status_code == 200
    assert api.put("/assessment/packages", json={"packages": []}).status_code == 429
    assert kombo_sandbox.admin.stats()["faults"]["throttle"] == 2


def test_fault_rates_are_random_but_reproducible_by_seed(
    api: httpx.Client, kombo_sandbox: KomboSandbox
) -> None:
    def run() -> list[int]:
        kombo_sandbox.admin.set_knobs(error_rate=0.3, throttle_rate=0.2, seed=42)
        return [api.get("/assessment/packages").status_code for _ in range(60)]

    first = run()
    assert 15 <= first.count(503) + first.count(429) <= 45
    assert set(first) == {200, 429, 503}
    assert run() == first


def test_timeout_hangs_without_applying(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str
) -> None:
    kombo_sandbox.admin.set_knobs(timeout_rate=1.0, timeout_hang_seconds=30)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT, timeout=0.3)
    assert time.monotonic() - started < 2
    assert kombo_sandbox.admin.get_order(open_order)["status"] == "OPEN"
    # The hang ends when the client gives up: nothing stays in flight.
    deadline = time.monotonic() + 3
    while kombo_sandbox.admin.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kombo_sandbox.admin.stats()["in_flight"] == 0
    assert kombo_sandbox.admin.requests(path_prefix="/v1/assessment/orders")[-1]["fault"] == "timeout"

    # A client that waits longer than the hang gets Kombo's timeout error; still nothing applied.
    kombo_sandbox.admin.set_knobs(timeout_hang_seconds=0.2)
    assert_error(
        api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT), 504, "PLATFORM.TASK_TIMED_OUT"
    )
    assert kombo_sandbox.admin.get_order(open_order)["results"] == []


def test_lost_response_applies_the_change_then_drops_the_reply(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str
) -> None:
    kombo_sandbox.admin.set_knobs(lost_response_rate=1.0)
    with pytest.raises(httpx.TransportError):
        api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT)
    order = kombo_sandbox.admin.get_order(open_order)
    assert order["status"] == "COMPLETED" and order["result"] == VALID_RESULT
    assert kombo_sandbox.admin.requests(path_prefix="/v1/assessment/orders")[-1]["fault"] == "lost_response"
    # The retry of the identical payload is a harmless no-op.
    kombo_sandbox.admin.set_knobs(lost_response_rate=0.0)
    assert api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT).status_code == 200
    assert [w["outcome"] for w in kombo_sandbox.admin.get_order(open_order)["results"]] == ["applied", "noop"]


def test_lost_response_in_hang_mode_times_out_after_applying(
    api: httpx.Client, kombo_sandbox: KomboSandbox, open_order: str
) -> None:
    kombo_sandbox.admin.set_knobs(lost_response_rate=1.0, lost_response_mode="hang", timeout_hang_seconds=30)
    with pytest.raises(httpx.ReadTimeout):
        api.put(f"/assessment/orders/{open_order}/result", json=VALID_RESULT, timeout=0.3)
    assert kombo_sandbox.admin.get_order(open_order)["status"] == "COMPLETED"


def test_latency_slows_the_api_but_not_the_admin(api: httpx.Client, kombo_sandbox: KomboSandbox) -> None:
    kombo_sandbox.admin.set_knobs(latency_ms="500-550")
    started = time.monotonic()
    assert api.get("/assessment/packages").status_code == 200
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    kombo_sandbox.admin.stats()
    assert time.monotonic() - started < 0.4
    knobs = kombo_sandbox.admin.get_knobs()
    assert (knobs["latency_min_ms"], knobs["latency_max_ms"]) == (500, 550)


def test_invalid_knobs_are_refused(kombo_sandbox: KomboSandbox) -> None:
    from sandbox.testing import SandboxAdminError

    for knobs in ({"error_rate": 1.5}, {"error_rate": 0.6, "timeout_rate": 0.6}, {"no_such_knob": 1}):
        with pytest.raises(SandboxAdminError) as raised:
            kombo_sandbox.admin.set_knobs(**knobs)
        assert raised.value.status_code == 422
    assert kombo_sandbox.admin.get_knobs()["error_rate"] == 0


# admin API


def test_admin_api_records_requests_and_counts(
    kombo_sandbox: KomboSandbox, api: httpx.Client, integration_id: str
) -> None:
    api.get("/assessment/packages")
    api.get("/assessment/orders", params={"statuses": "OPEN"})
    api.get("/assessment/orders", params={"statuses": "NOPE"})
    log = kombo_sandbox.admin.requests()
    assert [(entry["method"], entry["path"], entry["status"]) for entry in log] == [
        ("GET", "/v1/assessment/packages", 200),
        ("GET", "/v1/assessment/orders", 200),
        ("GET", "/v1/assessment/orders", 400),
    ]
    assert all(
        entry["integration_id"] == integration_id and TIMESTAMP_RE.match(entry["time"]) for entry in log
    )
    assert log[1]["query"] == "statuses=OPEN"
    assert kombo_sandbox.admin.requests(since=log[1]["seq"]) == log[2:]
    stats = kombo_sandbox.admin.stats()
    assert stats["by_route"]["GET /v1/assessment/orders"] == {"200": 1, "400": 1}
    assert stats["requests_total"] == 3 and stats["max_concurrency"] >= 1
    kombo_sandbox.admin.clear_requests()
    assert kombo_sandbox.admin.requests() == [] and kombo_sandbox.admin.stats()["requests_total"] == 0


def test_admin_manages_integrations_and_orders(kombo_sandbox: KomboSandbox) -> None:
    admin = kombo_sandbox.admin
    first = admin.create_integration(tool="workday", origin_id="c-1")["id"]
    second = admin.create_integration(tool="personio", status="INACTIVE", setup_status="INCOMPLETE")["id"]
    listed = {item["id"]: item for item in admin.list_integrations()}
    assert set(listed) == {first, second}
    assert (listed[second]["status"], listed[second]["setup_status"]) == ("INACTIVE", "INCOMPLETE")

    ids = admin.bulk_create_orders([first, second], 4, package_ids=["p1", "p2"])
    assert len(set(ids)) == 4
    assert [o["package_id"] for o in admin.list_orders(first)] == ["p1", "p1"]
    order = admin.create_order(
        first,
        "p9",
        order_id="fixed-order-id",
        candidate={"email": "c@example.com", "first_name": "Cleo"},
        job={"name": "Analyst"},
        created_at="2026-01-01T00:00:00Z",
        deliver_webhook=False,
    )
    assert order["id"] == "fixed-order-id" and order["created_at"] == "2026-01-01T00:00:00.000Z"
    assert order["candidate"] == {"remote_id": None, "email": "c@example.com", "first_name": "Cleo",
                                  "last_name": None, "phone": None}  # fmt: skip
    assert order["job"]["name"] == "Analyst" and order["job"]["hiring_team"] == []
    assert order["job"]["location"] is None
    admin.cancel_order("fixed-order-id")
    assert [o["id"] for o in admin.list_orders(statuses=["CANCELLED"])] == ["fixed-order-id"]

    admin.delete_integration(second)
    assert [item["id"] for item in admin.list_integrations()] == [first]
    assert_error(
        httpx.get(f"{kombo_sandbox.api_url}/integrations/{second}", headers=kombo_sandbox.headers()),
        404,
        "PLATFORM.INTEGRATION_NOT_FOUND",
    )
    assert admin.list_orders(second) == []

    admin.reset()
    assert admin.list_integrations() == [] and admin.list_orders() == []


# webhooks


def _verify(received: Any, secret: str) -> bool:
    return hmac.compare_digest(received.signature or "", expected_signature(received.body, secret))


def test_order_received_webhook_is_signed_and_complete(
    kombo_sandbox: KomboSandbox, webhook_recorder: WebhookRecorder, integration_id: str
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    first = kombo_sandbox.admin.create_order(integration_id, "pkg-ts")
    second = kombo_sandbox.admin.create_order(integration_id, "pkg-ts")
    assert first["webhook"]["status_code"] == 200 and first["status"] == "OPEN"
    assert len(webhook_recorder.received) == 2
    received = webhook_recorder.received[0]
    assert _verify(received, kombo_sandbox.webhook_secret)
    assert not _verify(received, "another-secret")
    assert received.headers["content-type"] == "application/json"
    event = received.json()
    assert set(event) == {"id", "type", "data"} and event["type"] == "assessment:order-received"
    assert event["id"] != webhook_recorder.received[1].json()["id"]
    data = event["data"]
    assert data["id"] == first["id"] and data["integration_id"] == integration_id and data["status"] == "OPEN"
    assert set(data["candidate"]) == {"remote_id", "email", "first_name", "last_name", "phone"}
    assert set(data["job"]) >= {"remote_id", "name", "job_code", "description", "location", "hiring_team"}
    assert second["webhook"]["event_id"] == webhook_recorder.received[1].json()["id"]


def test_422_order_rejected_rejects_the_order(
    kombo_sandbox: KomboSandbox, webhook_recorder: WebhookRecorder, api: httpx.Client, integration_id: str
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    webhook_recorder.respond_with(422, {"status": "ORDER_REJECTED", "message": "Candidate already tested"})
    order = kombo_sandbox.admin.create_order(integration_id, "pkg-ts")
    assert order["webhook"]["status_code"] == 422
    assert order["status"] == "REJECTED" and order["rejection_message"] == "Candidate already tested"
    rejected = api.get("/assessment/orders", params={"statuses": "REJECTED"}).json()["data"]["results"]
    assert [item["id"] for item in rejected] == [order["id"]]
    assert_error(
        api.put(f"/assessment/orders/{order['id']}/result", json=VALID_RESULT), 400, "PLATFORM.INPUT_INVALID"
    )


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (500, {"status": "ORDER_REJECTED", "message": "boom"}),
        (422, {"status": "ORDER_REJECTED", "message": "x", "extra": 1}),
        (422, {"status": "REJECTED", "message": "x"}),
        (422, {"message": "x"}),
        (422, "ORDER_REJECTED"),
        (400, {"status": "ORDER_REJECTED", "message": "x"}),
    ],
)
def test_other_webhook_answers_keep_the_order_open(
    kombo_sandbox: KomboSandbox,
    webhook_recorder: WebhookRecorder,
    integration_id: str,
    status: int,
    payload: Any,
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    webhook_recorder.respond_with(status, payload)
    order = kombo_sandbox.admin.create_order(integration_id, "pkg-ts")
    assert order["webhook"]["status_code"] == status
    assert kombo_sandbox.admin.get_order(order["id"])["status"] == "OPEN"


def test_an_unreachable_webhook_keeps_the_order_open(
    kombo_sandbox: KomboSandbox, integration_id: str
) -> None:
    kombo_sandbox.set_webhook("http://127.0.0.1:9/unreachable")
    order = kombo_sandbox.admin.create_order(integration_id, "pkg-ts")
    assert order["webhook"]["status_code"] is None and order["webhook"]["error"]
    assert order["status"] == "OPEN"


def test_redelivery_is_byte_identical_and_bad_signatures_fail(
    kombo_sandbox: KomboSandbox, webhook_recorder: WebhookRecorder, integration_id: str
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    order = kombo_sandbox.admin.create_order(integration_id, "pkg-ts")
    event_id = order["webhook"]["event_id"]
    again = kombo_sandbox.admin.redeliver_webhook(event_id)
    assert again["event_id"] == event_id and again["redelivery"] is True
    original, repeat = webhook_recorder.received
    assert repeat.body == original.body and repeat.signature == original.signature

    forged = kombo_sandbox.admin.redeliver_webhook(event_id, bad_signature=True)
    assert forged["bad_signature"] is True
    bad = webhook_recorder.received[-1]
    assert bad.body == original.body and not _verify(bad, kombo_sandbox.webhook_secret)
    history = [event for event in kombo_sandbox.admin.list_webhooks() if event["id"] == event_id]
    assert len(history[0]["deliveries"]) == 3


def test_webhook_secret_can_be_changed(
    kombo_sandbox: KomboSandbox, webhook_recorder: WebhookRecorder, integration_id: str
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url, secret="rotated-secret")
    kombo_sandbox.admin.send_webhook("assessment:order-received", integration_id=integration_id)
    assert _verify(webhook_recorder.received[-1], "rotated-secret")


def test_inline_assessment_returns_the_receivers_answer(
    kombo_sandbox: KomboSandbox, webhook_recorder: WebhookRecorder, integration_id: str
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    webhook_recorder.respond_with(200, {"assessment_url": "https://platform.example.com/a/123"})
    answer = kombo_sandbox.admin.send_webhook(
        "inline-assessment:order-received", integration_id=integration_id
    )
    assert answer["status_code"] == 200
    assert answer["json"] == {"assessment_url": "https://platform.example.com/a/123"}
    assert answer["order"]["inline_assessment_url"] == "https://platform.example.com/a/123"
    event = webhook_recorder.received[-1].json()
    assert (
        event["type"] == "inline-assessment:order-received" and event["data"]["id"] == answer["order"]["id"]
    )
    assert _verify(webhook_recorder.received[-1], kombo_sandbox.webhook_secret)


def test_integration_lifecycle_webhooks(
    kombo_sandbox: KomboSandbox, webhook_recorder: WebhookRecorder
) -> None:
    kombo_sandbox.set_webhook(webhook_recorder.webhook_url)
    created = kombo_sandbox.admin.create_integration(tool="smartrecruiters", origin_id="cust-7")
    kombo_sandbox.admin.set_integration_state(created["id"], status="INVALID")
    kombo_sandbox.admin.delete_integration(created["id"])
    events = [received.json() for received in webhook_recorder.received]
    assert [event["type"] for event in events] == [
        "integration-created",
        "integration-state-changed",
        "integration-deleted",
    ]
    assert all(_verify(received, kombo_sandbox.webhook_secret) for received in webhook_recorder.received)
    assert events[0]["data"] == {
        "id": created["id"],
        "tool": "smartrecruiters",
        "category": "ASSESSMENT",
        "end_user": {
            "organization_name": "Acme Inc.",
            "creator_email": "it-admin@acme.example.com",
            "origin_id": "cust-7",
        },
    }
    changed = events[1]["data"]
    assert changed["state"] == "INVALID" and changed["integration_id"] == created["id"]
    assert set(changed) == {
        "integration_tool", "integration_id", "integration_category", "end_user",
        "qa_status", "setup_status", "state", "updated_at",
    }  # fmt: skip
    assert TIMESTAMP_RE.match(events[2]["data"]["deleted_at"])
    assert len({event["id"] for event in events}) == 3


def test_no_webhook_without_a_url_unless_asked(kombo_sandbox: KomboSandbox, integration_id: str) -> None:
    assert kombo_sandbox.admin.create_order(integration_id, "pkg")["webhook"] is None
    from sandbox.testing import SandboxAdminError

    with pytest.raises(SandboxAdminError) as raised:
        kombo_sandbox.admin.create_order(integration_id, "pkg", deliver_webhook=True)
    assert raised.value.status_code == 400
