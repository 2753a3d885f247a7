"""Thread-safe client for Kombo's ATS-Assessment API.

One ``KomboClient`` is meant to be shared by all threads of a task: it owns a lazily created httpx
connection pool, a rate budget shared by those threads and a per-integration in-flight cap. Only errors
Kombo calls transient are retried, with capped exponential backoff and full jitter, never sooner than the
server's ``Retry-After`` / ``ratelimit-reset``.

The write-back's bulk ``PUT .../result`` also has an asyncio path (``put_result_async``, on aiohttp, whose
C-parsed HTTP/1.1 costs a third of the CPU of httpx in threads or httpx's async client; see docs/writeback.md).
It shares the rate budget, the in-flight cap, the answer rule (``_answer``) and the retry rule
(``_after_failure``) with the synchronous calls.

Over 400 lines on purpose: the two transports of one client share one set of limits and one retry rule.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import httpx
from pydantic import BaseModel, ValidationError

from kombo_sync.backoff import exponential_delay, full_jitter
from kombo_sync.kombo.errors import (
    KomboError,
    KomboInvalidResponseError,
    KomboRateLimitError,
    KomboRetriesExhaustedError,
    KomboTimeoutError,
    KomboTransportError,
    error_from_response,
)
from kombo_sync.kombo.limits import DEFAULT_MAX_IN_FLIGHT, InFlightLimiter, RateBudget
from kombo_sync.kombo.models import (
    CheckApiKeyData,
    IntegrationDetails,
    KomboWarning,
    Order,
    OrdersPage,
    Package,
    RemotePackage,
    ResultPayload,
    SetPackagesRequest,
    format_kombo_datetime,
)

# A gateway timeout says the work did not finish in time, not that it did not happen.
_UNDECIDED = frozenset({504})

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_BASE_URL = "https://api.kombo.dev/v1"
DEFAULT_USER_AGENT = "kombo-assessment-sync/0.1 (+httpx)"
MAX_PAGE_SIZE = 250
IDS_PER_REQUEST = 100  # keeps the query string of GET /assessment/orders?ids=... well under URL length limits


def _format_created_after(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return format_kombo_datetime(value)


def _join(values: str | Iterable[str] | None) -> str | None:
    if values is None:
        return None
    if isinstance(values, str):
        return values
    return ",".join(values)


class KomboClient:
    """Kombo API client: bearer auth, ``X-Integration-Id``, timeouts, retries, limits and paging generators."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 300.0,
        rate_limit_per_second: float | None = None,
        rate_limit_burst: int | None = None,
        max_in_flight_per_integration: int = DEFAULT_MAX_IN_FLIGHT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = DEFAULT_USER_AGENT,
        rate_budget: RateBudget | None = None,
        in_flight_limiter: InFlightLimiter | None = None,
        max_connections: int = 100,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("a Kombo API key is required")
        if timeout <= 0:
            raise ValueError("timeout must be positive: every Kombo request needs one")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.user_agent = user_agent
        self._transport = transport
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._rng = rng
        self._max_connections = max_connections
        self.rate_budget = rate_budget or RateBudget(
            rate_limit_per_second, rate_limit_burst, clock=clock, sleep=sleep
        )
        self.in_flight = in_flight_limiter or InFlightLimiter(max_in_flight_per_integration, clock=clock)
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        # The asyncio path's session, bound to the event loop that made it.
        self._aio: aiohttp.ClientSession | None = None
        self._aio_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"KomboClient(base_url={self.base_url!r})"

    def __enter__(self) -> KomboClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    @property
    def supports_async(self) -> bool:
        """Whether ``put_result_async`` may be used: not with an injected httpx transport (a test double),
        which only the synchronous calls go through."""
        return self._transport is None

    async def aclose(self) -> None:
        """Close the asyncio path's session (from the loop that used it)."""
        if self._aio is not None:
            await self._aio.close()
            self._aio = self._aio_loop = None

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }

    def _client(self) -> httpx.Client:
        http = self._http
        if http is None:
            with self._http_lock:
                if self._http is None:
                    self._http = httpx.Client(
                        base_url=self.base_url,
                        headers=self._headers(),
                        timeout=httpx.Timeout(self.timeout),
                        limits=httpx.Limits(
                            max_connections=self._max_connections,
                            max_keepalive_connections=self._max_connections,
                        ),
                        transport=self._transport,
                    )
                http = self._http
        return http

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter delay before retry number ``attempt + 1``, but never less than the server asked."""
        ceiling = exponential_delay(self.backoff_base, attempt, cap=self.backoff_cap)
        return full_jitter(ceiling, at_least=retry_after, rng=self._rng)

    def _send_once(
        self,
        method: str,
        path: str,
        integration_id: str | None,
        params: Mapping[str, Any] | None,
        json_body: Any,
    ) -> Any:
        self.rate_budget.acquire()
        headers = {"X-Integration-Id": integration_id} if integration_id else None
        with self.in_flight.slot(integration_id):
            try:
                response = self._client().request(
                    method, path, params=params, json=json_body, headers=headers, timeout=self.timeout
                )
            except httpx.TimeoutException as exc:
                raise self._unanswered(exc, method, path, timed_out=True) from exc
            except httpx.RequestError as exc:  # connection, protocol and decoding failures
                raise self._unanswered(exc, method, path, timed_out=False) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        return self._answer(method, path, integration_id, response.status_code, body, response.headers)

    def _unanswered(self, exc: BaseException, method: str, path: str, *, timed_out: bool) -> KomboError:
        """A request that got no answer, whichever transport carried it: it timed out, or the connection,
        protocol or decoding failed. Only the exception's type is kept (its text may hold a URL)."""
        if timed_out:
            return KomboTimeoutError(
                f"timed out after {self.timeout:g} s ({type(exc).__name__})", method=method, path=path
            )
        return KomboTransportError(f"transport error ({type(exc).__name__})", method=method, path=path)

    def _answer(
        self,
        method: str,
        path: str,
        integration_id: str | None,
        status: int,
        body: Any,
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        """One attempt's answer, whichever transport carried it: the limits learn from its headers, then
        Kombo's success envelope is returned or the typed error raised."""
        error = None
        if status >= 400 or (isinstance(body, dict) and body.get("status") == "error"):
            error = error_from_response(status, body, headers, method, path)
        # Only Kombo's own rate limit pauses every thread; a concurrency or ATS limit is per integration.
        self.rate_budget.observe(headers, rate_limited=isinstance(error, KomboRateLimitError))
        if isinstance(error, KomboRateLimitError) and error.retry_after:
            self.rate_budget.pause_for(error.retry_after)
        self.in_flight.observe(integration_id, headers)
        if error is not None:
            raise error
        if not isinstance(body, dict) or "data" not in body:
            raise KomboInvalidResponseError(
                "response is not Kombo's success envelope",
                http_status=status,
                method=method,
                path=path,
            )
        return body

    def _after_failure(
        self,
        error: KomboError,
        attempt: int,
        unanswered: bool,
        method: str,
        path: str,
        integration_id: str | None,
    ) -> tuple[bool, float]:
        """The one retry rule: raises when ``error`` ends the call, else returns (some attempt got no definite
        answer so far, the delay before the next attempt)."""
        unanswered = unanswered or error.http_status is None or error.http_status in _UNDECIDED
        error.maybe_applied = unanswered
        if not error.retriable:
            raise error
        if attempt >= self.max_retries or (
            # Blocking a worker for longer than this is worse than failing the task and retrying it.
            error.retry_after is not None and error.retry_after > self.max_retry_after
        ):
            exhausted = KomboRetriesExhaustedError(error, attempts=attempt + 1)
            exhausted.maybe_applied = unanswered
            raise exhausted from error
        delay = self.backoff_delay(attempt, error.retry_after)
        log.warning(
            "Kombo %s %s (integration %s) failed with %s %s, retry %s/%s in %.2f s",
            method,
            path,
            integration_id,
            error.http_status,
            error.code or type(error).__name__,
            attempt + 1,
            self.max_retries,
            delay,
        )
        return unanswered, delay

    def _request(
        self,
        method: str,
        path: str,
        *,
        integration_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> dict[str, Any]:
        attempt = 0
        unanswered = False  # some attempt got no definite answer: Kombo may have carried it out
        while True:
            try:
                body: dict[str, Any] = self._send_once(method, path, integration_id, params, json_body)
                return body
            except KomboError as error:
                unanswered, delay = self._after_failure(
                    error, attempt, unanswered, method, path, integration_id
                )
            self._sleep(delay)
            attempt += 1

    # The asyncio path

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio_loop is not loop or self._aio.closed:
            session = aiohttp.ClientSession(
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
            # aiohttp re-sends an idempotent request once when a kept-alive connection drops; a PUT whose reply
            # was lost may have been applied, and whether it was is the caller's to resolve, not a silent resend.
            session._retry_connection = False
            self._aio, self._aio_loop = session, loop
        return self._aio

    async def _send_once_async(
        self, method: str, path: str, integration_id: str | None, content: bytes | None
    ) -> dict[str, Any]:
        await self.rate_budget.acquire_async(self._async_sleep)
        headers = {"X-Integration-Id": integration_id} if integration_id else {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        session = self._session()
        async with self.in_flight.slot_async(integration_id):
            try:
                async with session.request(
                    method, self.base_url + path, data=content, headers=headers
                ) as response:
                    raw = await response.read()
                    status, response_headers = response.status, response.headers
            except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (some also ClientErrors)
                raise self._unanswered(exc, method, path, timed_out=True) from exc
            except aiohttp.ClientError as exc:  # connection, protocol and payload failures
                raise self._unanswered(exc, method, path, timed_out=False) from exc
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return self._answer(method, path, integration_id, status, body, response_headers)

    async def _request_async(
        self, method: str, path: str, *, integration_id: str | None = None, content: bytes | None = None
    ) -> dict[str, Any]:
        """``_request`` on the event loop: the same limits, answer rule and retry rule."""
        attempt = 0
        unanswered = False
        while True:
            try:
                return await self._send_once_async(method, path, integration_id, content)
            except KomboError as error:
                unanswered, delay = self._after_failure(
                    error, attempt, unanswered, method, path, integration_id
                )
            await self._async_sleep(delay)
            attempt += 1

    @staticmethod
    def _parse(model: type[ModelT], data: Any, method: str, path: str) -> ModelT:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise KomboInvalidResponseError(
                f"unexpected response shape: {exc.error_count()} validation errors, first at "
                f"{'.'.join(str(part) for part in exc.errors()[0]['loc'])}",
                method=method,
                path=path,
            ) from exc

    def _warnings(self, body: Mapping[str, Any], integration_id: str, what: str) -> list[str]:
        messages: list[str] = []
        for raw in body.get("warnings") or []:
            try:
                messages.append(KomboWarning.model_validate(raw).message)
            except ValidationError:
                messages.append(str(raw))
        for message in messages:
            log.warning("Kombo warning for integration %s on %s: %s", integration_id, what, message)
        return messages

    def check_api_key(self) -> CheckApiKeyData:
        """``GET /check-api-key``: verifies the key, returns its environment."""
        body = self._request("GET", "/check-api-key")
        return self._parse(CheckApiKeyData, body["data"], "GET", "/check-api-key")

    def get_integration(self, integration_id: str) -> IntegrationDetails:
        """``GET /integrations/{integration_id}``."""
        path = f"/integrations/{quote(integration_id, safe=':')}"
        body = self._request("GET", path)
        return self._parse(IntegrationDetails, body["data"], "GET", path)

    def get_packages(self, integration_id: str) -> list[RemotePackage]:
        """``GET /assessment/packages`` (a debugging aid: Kombo's copy of what we last set)."""
        path = "/assessment/packages"
        body = self._request("GET", path, integration_id=integration_id)
        data = body["data"] if isinstance(body["data"], dict) else {}
        return [self._parse(RemotePackage, item, "GET", path) for item in data.get("packages") or []]

    def set_packages(self, integration_id: str, packages: Sequence[Package | Mapping[str, Any]]) -> list[str]:
        """``PUT /assessment/packages``: replace the integration's whole catalog; returns Kombo's warnings."""
        request = SetPackagesRequest(packages=[Package.model_validate(p) for p in packages])
        body = self._request(
            "PUT",
            "/assessment/packages",
            integration_id=integration_id,
            json_body=request.model_dump(mode="json", by_alias=True),
        )
        log.info("Set %s packages for integration %s", len(request.packages), integration_id)
        return self._warnings(body, integration_id, "PUT /assessment/packages")

    def iter_order_pages(
        self,
        integration_id: str,
        *,
        statuses: str | Iterable[str] | None = None,
        ids: str | Iterable[str] | None = None,
        created_after: datetime | str | None = None,
        page_size: int = 100,
    ) -> Iterator[list[Order]]:
        """Yield pages of ``GET /assessment/orders``, following ``next`` with the same filters."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        joined_ids = _join(ids)
        if joined_ids is not None and not joined_ids:
            return  # an empty id filter asks for nothing, not for every order
        filters: dict[str, Any] = {"page_size": page_size}
        if (joined_statuses := _join(statuses)) is not None:
            filters["statuses"] = joined_statuses
        if joined_ids is not None:
            filters["ids"] = joined_ids
        if (after := _format_created_after(created_after)) is not None:
            filters["created_after"] = after

        path = "/assessment/orders"
        cursor: str | None = None
        seen_cursors: set[str] = set()
        page_number = 0
        total = 0
        while True:
            params = dict(filters) if cursor is None else {**filters, "cursor": cursor}
            body = self._request("GET", path, integration_id=integration_id, params=params)
            page = self._parse(OrdersPage, body["data"], "GET", path)
            page_number += 1
            total += len(page.results)
            log.info(
                "Kombo orders for integration %s page %s, %s orders so far",
                integration_id,
                page_number,
                total,
            )
            yield page.results
            if not page.next:
                return
            if page.next in seen_cursors:
                raise KomboInvalidResponseError(
                    f"Kombo returned cursor of page {page_number} again; stopping to avoid a loop",
                    method="GET",
                    path=path,
                )
            seen_cursors.add(page.next)
            cursor = page.next

    def iter_orders(
        self,
        integration_id: str,
        *,
        statuses: str | Iterable[str] | None = None,
        ids: str | Iterable[str] | None = None,
        created_after: datetime | str | None = None,
        page_size: int = 100,
    ) -> Iterator[Order]:
        """Yield orders one by one across all pages (see ``iter_order_pages``)."""
        for page in self.iter_order_pages(
            integration_id, statuses=statuses, ids=ids, created_after=created_after, page_size=page_size
        ):
            yield from page

    def get_orders_by_ids(self, integration_id: str, ids: Iterable[str]) -> list[Order]:
        """The orders with these ids (missing ids are simply absent), fetched in chunks."""
        unique = list(dict.fromkeys(ids))
        orders: list[Order] = []
        for start in range(0, len(unique), IDS_PER_REQUEST):
            chunk = unique[start : start + IDS_PER_REQUEST]
            orders.extend(
                self.iter_orders(integration_id, ids=chunk, page_size=min(MAX_PAGE_SIZE, len(chunk)))
            )
        return orders

    def put_result(
        self, integration_id: str, order_id: str, payload: ResultPayload | Mapping[str, Any]
    ) -> list[str]:
        """``PUT /assessment/orders/{order_id}/result``; returns Kombo's warnings."""
        result = payload if isinstance(payload, ResultPayload) else ResultPayload.model_validate(payload)
        path = f"/assessment/orders/{quote(order_id, safe='')}/result"
        body = self._request("PUT", path, integration_id=integration_id, json_body=result.to_wire())
        log.info("Wrote %s result of order %s for integration %s", result.status, order_id, integration_id)
        return self._warnings(body, integration_id, f"PUT {path}")

    async def put_result_async(
        self,
        integration_id: str,
        order_id: str,
        payload: ResultPayload | Mapping[str, Any],
        *,
        validated: bool = False,
    ) -> list[str]:
        """``put_result`` from a coroutine (see the module docstring). ``validated``: ``payload`` is already
        Kombo's wire form, checked when it was queued, and is sent as it is. Serialised once for every attempt."""
        if validated and not isinstance(payload, ResultPayload):
            wire: Mapping[str, Any] = payload
        else:
            wire = (
                payload if isinstance(payload, ResultPayload) else ResultPayload.model_validate(payload)
            ).to_wire()
        path = f"/assessment/orders/{quote(order_id, safe='')}/result"
        content = json.dumps(wire, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        body = await self._request_async("PUT", path, integration_id=integration_id, content=content)
        # One line per result would be thousands a run; the outbox logs each batch recorded sent.
        log.debug(
            "Wrote %s result of order %s for integration %s", wire.get("status"), order_id, integration_id
        )
        if body.get("warnings"):
            return self._warnings(body, integration_id, f"PUT {path}")
        return []
