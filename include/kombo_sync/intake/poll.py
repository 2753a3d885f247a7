"""Step 1 of the intake: list every active integration's OPEN orders in the window and record each once.

Integrations are polled concurrently (``intake.poll_concurrency``); each follows Kombo's cursor pages. One
integration failing (inactive, auth, Kombo down after the client's retries) is recorded in the summary and does
not stop the others. Candidate data goes into the state store only; logs carry ids and counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timedelta
from typing import Any

from kombo_sync.intake.claims import IntakeOrders
from kombo_sync.intake.window import PollWindow
from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.errors import KomboError
from kombo_sync.kombo.models import ORDER_STATUS_OPEN, ORDER_STATUS_REJECTED, Order
from kombo_sync.settings import PipelineSettings
from kombo_sync.state.audit import Quarantine
from kombo_sync.state.coverage import PollCoverage
from kombo_sync.state.integrations import IntegrationRecord, IntegrationRepository
from kombo_sync.state.orders import RECEIVED, InvalidTransition, _order_columns
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

JOB = "intake"


def select_integrations(
    store: StateStore, integration_ids: Iterable[str] | None
) -> tuple[list[IntegrationRecord], list[str]]:
    """Active integrations of the registry (all, or those asked for) and the asked-for ids that are not active."""
    active = IntegrationRepository(store).list_active()
    if not integration_ids:
        return active, []
    wanted = list(dict.fromkeys(integration_ids))
    by_id = {integration.id: integration for integration in active}
    return [by_id[i] for i in wanted if i in by_id], [i for i in wanted if i not in by_id]


def _error_text(error: BaseException) -> str:
    if isinstance(error, KomboError):
        return f"{error.code or type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.values[name] = self.values.get(name, 0) + amount

    def get(self, name: str) -> int:
        with self._lock:
            return self.values.get(name, 0)


def poll_orders(
    store: StateStore,
    client: KomboClient,
    settings: PipelineSettings,
    window: PollWindow,
    *,
    integration_ids: Iterable[str] | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
    skip_covered: bool = False,
) -> dict[str, Any]:
    """Record the open orders created in ``window`` for every active integration (or those given).

    Returns a summary: integrations polled, skipped and failed (with Kombo's code), orders seen and new. The
    duplicate rule is applied by the dispatcher, under the order's lease, right before sending.
    ``dry_run`` lists and counts what would be recorded and writes nothing. ``skip_covered`` (backfills) skips
    integrations whose window an earlier finished poll already covered (``kombo_sync.state.coverage``).
    """
    intake = settings.intake
    integrations, not_active = select_integrations(store, integration_ids)
    coverage = PollCoverage(store)
    covered: list[str] = []
    if skip_covered and window.until is not None and integrations:
        # The listing may lag behind creation: a span counts only if it reaches an overlap past the window.
        end = window.until + timedelta(minutes=intake.overlap_minutes)
        spans = coverage.get_many([integration.id for integration in integrations])
        covered = [
            i.id for i in integrations if i.id in spans and spans[i.id].covers(window.created_after, end)
        ]
        if covered:
            log.info(
                "%s of %s integration(s) skipped: an earlier poll already recorded every open order created in "
                "this window (set the param repoll to poll them again)",
                len(covered),
                len(integrations),
            )
            integrations = [integration for integration in integrations if integration.id not in covered]
    if not_active:
        log.warning(
            "skipping %s integration(s) that are not active in the registry: %s", len(not_active), not_active
        )
    repo = IntakeOrders(store)
    quarantine = Quarantine(store)
    counters = _Counters()
    failed: dict[str, str] = {}
    started = time.monotonic()
    log.info(
        "polling %s integration(s), %s, %s at a time%s",
        len(integrations),
        window.describe(),
        intake.poll_concurrency,
        " (dry run)" if dry_run else "",
    )

    def poll_one(integration: IntegrationRecord) -> None:
        started_at = store.now()
        for page in client.iter_order_pages(
            integration.id,
            statuses=ORDER_STATUS_OPEN,
            created_after=window.created_after,
            page_size=intake.page_size,
        ):
            counters.add("orders_seen", len(page))
            if dry_run:
                counters.add("orders_new", sum(1 for order in page if repo.get(order.id) is None))
                continue
            _record_page(repo, quarantine, page, integration.id, counters, run_id)
        if not dry_run:
            coverage.record(integration.id, window.created_after, started_at)

    total = len(integrations)
    every = max(1, total // 20)
    if integrations:
        with ThreadPoolExecutor(
            max_workers=min(intake.poll_concurrency, total), thread_name_prefix="intake-poll"
        ) as pool:
            futures = {pool.submit(poll_one, integration): integration.id for integration in integrations}
            for done, future in enumerate(as_completed(futures), start=1):
                integration_id = futures[future]
                error = future.exception()
                if error is not None:
                    failed[integration_id] = _error_text(error)
                    log.error("integration %s: poll failed: %s", integration_id, failed[integration_id])
                if done % every == 0 or done == total:
                    log.info(
                        "polled %s/%s integrations: %s orders seen, %s new, %s failed",
                        done,
                        total,
                        counters.get("orders_seen"),
                        counters.get("orders_new"),
                        len(failed),
                    )
    summary = {
        "window_created_after": window.created_after.isoformat(),
        "window_kind": window.kind,
        "dry_run": dry_run,
        "integrations": total,
        "integrations_covered": len(covered),
        "integrations_failed": failed,
        "integrations_not_active": not_active,
        "orders_seen": counters.get("orders_seen"),
        "orders_new": counters.get("orders_new"),
        "closed": counters.get("closed"),
        "quarantined": counters.get("quarantined"),
        "seconds": round(time.monotonic() - started, 3),
    }
    log.info("poll summary: %s", summary)
    return summary


def _record_page(
    repo: IntakeOrders,
    quarantine: Quarantine,
    page: list[Order],
    integration_id: str,
    counters: _Counters,
    run_id: str | None,
) -> None:
    """Record one page in one transaction; an order that cannot be recorded is quarantined, not fatal."""
    payloads = []
    for order in page:
        payload = order.model_dump(mode="json", by_alias=True)
        try:
            _order_columns(payload, integration_id)
        except ValueError as exc:
            quarantine.add(JOB, order.id, f"order cannot be recorded: {exc}", payload, run_id=run_id)
            counters.add("quarantined")
            continue
        payloads.append(payload)
    results = repo.record_orders(payloads, "poll", integration_id=integration_id)
    counters.add("orders_new", sum(result.created for result in results))
    for order in page:
        if order.status and order.status != ORDER_STATUS_OPEN:
            _close_listed_not_open(repo, order, counters)


def _close_listed_not_open(repo: IntakeOrders, order: Order, counters: _Counters) -> None:
    """We asked for OPEN orders only; one Kombo lists otherwise is never invited."""
    record = repo.get(order.id)
    if record is None or record.state != RECEIVED:
        return
    reason = f"Kombo lists the order as {order.status}"
    try:
        if order.status == ORDER_STATUS_REJECTED:
            repo.mark_rejected(order.id, reason)
        else:
            repo.mark_cancelled(order.id)
        counters.add("closed")
    except InvalidTransition:
        pass  # claimed meanwhile: the dispatcher re-checks with Kombo under its lease
