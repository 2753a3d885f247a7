"""`WebhookDeps`: what the webhook needs (store, settings, secrets, the inline flow's channel), built lazily."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from kombo_sync.candidate_hash import CandidateHasher
from kombo_sync.kombo.models import OrderReceivedData
from kombo_sync.settings import PipelineSettings, load_settings
from kombo_sync.state.store import StateStore
from kombo_sync.wakeups import WakeupBatcher, request_wakeup
from kombo_sync.webhooks.orders import default_invite_now
from kombo_sync.webhooks.rules import RejectionRule

# An event recorded but never answered (the process died, the database went away) is processed again by a
# redelivery that comes at least this long after it; younger ones are still being processed (409).
IN_PROGRESS_SECONDS = 60.0


InviteNow = Callable[[StateStore, Any, OrderReceivedData, PipelineSettings], str | None]


class WebhookDeps:
    """Everything `handle_webhook` needs, built lazily so that constructing it does no I/O.

    `secrets` returns the accepted secrets (a `SecretProvider` in production); `store_factory` and
    `inviter_factory` are called once, on first use. `invite_now(store, inviter, order, settings)` creates the
    inline flow's invitation and returns the candidate's URL (default: `kombo_sync.intake.invite_order_now`).
    `hasher` (a `CandidateHasher`, or a callable returning one) matches erased orders in the duplicate rule.
    `wakeup_window` > 0 coalesces the wake-ups of this process (`WakeupBatcher`: at most one write per topic per
    window); 0 requests each one in the event's own transaction (SQLite) or right after its commit.
    """

    def __init__(
        self,
        *,
        secrets: Callable[[], Sequence[str]],
        store: StateStore | None = None,
        store_factory: Callable[[], StateStore] | None = None,
        settings: PipelineSettings | Callable[[], PipelineSettings] | None = None,
        inviter: Any = None,
        inviter_factory: Callable[[], Any] | None = None,
        invite_now: InviteNow | None = None,
        extra_rules: Sequence[RejectionRule] = (),
        in_progress_seconds: float = IN_PROGRESS_SECONDS,
        hasher: CandidateHasher | Callable[[], CandidateHasher | None] | None = None,
        wakeup_window: float = 0.0,
    ) -> None:
        if store is None and store_factory is None:
            raise ValueError("WebhookDeps needs a store or a store_factory")
        self.secrets = secrets
        self._store = store
        self._store_factory = store_factory
        self._settings = settings
        self._inviter = inviter
        self._inviter_factory = inviter_factory
        self._invite_now = invite_now
        self.extra_rules = tuple(extra_rules)
        self.in_progress_seconds = in_progress_seconds
        self._lock = threading.Lock()
        self._hasher = hasher
        self.wakeup_window = wakeup_window
        self._wakeups: WakeupBatcher | None = None

    def hasher(self) -> CandidateHasher | None:
        """The salted e-mail hasher of the duplicate rule (a callable is asked each time: it caches itself)."""
        if self._hasher is None or isinstance(self._hasher, CandidateHasher):
            return self._hasher
        return self._hasher()

    def settings(self) -> PipelineSettings:
        if isinstance(self._settings, PipelineSettings):
            return self._settings
        if callable(self._settings):
            return self._settings()
        return load_settings()

    @property
    def store(self) -> StateStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    assert self._store_factory is not None
                    self._store = self._store_factory()
        return self._store

    def wakeups(self) -> WakeupBatcher | None:
        """The process's coalescing wake-up writer, or None when every wake-up is requested on its own."""
        if self.wakeup_window <= 0:
            return None
        if self._wakeups is None:
            with self._lock:
                if self._wakeups is None:
                    self._wakeups = WakeupBatcher(self._write_wakeup, self.wakeup_window)
        return self._wakeups

    def _write_wakeup(self, topic: str) -> None:
        from kombo_sync.intake.claims import write_gate

        store = self.store
        # SQLite: queue with this process's webhooks for the single writer rather than in the busy handler.
        with write_gate(store):
            request_wakeup(store, topic)

    def inviter(self) -> Any:
        if self._inviter is None:
            if self._inviter_factory is None:
                raise RuntimeError("no invitation channel configured for the inline flow")
            with self._lock:
                if self._inviter is None:
                    self._inviter = self._inviter_factory()
        return self._inviter

    def invite_now(self) -> InviteNow:
        if self._invite_now is None:
            return default_invite_now
        return self._invite_now
