"""The platform stand-in over real HTTP: idempotent invitations, knobs, simulated candidates, the warehouse."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sandbox import warehouse
from sandbox.platform_app import PlatformSettings, is_no_show
from sandbox.testing import PlatformStandin, run_platform_standin


def invitation(order_id: str | None = "order-1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": order_id,
        "integration_id": "workday:abc",
        "package_id": "pkg-ts",
        "candidate": {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
        "job": {"name": "Engineer"},
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def post(
    platform: PlatformStandin, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{platform.url}/api/invitations",
        json=body,
        headers={**platform.headers(), **(headers or {})},
        timeout=10,
    )


def invite_many(platform: PlatformStandin, count: int) -> list[str]:
    order_ids = [f"order-{n:03d}" for n in range(count)]
    for order_id in order_ids:
        assert post(platform, invitation(order_id)).status_code == 201
    return order_ids


def test_invitations_are_idempotent_on_the_order_id(platform_standin: PlatformStandin) -> None:
    first = post(platform_standin, invitation("order-1"))
    assert first.status_code == 201
    created = first.json()
    assert created["invitation_id"].startswith("inv_")
    assert created["assessment_url"] == f"{platform_standin.url}/assessments/{created['invitation_id']}"
    repeat = post(platform_standin, invitation("order-1"))
    assert repeat.status_code == 200 and repeat.json() == created
    by_header = post(platform_standin, invitation(None), headers={"Idempotency-Key": "order-1"})
    assert by_header.status_code == 200 and by_header.json() == created
    other = post(platform_standin, invitation("order-2"))
    assert other.status_code == 201 and other.json()["invitation_id"] != created["invitation_id"]

    listing = platform_standin.admin.invitations()
    assert listing["requests_by_order"] == {"order-1": 3, "order-2": 1}
    assert listing["creations_by_order"] == {"order-1": 1, "order-2": 1}
    assert listing["duplicates"] == []
    assert [item["order_id"] for item in listing["invitations"]] == ["order-1", "order-2"]
    assert listing["invitations"][0]["candidate"]["email"] == "ada@example.com"
    assert httpx.get(created["assessment_url"]).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (invitation(None), {}),
        (invitation("o", candidate={"first_name": "No email"}), {}),
        (invitation("o", integration_id=""), {}),
        (invitation("o", package_id=None), {}),
        (invitation("o"), {"Idempotency-Key": "different"}),
    ],
)
def test_invalid_invitations_are_refused(
    platform_standin: PlatformStandin, body: dict[str, Any], headers: dict[str, str]
) -> None:
    assert post(platform_standin, body, headers).status_code == 422
    assert platform_standin.admin.invitations()["invitations"] == []


def test_the_bearer_token_is_checked(platform_standin: PlatformStandin) -> None:
    url = f"{platform_standin.url}/api/invitations"
    assert httpx.post(url, json=invitation()).status_code == 401
    assert httpx.post(url, json=invitation(), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert platform_standin.admin.invitations()["invitations"] == []
    assert post(platform_standin, invitation()).status_code == 201


def test_failures_create_nothing_and_lost_responses_still_create(platform_standin: PlatformStandin) -> None:
    platform_standin.admin.set_knobs(failure_rate=1.0)
    assert post(platform_standin, invitation("order-1")).status_code == 503
    assert platform_standin.admin.invitations()["invitations"] == []

    platform_standin.admin.set_knobs(failure_rate=0.0, lost_response_rate=1.0)
    with pytest.raises(httpx.TransportError):
        post(platform_standin, invitation("order-1"))
    assert platform_standin.admin.invitations()["creations_by_order"] == {"order-1": 1}
    platform_standin.admin.set_knobs(lost_response_rate=0.0)
    retry = post(platform_standin, invitation("order-1"))
    assert retry.status_code == 200  # the retry finds the invitation the lost reply was about


def test_a_non_idempotent_channel_shows_duplicates(platform_standin: PlatformStandin) -> None:
    platform_standin.admin.set_knobs(idempotent=False)
    first = post(platform_standin, invitation("order-1")).json()
    second = post(platform_standin, invitation("order-1"))
    assert second.status_code == 201 and second.json()["invitation_id"] != first["invitation_id"]
    listing = platform_standin.admin.invitations()
    assert listing["creations_by_order"] == {"order-1": 2} and listing["duplicates"] == ["order-1"]
    assert platform_standin.admin.simulate()["finished"] == 2
    assert warehouse.count_results(platform_standin.warehouse_url) == 1


def test_latency_knob(platform_standin: PlatformStandin) -> None:
    platform_standin.admin.set_knobs(latency_ms=200)
    started = time.monotonic()
    assert post(platform_standin, invitation()).status_code == 201
    assert time.monotonic() - started >= 0.2


def test_simulated_candidates_fill_the_warehouse(platform_standin: PlatformStandin) -> None:
    order_ids = invite_many(platform_standin, 12)
    partial = platform_standin.admin.simulate(4, seed=3, cancel_rate=0.5)
    assert partial["finished"] == 4 and partial["order_ids"] == order_ids[:4]
    assert warehouse.count_results(platform_standin.warehouse_url) == 4

    rest = platform_standin.admin.simulate(seed=3, cancel_rate=0.5)
    assert rest["finished"] == 8
    assert platform_standin.admin.simulate()["finished"] == 0  # nobody left to finish
    rows = warehouse.read_results(platform_standin.warehouse_url)
    assert sorted(row["order_id"] for row in rows) == order_ids
    statuses = {row["status"] for row in rows}
    assert statuses == {"completed", "cancelled"}
    invitations = {item["order_id"]: item for item in platform_standin.admin.invitations()["invitations"]}
    for row in rows:
        assert row["invitation_id"] == invitations[row["order_id"]]["invitation_id"]
        assert invitations[row["order_id"]]["status"] == row["status"]
        assert isinstance(row["completed_at"], datetime) and isinstance(row["updated_at"], datetime)
        invited_at = datetime.fromisoformat(invitations[row["order_id"]]["created_at"].replace("Z", "+00:00"))
        assert invited_at.replace(tzinfo=None) <= row["completed_at"] <= row["updated_at"]
        assert all(set(sub) == {"id", "label", "score", "max", "status"} for sub in row["sub_results"])
        assert all(set(attribute) == {"label", "value"} for attribute in row["attributes"])
        if row["status"] == "completed":
            assert 0 <= row["score"] <= row["max_score"] == 100
            assert row["report_bytes"].startswith(b"%PDF") and row["report_content_type"] == "application/pdf"
            report = httpx.get(row["report_url"])
            assert report.status_code == 200 and report.content.startswith(b"%PDF")
            assert report.headers["content-type"] == "application/pdf"
        else:
            assert row["score"] is None and row["report_url"] is None


def test_simulated_scores_are_deterministic_by_seed(platform_standin: PlatformStandin) -> None:
    def run(seed: int) -> list[tuple[Any, ...]]:
        platform_standin.admin.reset()
        invite_many(platform_standin, 6)
        platform_standin.admin.simulate(seed=seed)
        rows = warehouse.read_results(platform_standin.warehouse_url)
        return sorted((row["order_id"], row["status"], row["score"], str(row["sub_results"])) for row in rows)

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_simulate_specific_orders(platform_standin: PlatformStandin) -> None:
    order_ids = invite_many(platform_standin, 5)
    finished = platform_standin.admin.simulate(order_ids=[order_ids[3], "unknown"])
    assert finished["order_ids"] == [order_ids[3]]


def test_candidates_finish_in_the_background(tmp_path: Any) -> None:
    settings = PlatformSettings(warehouse_url=f"sqlite:///{tmp_path / 'w.db'}", finish_after_seconds=0.2)
    with run_platform_standin(settings=settings) as platform:
        assert post(platform, invitation("order-bg")).status_code == 201
        deadline = time.monotonic() + 5
        while warehouse.count_results(platform.warehouse_url) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = warehouse.read_results(platform.warehouse_url)
        assert [row["order_id"] for row in rows] == ["order-bg"]
        assert platform.admin.invitations()["invitations"][0]["status"] == rows[0]["status"]


def test_no_show_candidates_never_finish_until_revoked(tmp_path: Any) -> None:
    settings = PlatformSettings(
        warehouse_url=f"sqlite:///{tmp_path / 'w.db'}", finish_after_seconds=0.2, no_show_rate=0.5
    )
    orders = [f"order-ns-{index}" for index in range(12)]
    no_shows = {o for o in orders if is_no_show(o, None, 0.5)}
    assert 0 < len(no_shows) < len(orders)  # the rule picks some, not all, at this rate
    with run_platform_standin(settings=settings) as platform:
        for order_id in orders:
            assert post(platform, invitation(order_id)).status_code == 201
        deadline = time.monotonic() + 10
        while warehouse.count_results(platform.warehouse_url) < len(orders) - len(no_shows):
            assert time.monotonic() < deadline, "the other candidates did not finish"
            time.sleep(0.05)
        time.sleep(0.5)  # a few more background rounds: the no-shows still do not finish
        finished = {row["order_id"] for row in warehouse.read_results(platform.warehouse_url)}
        assert finished == set(orders) - no_shows
        views = platform.admin.invitations()["invitations"]
        status = {i["order_id"]: i["status"] for i in views}
        assert {o for o, s in status.items() if s == "invited"} == no_shows
        # The admin view tells which candidates never start (the soak gives up only on those).
        assert {i["order_id"] for i in views if i["no_show"]} == no_shows


def test_bulk_warehouse_writes(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'bulk.db'}"
    started = time.monotonic()
    assert warehouse.write_results(url, warehouse.generate_results(10_000, seed=1)) == 10_000
    assert time.monotonic() - started < 10
    assert warehouse.count_results(url) == 10_000
    row = warehouse.read_results(url, ["order-0000042"])[0]
    assert row["invitation_id"] == "inv-0000042" and row["sub_results"][0]["id"] == "logic"

    written_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    warehouse.write_results(
        url,
        [
            {
                "order_id": "order-0000042",
                "status": "completed",
                "score": 1.0,
                "max_score": 2.0,
                "sub_results": [],
                "attributes": [{"label": "Fit", "value": "Low"}],
                "updated_at": written_at,
            }
        ],
        replace=True,
    )
    row = warehouse.read_results(url, ["order-0000042"])[0]
    assert (row["score"], row["attributes"]) == (1.0, [{"label": "Fit", "value": "Low"}])
    assert row["updated_at"] == written_at.replace(tzinfo=None)
    assert warehouse.count_results(url) == 10_000
    with pytest.raises(ValueError):
        warehouse.write_results(url, [{"order_id": "x", "status": "completed", "bogus": 1}])


def test_reset_empties_the_warehouse(platform_standin: PlatformStandin) -> None:
    invite_many(platform_standin, 2)
    platform_standin.admin.simulate()
    assert warehouse.count_results(platform_standin.warehouse_url) == 2
    platform_standin.admin.reset()
    assert warehouse.count_results(platform_standin.warehouse_url) == 0
    assert platform_standin.admin.invitations()["invitations"] == []


def revoke(platform: PlatformStandin, order_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{platform.url}/api/invitations/{order_id}/revoke",
        json={"reason": "cancelled in the ATS"},
        headers=headers if headers is not None else platform.headers(),
        timeout=10,
    )


def test_revoking_is_idempotent_and_every_other_case_is_a_clear_answer(
    platform_standin: PlatformStandin,
) -> None:
    order_ids = invite_many(platform_standin, 2)
    first = revoke(platform_standin, order_ids[0])
    assert first.status_code == 200
    assert first.json()["status"] == "revoked" and first.json()["already_revoked"] is False
    again = revoke(platform_standin, order_ids[0])
    assert again.status_code == 200 and again.json()["already_revoked"] is True
    assert again.json()["invitation_id"] == first.json()["invitation_id"]

    unknown = revoke(platform_standin, "no-such-order")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    platform_standin.admin.simulate(order_ids=[order_ids[1]], seed=1, cancel_rate=0.0)
    finished = revoke(platform_standin, order_ids[1])
    assert finished.status_code == 409
    assert finished.json()["error"] == "invitation_finished" and finished.json()["status"] == "completed"
    assert revoke(platform_standin, order_ids[1], headers={}).status_code == 401

    listing = platform_standin.admin.invitations()
    assert listing["revocations_by_order"] == {order_ids[0]: 1}
    assert listing["revoke_requests_by_order"] == {order_ids[0]: 2, "no-such-order": 1, order_ids[1]: 1}
    # A revoked candidate never finishes: no result for them lands in the warehouse.
    assert platform_standin.admin.simulate()["finished"] == 0
