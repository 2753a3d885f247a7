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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from kombo_sync.state.orders import SentInvitation

CommitMany = Callable[[Sequence[SentInvitation]], dict[str, bool | None]]


class _Waiting:
    __slots__ = ("done", "error", "result", "sent")

    def __init__(self, sent: SentInvitation) -> None:
        self.sent = sent
        self.done = False
        self.result: bool | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Commits sent invitations for many sender threads, several per transaction when they finish together."""

    def __init__(self, commit_many: CommitMany) -> None:
        self._commit_many = commit_many
        self._queue_lock = threading.Lock()
        self._turn = threading.Lock()
        self._waiting: list[_Waiting] = []
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
        if mine.error is not None:
            raise mine.error
        return mine.result
