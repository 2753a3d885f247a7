"""The demo's closing self-check (`sandbox.demo.check_orders`): order by order, never counts alone."""

from __future__ import annotations

from typing import Any

from sandbox.demo import CreatedOrder, Observed, check_orders

CREATED = [
    CreatedOrder("o-1", "greenhouse:a"),
    CreatedOrder("o-2", "smartrecruiters:b"),
    CreatedOrder("o-3", "greenhouse:a", "duplicate", "same candidate and package ordered twice", "o-1"),
]


def healthy() -> Observed:
    return Observed(
        state={
            "o-1": {"state": "invited", "channel": "platform", "external_id": "inv_1"},
            "o-2": {"state": "invited", "channel": "email", "external_id": "<m2@provider.example>"},
            "o-3": {"state": "duplicate", "duplicate_of": "o-1"},
        },
        platform_invited={"o-1"},
        mailbox_message_ids={"<m2@provider.example>"},
        finished={"o-1": "cancelled", "o-2": "completed"},
        kombo={
            "o-1": {"status": "CANCELLED", "result": {"status": "CANCELLED"}},
            "o-2": {"status": "COMPLETED", "result": {"status": "COMPLETED", "score": 70}},
            "o-3": {"status": "OPEN", "result": None},
        },
    )


def with_changes(**changes: Any) -> Observed:
    seen = healthy()
    for key, value in changes.items():
        setattr(seen, key, value)
    return seen


def test_a_run_that_invited_everyone_and_wrote_every_result_passes():
    assert check_orders(CREATED, healthy()) == []


def test_nothing_invited_and_nothing_written_fails_although_the_counts_agree():
    # The run seen when another local receiver answered the demo's webhooks: every order rejected, zero
    # invitations, zero results; 0 == 0 everywhere, and the old summary printed "matches".
    rejected = {order.id: {"state": "rejected", "last_error": "unknown integration"} for order in CREATED}
    seen = Observed(
        state=rejected,
        platform_invited=set(),
        mailbox_message_ids=set(),
        finished={},
        kombo={order.id: {"status": "REJECTED", "result": None} for order in CREATED},
    )
    problems = check_orders(CREATED, seen)
    assert any("o-1: rejected: unknown integration, expected invited" in p for p in problems)
    assert any("o-3: rejected" in p and "expected duplicate" in p for p in problems)
    assert any("no invited candidate finished" in p for p in problems)


def test_orders_the_pipeline_never_saw_fail():
    problems = check_orders(CREATED, with_changes(state={}, finished={}))
    assert sum("never recorded by the pipeline" in p for p in problems) == 3


def test_no_orders_created_fails():
    assert check_orders([], healthy()) == ["the demo created no orders"]


def test_an_invitation_missing_from_the_platform_or_the_mailbox_fails():
    problems = check_orders(CREATED, with_changes(platform_invited=set(), mailbox_message_ids=set()))
    assert any("o-1: invited on the platform, but the platform has no invitation" in p for p in problems)
    assert any("o-2: invited by e-mail, but no such e-mail" in p for p in problems)


def test_a_finished_candidate_without_a_result_in_kombo_fails_and_names_the_dead_letter():
    seen = healthy()
    seen.kombo["o-2"] = {"status": "OPEN", "result": None}
    seen.dead_letters = {"o-2": "ASSESSMENT.ORDER_NOT_FOUND"}
    problems = check_orders(CREATED, seen)
    assert problems == [
        "o-2: the candidate finished, but Kombo has no result (dead letter: ASSESSMENT.ORDER_NOT_FOUND)"
    ]


def test_a_result_with_the_wrong_status_fails():
    seen = healthy()
    seen.kombo["o-1"] = {"status": "COMPLETED", "result": {"status": "COMPLETED"}}
    assert check_orders(CREATED, seen) == ["o-1: Kombo shows COMPLETED, the warehouse CANCELLED"]


def test_an_unfinished_candidate_fails_only_when_all_must_finish():
    seen = with_changes(finished={"o-1": "cancelled"})
    assert check_orders(CREATED, seen) == [
        "o-2: invited, but the candidate's result never reached the warehouse"
    ]
    assert check_orders(CREATED, seen, all_finish=False) == []


def test_a_duplicate_needs_its_original_and_an_unexpected_duplicate_fails():
    seen = healthy()
    seen.state["o-3"] = {"state": "duplicate", "duplicate_of": None}
    assert check_orders(CREATED, seen) == ["o-3: duplicate, but the pipeline recorded no original order"]
    seen = healthy()
    seen.state["o-1"] = {"state": "duplicate", "duplicate_of": "o-9"}
    seen.finished.pop("o-1")
    assert check_orders(CREATED, seen) == ["o-1: duplicate, expected invited"]


def test_either_twin_may_be_the_one_invited_but_not_both_and_not_neither():
    seen = healthy()
    seen.state["o-3"] = {"state": "invited", "channel": "platform", "external_id": "inv_3"}
    seen.state["o-1"] = {"state": "duplicate", "duplicate_of": "o-3"}
    seen.platform_invited = {"o-3"}
    seen.finished = {"o-3": "completed", "o-2": "completed"}
    seen.kombo["o-3"] = {"status": "COMPLETED", "result": {"status": "COMPLETED"}}
    assert check_orders(CREATED, seen) == []

    seen.state["o-1"] = {"state": "invited", "channel": "platform", "external_id": "inv_1"}
    seen.platform_invited = {"o-1", "o-3"}
    assert check_orders(CREATED, seen, all_finish=False) == [
        "o-3: invited, but expected duplicate (same candidate and package ordered twice)"
    ]
    seen.state["o-1"] = seen.state["o-3"] = {"state": "duplicate", "duplicate_of": "o-2"}
    problems = check_orders(CREATED, seen, all_finish=False)
    assert "o-1: duplicate: duplicate of order o-2, expected invited" not in problems  # no last_error here
    assert "o-1: duplicate, expected invited" in problems
    assert "o-3: duplicate of o-2, expected of o-1" in problems


def test_an_expected_rejection_passes_only_with_its_reason():
    created = [*CREATED, CreatedOrder("o-4", "greenhouse:a", "rejected", "package not entitled")]
    seen = healthy()
    seen.state["o-4"] = {"state": "rejected", "last_error": "package py-basics is not published"}
    assert check_orders(created, seen) == []
    seen.state["o-4"] = {"state": "rejected", "last_error": None}
    assert check_orders(created, seen) == ["o-4: rejected without a recorded reason"]


def test_the_demo_and_the_trial_work_in_kombo_sync_home_unless_told(monkeypatch, tmp_path):
    from sandbox import demo

    monkeypatch.setenv("KOMBO_SYNC_HOME", str(tmp_path / "from-env"))
    assert demo.default_home() == tmp_path / "from-env"
    monkeypatch.delenv("KOMBO_SYNC_HOME")
    assert demo.default_home() == demo.ROOT / ".local"
