"""Group commit of sent invitations: the orders whose send finished while another commit was running are marked
invited together, in the next transaction (docs/intake.md, section 5, "The SMTP window").

A sender hands its order over and waits; whoever gets the commit turn takes every order waiting at that moment
and commits them in one `mark_invited_many` (one locked read, one UPDATE and one INSERT for the group, one
COMMIT), each still fenced by the lease.
Nobody waits for a batch to fill: with one sender every commit holds exactly one order, as before; with N senders a
commit holds at most N (each sender has at most one order waiting). An order's commit thus starts no later than
when the commit in progress ends, which is no later than a commit of its own would have started behind the
others (SQLite has one writer, and the intake's write gate queues them): the window between "the channel
accepted" and "committed" does not widen, and a crash inside it re-sends at most N orders, as before.

On SQLite one exception, `pause_after_commit` (`SQLITE_COMMIT_PAUSE_SECONDS`, 1 ms): a commit does not start
sooner than that after the previous one ended. SQLite has one write lock for all processes and no queue for it;
this process's commits, back to back, would take it again before the webhook in the api-server (which polls for
it every 1-2 ms) gets a turn, and the webhook's answers wait behind a whole dispatch. The pause lets the other
processes' writers in between two commits; the orders handed over meanwhile join the next commit. The window
widens by at most the pause, and a crash inside it still re-sends at most N orders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from kombo_sync.state.orders import SentInvitation

CommitMany = Callable[[Sequence[SentInvitation]], dict[str, bool | None]]

# Between two commits of the intake on SQLite: a turn for the other processes' writers (module docstring).
# Measured beside the webhook at 200 orders/s: its p99 41-46 ms while a dispatch ran without the pause, 21-22 ms
# with it; the dispatch of 10,000 orders took 14% longer (docs/intake.md, section 5).
SQLITE_COMMIT_PAUSE_SECONDS = 0.001


class _Waiting:
    __slots__ = ("done", "error", "result", "sent")

    def __init__(self, sent: SentInvitation) -> None:
        self.sent = sent
        self.done = False
        self.result: bool | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Commits sent invitations for many sender threads, several per transaction when they finish together."""

    def __init__(self, commit_many: CommitMany, *, pause_after_commit: float = 0.0) -> None:
        self._commit_many = commit_many
        self._pause = pause_after_commit
        self._queue_lock = threading.Lock()
        self._turn = threading.Lock()
        self._waiting: list[_Waiting] = []
        # No commit starts before this (time.monotonic()): the previous commit's end plus the pause.
        self._not_before = 0.0
        self.transactions = 0

    def waiting(self) -> int:
        """Orders handed over and not yet taken into a transaction."""
        with self._queue_lock:
            return len(self._waiting)

    def commit(self, sent: SentInvitation) -> bool | None:
        """Mark this order invited (in a transaction shared with the orders waiting alongside it); the result of
        `mark_invited_many` for it. A failed transaction raises in every sender whose order it held."""
        mine = _Waiting(sent)
        with self._queue_lock:
            self._waiting.append(mine)
        with self._turn:
            if not mine.done:
                # The pause is waited by the next committer, not by the one that committed: a lone sender whose
                # next order comes later never waits for it.
                pause = self._not_before - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                with self._queue_lock:
                    group, self._waiting = self._waiting, []
                try:
                    results = self._commit_many([waiting.sent for waiting in group])
                except BaseException as exc:
                    for waiting in group:
                        waiting.error, waiting.done = exc, True
                else:
                    for waiting in group:
                        waiting.result, waiting.done = results.get(waiting.sent.order_id), True
                self.transactions += 1
                self._not_before = time.monotonic() + self._pause
        if mine.error is not None:
            raise mine.error
        return mine.result
