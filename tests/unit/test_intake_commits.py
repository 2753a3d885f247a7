"""The intake's group commit: orders whose send finished while a commit ran share the next transaction; each
sender gets its own order's result, and a failed transaction fails every sender whose order it held."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from kombo_sync.intake.commits import GroupCommit
from kombo_sync.state.orders import SentInvitation


def sent(order_id: str) -> SentInvitation:
    return SentInvitation(order_id, "platform", f"inv-{order_id}", f"https://x.example/{order_id}", None)


def test_one_sender_commits_each_order_in_its_own_transaction() -> None:
    groups: list[list[str]] = []

    def commit_many(items: Sequence[SentInvitation]) -> dict[str, bool | None]:
        groups.append([item.order_id for item in items])
        return {item.order_id: item.order_id != "lost" for item in items}

    commits = GroupCommit(commit_many)
    assert [commits.commit(sent(order_id)) for order_id in ("a", "lost", "c")] == [True, False, True]
    assert groups == [["a"], ["lost"], ["c"]]
    assert commits.transactions == 3


def test_orders_finished_during_a_commit_share_the_next_transaction() -> None:
    groups: list[list[str]] = []
    first_running = threading.Event()
    release_first = threading.Event()

    def commit_many(items: Sequence[SentInvitation]) -> dict[str, bool | None]:
        groups.append([item.order_id for item in items])
        if len(groups) == 1:
            first_running.set()
            assert release_first.wait(10)
        return {item.order_id: item.order_id.startswith("ok") for item in items}

    commits = GroupCommit(commit_many)
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(commits.commit, sent("ok-first"))
        assert first_running.wait(10)
        waiting = {
            order_id: pool.submit(commits.commit, sent(order_id)) for order_id in ("ok-1", "ok-2", "x-3")
        }
        # Every one of them is queued behind the running commit before it ends.
        deadline = time.monotonic() + 10
        while commits.waiting() < 3:
            assert time.monotonic() < deadline, "the senders never queued"
            time.sleep(0.01)
        release_first.set()
        assert first.result(10) is True
        assert {order_id: future.result(10) for order_id, future in waiting.items()} == {
            "ok-1": True,
            "ok-2": True,
            "x-3": False,
        }
    assert groups[0] == ["ok-first"]
    assert sorted(groups[1]) == ["ok-1", "ok-2", "x-3"] and len(groups) == 2
    assert commits.transactions == 2


def test_a_failed_transaction_raises_in_every_sender_of_its_group() -> None:
    calls: list[list[str]] = []

    def commit_many(items: Sequence[SentInvitation]) -> dict[str, bool | None]:
        calls.append([item.order_id for item in items])
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return dict.fromkeys((item.order_id for item in items), True)

    commits = GroupCommit(commit_many)
    with pytest.raises(RuntimeError, match="went away"):
        commits.commit(sent("a"))
    # The next order is committed normally: a failure does not leave the commit turn taken.
    assert commits.commit(sent("b")) is True
    assert calls == [["a"], ["b"]]


def test_with_a_pause_the_next_commit_starts_no_sooner_and_takes_the_orders_handed_over_meanwhile() -> None:
    pause = 0.5
    groups: list[tuple[float, list[str]]] = []
    ended: list[float] = []

    def commit_many(items: Sequence[SentInvitation]) -> dict[str, bool | None]:
        groups.append((time.monotonic(), [item.order_id for item in items]))
        ended.append(time.monotonic())
        return dict.fromkeys((item.order_id for item in items), True)

    commits = GroupCommit(commit_many, pause_after_commit=pause)
    # The committer itself does not wait for the pause: it returns as soon as its commit ended.
    started = time.monotonic()
    assert commits.commit(sent("first")) is True
    assert time.monotonic() - started < pause / 2
    with ThreadPoolExecutor(max_workers=3) as pool:
        later = [pool.submit(commits.commit, sent(order_id)) for order_id in ("a", "b", "c")]
        assert [future.result(10) for future in later] == [True, True, True]
    # The three were handed over during the pause and went into one transaction, started after it.
    assert [sorted(group) for _, group in groups] == [["first"], ["a", "b", "c"]]
    assert groups[1][0] - ended[0] >= pause - 0.01
    # After the pause has passed, a commit starts at once.
    time.sleep(pause)
    started = time.monotonic()
    assert commits.commit(sent("later")) is True
    assert time.monotonic() - started < pause / 2
