"""The sandbox's in-memory Kombo: integrations, packages, orders, written results, webhook events, request log.

Every method takes the store's lock, never awaits while holding it, and returns plain copies, so the store can be
used from the event loop and from other threads alike.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.common import IdFactory, epoch_ms, iso_ms, utc_now

TOOL_LABELS = {
    "workday": "Workday",
    "greenhouse": "Greenhouse",
    "lever": "Lever",
    "smartrecruiters": "SmartRecruiters",
    "personio": "Personio",
    "recruitee": "Recruitee",
    "successfactors": "SAP SuccessFactors",
    "icims": "iCIMS",
    "teamtailor": "Teamtailor",
    "sandbox": "Kombo Sandbox",
}


class NotFound(KeyError):
    """An admin lookup for something the sandbox does not hold."""


@dataclass
class Integration:
    id: str
    tool: str
    category: str
    status: str
    setup_status: str
    qa_status: str
    end_user: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    scope_config_id: str
    beta: bool = False

    def details(self) -> dict[str, Any]:
        """The `GET /integrations/{id}` shape (API.md 1.6)."""
        label = TOOL_LABELS.get(self.tool, self.tool.replace("_", " ").title())
        assets = f"https://storage.googleapis.com/kombo-assets/integrations/{self.tool}"
        return {
            "id": self.id,
            "tool": {
                "id": self.tool,
                "label": label,
                "internal_label": None,
                "logo_url": f"{assets}/logo.svg",
                "icon_url": f"{assets}/icon.svg",
            },
            "category": self.category,
            "status": self.status,
            "setup_status": self.setup_status,
            "end_user": dict(self.end_user),
            "scope_config": {"id": self.scope_config_id, "name": "Assessment default scopes"},
            "data_expired_at": None,
            "created_at": iso_ms(self.created_at),
            "beta": self.beta,
            "read_models": [],
            "write_actions": [
                {
                    "id": "ats_update_assessment_result",
                    "label": "Update assessment result",
                    "is_available": True,
                    "coverage_status": "SUPPORTED",
                    "scope_config_setting": "ENABLED",
                    "opted_out_by_customer": False,
                    "fields": [],
                }
            ],
        }

    def admin_view(self) -> dict[str, Any]:
        return {**self.details(), "qa_status": self.qa_status, "updated_at": iso_ms(self.updated_at)}


@dataclass
class Package:
    id: str
    type: str
    name: str
    description: str
    updated_at: datetime
    deleted_at: datetime | None = None

    def api_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "updated_at": iso_ms(self.updated_at),
            "type": self.type,
        }


@dataclass
class Order:
    id: str
    integration_id: str
    package_id: str
    status: str
    candidate: dict[str, Any]
    application: dict[str, Any]
    job: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    rejection_message: str | None = None
    inline_assessment_url: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)  # every accepted write, in order

    @property
    def sort_key(self) -> tuple[int, str]:
        return (epoch_ms(self.created_at), self.id)

    def api_view(self, with_status: bool = True) -> dict[str, Any]:
        """The order as `GET /assessment/orders` returns it; `/orders/open` leaves out `status`."""
        view: dict[str, Any] = {"id": self.id, "package_id": self.package_id}
        if with_status:
            view["status"] = self.status
        view["candidate"] = copy.deepcopy(self.candidate)
        view["application"] = copy.deepcopy(self.application)
        view["job"] = copy.deepcopy(self.job)
        return view

    def webhook_data(self) -> dict[str, Any]:
        """`data` of `assessment:order-received` (API.md 3.2)."""
        view = self.api_view()
        view["integration_id"] = self.integration_id
        return view

    def admin_view(self) -> dict[str, Any]:
        applied = [write for write in self.results if write["outcome"] == "applied"]
        return {
            **self.api_view(),
            "integration_id": self.integration_id,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
            "rejection_message": self.rejection_message,
            "inline_assessment_url": self.inline_assessment_url,
            "result": copy.deepcopy(applied[-1]["body"]) if applied else None,
            "results": copy.deepcopy(self.results),
        }


class WriteRejected(Exception):
    """A result write the order's state does not allow (it left OPEN and the status differs)."""


class RateLimiter:
    """Fixed windows per API key, like the `ratelimit-*` headers describe (limit, remaining, reset seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, limit: int, window_seconds: float) -> tuple[bool, int, int]:
        """Count one request; returns (allowed, remaining, seconds until the window resets)."""
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= window_seconds:
                start, count = now, 0
            allowed = count < limit
            if allowed:
                count += 1
            self._windows[key] = (start, count)
            reset = max(0, int(-(-(start + window_seconds - now) // 1)))
            return allowed, max(0, limit - count), reset

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()


class InFlight:
    """Requests in flight, per integration and overall, with the highest values seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_integration: Counter[str] = Counter()
        self.total = 0
        self.max_total = 0
        self.max_by_integration: dict[str, int] = {}

    def try_acquire(self, integration_id: str | None, limit: int | None) -> int | None:
        """Take a slot; returns the in-flight count for the integration, or None when over `limit`."""
        with self._lock:
            if integration_id is not None:
                current = self.by_integration[integration_id]
                if limit is not None and current >= limit:
                    return None
                self.by_integration[integration_id] = current + 1
                self.max_by_integration[integration_id] = max(
                    self.max_by_integration.get(integration_id, 0), current + 1
                )
            self.total += 1
            self.max_total = max(self.max_total, self.total)
            return self.by_integration[integration_id] if integration_id is not None else self.total

    def release(self, integration_id: str | None) -> None:
        with self._lock:
            if integration_id is not None:
                self.by_integration[integration_id] -= 1
                if self.by_integration[integration_id] <= 0:
                    del self.by_integration[integration_id]
            self.total -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "in_flight": self.total,
                "max_concurrency": self.max_total,
                "max_concurrency_by_integration": dict(self.max_by_integration),
            }

    def clear_maxima(self) -> None:
        with self._lock:
            self.max_total = self.total
            self.max_by_integration = dict(self.by_integration)


class RequestLog:
    """Every `/v1` request (method, path, integration, time, status, injected fault), bounded in size."""

    def __init__(self, max_entries: int, ids: IdFactory) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._by_id: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max = max_entries
        self._ids = ids
        self._seq = 0
        self.counters: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()

    def start(self, method: str, path: str, query: str, integration_id: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "log_id": self._ids.new(),
            "method": method,
            "path": path,
            "query": query,
            "integration_id": integration_id,
            "time": iso_ms(utc_now()),
            "status": None,
            "fault": None,
            "duration_ms": None,
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
            self._by_id[entry["log_id"]] = entry
            while len(self._by_id) > self._max:
                self._by_id.popitem(last=False)
        return entry

    def finish(
        self,
        entry: dict[str, Any],
        status: int | str | None,
        started: float,
        applied_status: int | None = None,
    ) -> None:
        """Complete an entry; `applied_status` is what the app answered when the reply was then dropped."""
        with self._lock:
            entry["status"] = status
            if applied_status is not None:
                entry["applied_status"] = applied_status
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 2)
            route = f"{entry['method']} {route_template(entry['path'])}"
            self.counters[(route, str(status))] += 1
            if entry["fault"]:
                self.faults[entry["fault"]] += 1

    def entries(
        self, since_seq: int = 0, path_prefix: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            selected = [
                dict(entry)
                for entry in self._entries
                if entry["seq"] > since_seq and (path_prefix is None or entry["path"].startswith(path_prefix))
            ]
        return selected[-limit:] if limit else selected

    def get(self, log_id: str) -> dict[str, Any]:
        with self._lock:
            if log_id not in self._by_id:
                raise NotFound(log_id)
            return dict(self._by_id[log_id])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_route: dict[str, dict[str, int]] = defaultdict(dict)
            for (route, status), count in sorted(self.counters.items()):
                by_route[route][status] = count
            return {
                "requests_total": sum(self.counters.values()),
                "by_route": dict(by_route),
                "faults": dict(self.faults),
                "last_seq": self._seq,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_id.clear()
            self.counters.clear()
            self.faults.clear()


def route_template(path: str) -> str:
    """Collapse ids in a `/v1` path so counters group by route."""
    parts = path.rstrip("/").split("/")
    if len(parts) == 6 and parts[2:4] == ["assessment", "orders"] and parts[5] == "result":
        parts[4] = "{assessment_order_id}"
    elif len(parts) >= 4 and parts[2] == "integrations":
        parts[3] = "{integration_id}"
    return "/".join(parts) or "/"


class KomboState:
    """Integrations, packages, orders and webhook events of one sandbox environment."""

    def __init__(self, ids: IdFactory) -> None:
        self._lock = threading.RLock()
        self.ids = ids
        self.integrations: dict[str, Integration] = {}
        self.packages: dict[str, dict[str, Package]] = defaultdict(dict)
        self.package_puts: Counter[str] = Counter()
        self.orders: dict[str, Order] = {}
        self._order_keys: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.max_events = 10_000

    # integrations

    def add_integration(self, integration: Integration) -> Integration:
        with self._lock:
            if integration.id in self.integrations:
                raise ValueError(f"integration {integration.id} already exists")
            self.integrations[integration.id] = integration
            return copy.deepcopy(integration)

    def get_integration(self, integration_id: str) -> Integration | None:
        with self._lock:
            found = self.integrations.get(integration_id)
            return copy.deepcopy(found) if found else None

    def update_integration(self, integration_id: str, **changes: Any) -> Integration:
        with self._lock:
            integration = self.integrations.get(integration_id)
            if integration is None:
                raise NotFound(integration_id)
            for key, value in changes.items():
                if value is not None:
                    setattr(integration, key, value)
            integration.updated_at = utc_now()
            return copy.deepcopy(integration)

    def delete_integration(self, integration_id: str) -> Integration:
        """Remove an integration with its packages and orders (as Kombo does; the ids become invalid)."""
        with self._lock:
            integration = self.integrations.pop(integration_id, None)
            if integration is None:
                raise NotFound(integration_id)
            self.packages.pop(integration_id, None)
            self.package_puts.pop(integration_id, None)
            for key in self._order_keys.pop(integration_id, []):
                self.orders.pop(key[1], None)
            return integration

    def list_integrations(self) -> list[Integration]:
        with self._lock:
            return [copy.deepcopy(item) for item in self.integrations.values()]

    # packages

    def set_packages(self, integration_id: str, packages: list[dict[str, str]]) -> list[str]:
        """Full replace; unchanged packages keep `updated_at`. Returns interaction warnings."""
        now = utc_now()
        warnings = []
        with self._lock:
            current = self.packages[integration_id]
            sent = {given["id"] for given in packages}
            for given in packages:
                existing = current.get(given["id"])
                same = (
                    existing is not None
                    and existing.deleted_at is None
                    and (existing.type, existing.name, existing.description)
                    == (given["type"], given["name"], given["description"])
                )
                if not same:
                    current[given["id"]] = Package(
                        id=given["id"],
                        type=given["type"],
                        name=given["name"],
                        description=given["description"],
                        updated_at=now,
                    )
            for package in current.values():
                if package.id not in sent and package.deleted_at is None:
                    package.deleted_at = now
                    package.updated_at = now
                    warnings.append(
                        f"Package {package.id!r} was not part of this request and has been marked as deleted."
                    )
            self.package_puts[integration_id] += 1
        return warnings

    def active_packages(self, integration_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                package.api_view()
                for package in self.packages.get(integration_id, {}).values()
                if package.deleted_at is None
            ]

    def packages_admin_view(self, integration_id: str) -> dict[str, Any]:
        with self._lock:
            packages = self.packages.get(integration_id, {}).values()
            return {
                "integration_id": integration_id,
                "packages": [package.api_view() for package in packages if package.deleted_at is None],
                "deleted": [
                    {**package.api_view(), "deleted_at": iso_ms(package.deleted_at)}
                    for package in packages
                    if package.deleted_at is not None
                ],
                "puts": self.package_puts.get(integration_id, 0),
            }

    # orders

    def add_orders(self, orders: list[Order]) -> None:
        with self._lock:
            for order in orders:
                if order.id in self.orders:
                    raise ValueError(f"order {order.id} already exists")
            touched = set()
            for order in orders:
                self.orders[order.id] = order
                keys = self._order_keys[order.integration_id]
                if keys and order.sort_key < keys[-1]:
                    touched.add(order.integration_id)
                keys.append(order.sort_key)
            for integration_id in touched:
                self._order_keys[integration_id].sort()

    def get_order(self, order_id: str) -> Order | None:
        with self._lock:
            order = self.orders.get(order_id)
            return copy.deepcopy(order) if order else None

    def page_orders(
        self,
        integration_id: str,
        *,
        after: tuple[int, str] | None,
        limit: int,
        ids: list[str] | None = None,
        statuses: set[str] | None = None,
        created_after: datetime | None = None,
        with_status: bool = True,
    ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """One page in (created_at, id) order; returns the results and the key to continue after, if any."""
        floor = epoch_ms(created_after) if created_after else None
        with self._lock:
            if ids is not None:
                keys = sorted(
                    self.orders[order_id].sort_key
                    for order_id in set(ids)
                    if order_id in self.orders and self.orders[order_id].integration_id == integration_id
                )
            else:
                keys = self._order_keys.get(integration_id, [])
            start = 0
            if after is not None:
                start = bisect.bisect_right(keys, after)
            elif floor is not None:
                start = bisect.bisect_left(keys, (floor, ""))
            results: list[dict[str, Any]] = []
            last: tuple[int, str] | None = None
            for position in range(start, len(keys)):
                key = keys[position]
                if floor is not None and key[0] < floor:
                    continue
                order = self.orders[key[1]]
                if statuses is not None and order.status not in statuses:
                    continue
                if len(results) == limit:
                    return results, last
                results.append(order.api_view(with_status=with_status))
                last = key
            return results, None

    def record_result(
        self, integration_id: str, order_id: str, body: dict[str, Any], log_id: str | None
    ) -> str:
        """Apply a validated result write; returns "applied" or "noop". Raises WriteRejected or NotFound."""
        with self._lock:
            order = self.orders.get(order_id)
            if order is None or order.integration_id != integration_id:
                raise NotFound(order_id)
            status_before = order.status
            if status_before == "OPEN":
                outcome = "applied"
            elif body["status"] != status_before:
                raise WriteRejected(
                    f"The order's status is {status_before}; its status can only be changed while it is OPEN."
                )
            else:
                applied = [write for write in order.results if write["outcome"] == "applied"]
                outcome = "noop" if applied and applied[-1]["body"] == body else "applied"
            now = utc_now()
            if outcome == "applied":
                order.status = body["status"]
                order.updated_at = now
            order.results.append(
                {
                    "at": iso_ms(now),
                    "outcome": outcome,
                    "status_before": status_before,
                    "status_after": order.status,
                    "log_id": log_id,
                    "body": copy.deepcopy(body),
                }
            )
            return outcome

    def set_order_status(
        self, order_id: str, status: str, *, only_if_open: bool = False, message: str | None = None
    ) -> Order:
        with self._lock:
            order = self.orders.get(order_id)
            if order is None:
                raise NotFound(order_id)
            if only_if_open and order.status != "OPEN":
                return copy.deepcopy(order)
            order.status = status
            order.updated_at = utc_now()
            if message is not None:
                order.rejection_message = message
            return copy.deepcopy(order)

    def set_inline_url(self, order_id: str, url: str) -> None:
        with self._lock:
            if order_id in self.orders:
                self.orders[order_id].inline_assessment_url = url

    def list_orders(
        self,
        integration_id: str | None = None,
        statuses: set[str] | None = None,
        ids: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            if integration_id is not None:
                keys = list(self._order_keys.get(integration_id, []))
            else:
                keys = sorted(order.sort_key for order in self.orders.values())
            wanted = set(ids) if ids else None
            selected = [
                self.orders[order_id]
                for _, order_id in keys
                if (wanted is None or order_id in wanted)
                and (statuses is None or self.orders[order_id].status in statuses)
            ]
            end = None if limit is None else offset + limit
            return [order.admin_view() for order in selected[offset:end]]

    # webhook events

    def remember_event(self, event_id: str, event_type: str, body: bytes, subject: str | None) -> None:
        with self._lock:
            self.events[event_id] = {
                "id": event_id,
                "type": event_type,
                "body": body,
                "subject": subject,
                "deliveries": [],
            }
            while len(self.events) > self.max_events:
                self.events.popitem(last=False)

    def get_event(self, event_id: str) -> dict[str, Any]:
        with self._lock:
            if event_id not in self.events:
                raise NotFound(event_id)
            return dict(self.events[event_id])

    def add_delivery(self, event_id: str, delivery: dict[str, Any]) -> None:
        with self._lock:
            if event_id in self.events:
                self.events[event_id]["deliveries"].append(delivery)

    def list_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "id": event["id"],
                    "type": event["type"],
                    "subject": event["subject"],
                    "body": event["body"].decode("utf-8"),
                    "deliveries": copy.deepcopy(event["deliveries"]),
                }
                for event in self.events.values()
            ]
