"""Event trigger that wakes a DAG when the pipeline asks for it (for example, right after a webhook).

The webhook records a wake-up request in the state store; this trigger, run by Airflow's triggerer as an
`AssetWatcher`, consumes pending requests with a compare-and-set and fires once. The triggerer then starts a
fresh instance, so nothing is kept in memory between firings and several triggerers never fire twice for one
request. No Airflow credentials are needed anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class WakeupTrigger(BaseEventTrigger):
    """Fires once when wake-up requests for `topic` are pending in the state store."""

    def __init__(self, topic: str, poll_interval: float = 2.0) -> None:
        super().__init__()
        self.topic = topic
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "kombo_sync.triggers.WakeupTrigger",
            {"topic": self.topic, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The store is looked up once per trigger (a connection lookup, then one engine per process), and every
        # database call runs in a worker thread: the triggerer's event loop serves other triggers meanwhile.
        store = await asyncio.to_thread(_store)
        while True:
            consumed = await asyncio.to_thread(_consume_pending, store, self.topic)
            if consumed:
                self.log.info("wake-up for %s: %s pending request(s) consumed", self.topic, consumed)
                yield TriggerEvent({"topic": self.topic, "requests": consumed})
                return
            await asyncio.sleep(self.poll_interval)


def _store() -> Any:
    from kombo_sync.runtime import state_store

    return state_store()


def _consume_pending(store: Any, topic: str) -> int:
    from kombo_sync.wakeups import consume_wakeups

    return consume_wakeups(store, topic)
