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
