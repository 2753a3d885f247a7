"""Run the sandbox apps in a background thread and drive them: for tests, the demo and benchmarks.

Example::

    with run_kombo_sandbox() as kombo:
        integration = kombo.admin.create_integration(tool="workday")
        order = kombo.admin.create_order(integration["id"], "pkg-1")
        httpx.get(f"{kombo.api_url}/assessment/orders", headers=kombo.headers(integration["id"]))
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.kombo_app import KomboSandboxSettings, create_kombo_app
from sandbox.platform_app import PlatformSettings, create_platform_app


class ServerThread:
    """A uvicorn server for `app` on a free port, in a daemon thread: `.url`, `.stop()`, a context manager."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, graceful_shutdown_seconds: int = 1
    ) -> None:
        self.app = app
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=graceful_shutdown_seconds,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server on port {self.port} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SandboxAdminError(RuntimeError):
    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"sandbox admin API answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class _AdminClient:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise SandboxAdminError(response.status_code, detail)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SandboxAdmin(_AdminClient):
    """Typed client of the Kombo sandbox's admin API (`/_sandbox`, see sandbox/README.md)."""

    def health(self) -> bool:
        return bool(self._call("GET", "/_sandbox/health")["ok"])

    def config(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sandbox/config"))

    def set_webhook(self, url: str | None, secret: str | None = None) -> dict[str, Any]:
        """Where webhooks go (None: nowhere) and, optionally, the signing secret."""
        return dict(
            self._call("PUT", "/_sandbox/webhook", json=_drop_none({"secret": secret}) | {"url": url})
        )

    def get_knobs(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sandbox/knobs"))

    def set_knobs(self, **knobs: Any) -> dict[str, Any]:
        """Change some knobs, e.g. `set_knobs(rate_limit=10, rate_limit_window_seconds=1, latency_ms="5-20")`."""
        return dict(self._call("PATCH", "/_sandbox/knobs", json=knobs))

    def reset(self, *, keep_knobs: bool = False, keep_webhook: bool = False) -> None:
        """Back to the start-up state: no orders, packages or log; start-up knobs and webhook."""
        self._call("POST", "/_sandbox/reset", json={"keep_knobs": keep_knobs, "keep_webhook": keep_webhook})

    def create_integration(
        self,
        tool: str = "workday",
        *,
        integration_id: str | None = None,
        organization_name: str = "Acme Inc.",
        creator_email: str | None = "it-admin@acme.example.com",
        origin_id: str | None = None,
        category: str = "ASSESSMENT",
        status: str = "ACTIVE",
        setup_status: str = "COMPLETED",
        qa_status: str = "PASSED",
        created_at: datetime | str | None = None,
        emit_webhook: bool | None = None,
    ) -> dict[str, Any]:
        """The new integration's details (`id` is `<tool>:<random>`), plus `webhook`: the delivery or None."""
        body = {
            "tool": tool,
            "id": integration_id,
            "category": category,
            "end_user": {
                "organization_name": organization_name,
                "creator_email": creator_email,
                "origin_id": origin_id,
            },
            "status": status,
            "setup_status": setup_status,
            "qa_status": qa_status,
            "created_at": _iso(created_at),
            "emit_webhook": emit_webhook,
        }
        return dict(self._call("POST", "/_sandbox/integrations", json=body))

    def list_integrations(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_sandbox/integrations"))

    def get_integration(self, integration_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/_sandbox/integrations/{integration_id}"))

    def set_integration_state(
        self,
        integration_id: str,
        *,
        status: str | None = None,
        setup_status: str | None = None,
        qa_status: str | None = None,
        emit_webhook: bool | None = None,
    ) -> dict[str, Any]:
        """Change status / setup_status / qa_status; sends `integration-state-changed` when a webhook is set."""
        body = {
            "status": status,
            "setup_status": setup_status,
            "qa_status": qa_status,
            "emit_webhook": emit_webhook,
        }
        return dict(self._call("PATCH", f"/_sandbox/integrations/{integration_id}", json=body))

    def delete_integration(self, integration_id: str, *, emit_webhook: bool | None = None) -> dict[str, Any]:
        params = {} if emit_webhook is None else {"emit_webhook": str(emit_webhook).lower()}
        return dict(self._call("DELETE", f"/_sandbox/integrations/{integration_id}", params=params))

    def list_packages(self, integration_id: str) -> list[dict[str, Any]]:
        """The integration's current packages (what `GET /v1/assessment/packages` shows)."""
        return list(self.package_history(integration_id)["packages"])

    def package_history(self, integration_id: str) -> dict[str, Any]:
        """`packages`, `deleted` (with `deleted_at`) and `puts` (how many PUTs were accepted)."""
        return dict(self._call("GET", f"/_sandbox/integrations/{integration_id}/packages"))

    def create_order(
        self,
        integration_id: str,
        package_id: str,
        *,
        order_id: str | None = None,
        candidate: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
        application: dict[str, Any] | None = None,
        created_at: datetime | str | None = None,
        status: str = "OPEN",
        deliver_webhook: bool | None = None,
    ) -> dict[str, Any]:
        """An order as the ATS creates it; `assessment:order-received` goes out when a webhook URL is set
        (or `deliver_webhook=True`). Returns the order (admin view) plus `webhook`: the delivery or None."""
        body = {
            "integration_id": integration_id,
            "package_id": package_id,
            "id": order_id,
            "candidate": candidate,
            "job": job,
            "application": application,
            "created_at": _iso(created_at),
            "status": status,
            "deliver_webhook": deliver_webhook,
        }
        return dict(self._call("POST", "/_sandbox/orders", json=body))

    def bulk_create_orders(
        self,
        integration_id: str | Iterable[str],
        count: int,
        *,
        package_id: str = "sandbox-package",
        package_ids: list[str] | None = None,
        created_at_start: datetime | str | None = None,
        created_at_step_ms: int = 1,
        status: str = "OPEN",
        return_ids: bool = True,
    ) -> list[str]:
        """Many orders at once, no webhooks (benchmarks); spread round-robin over several integrations."""
        body: dict[str, Any] = {
            "count": count,
            "package_id": package_id,
            "package_ids": package_ids,
            "created_at_start": _iso(created_at_start),
            "created_at_step_ms": created_at_step_ms,
            "status": status,
            "return_ids": return_ids,
        }
        if isinstance(integration_id, str):
            body["integration_id"] = integration_id
        else:
            body["integration_ids"] = list(integration_id)
        return list(self._call("POST", "/_sandbox/orders/bulk", json=body)["ids"] or [])

    def get_order(self, order_id: str) -> dict[str, Any]:
        """The order with `result` (the last applied write's body) and `results` (every accepted write)."""
        return dict(self._call("GET", f"/_sandbox/orders/{order_id}"))

    def list_orders(
        self,
        integration_id: str | None = None,
        *,
        statuses: Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        params = _drop_none(
            {
                "integration_id": integration_id,
                "statuses": ",".join(statuses) if statuses is not None else None,
                "ids": ",".join(ids) if ids is not None else None,
                "offset": offset,
                "limit": limit,
            }
        )
        return list(self._call("GET", "/_sandbox/orders", params=params))

    def cancel_order(self, order_id: str) -> dict[str, Any]:
        """The recruiter cancels the order in the ATS."""
        return dict(self._call("POST", f"/_sandbox/orders/{order_id}/cancel"))

    def send_webhook(
        self,
        event_type: str,
        *,
        order_id: str | None = None,
        integration_id: str | None = None,
        package_id: str | None = None,
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
        bad_signature: bool = False,
        url: str | None = None,
        apply_rejection: bool = True,
    ) -> dict[str, Any]:
        """Deliver one signed event now; returns `status_code`, `body`, `json`, `error`, `event_id`, ...

        Order events take an existing `order_id`, or create an order for `integration_id`; integration events
        take `integration_id`; `data` sends a verbatim payload instead.
        """
        body = _drop_none(
            {
                "type": event_type,
                "order_id": order_id,
                "integration_id": integration_id,
                "package_id": package_id,
                "data": data,
                "event_id": event_id,
                "url": url,
            }
        ) | {"bad_signature": bad_signature, "apply_rejection": apply_rejection}
        return dict(self._call("POST", "/_sandbox/webhooks", json=body))

    def redeliver_webhook(
        self, event_id: str, *, bad_signature: bool = False, url: str | None = None
    ) -> dict[str, Any]:
        """Send an earlier event again, byte for byte."""
        body = _drop_none({"url": url}) | {"bad_signature": bad_signature}
        return dict(self._call("POST", f"/_sandbox/webhooks/{event_id}/redeliver", json=body))

    def list_webhooks(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_sandbox/webhooks"))

    def requests(
        self, *, since: int = 0, path_prefix: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The `/v1` request log: seq, time, method, path, query, integration_id, status, fault, duration_ms."""
        params = _drop_none({"since": since, "path_prefix": path_prefix, "limit": limit})
        return list(self._call("GET", "/_sandbox/requests", params=params))

    def clear_requests(self) -> None:
        """Empty the request log and counters, and restart the max-concurrency high-water marks."""
        self._call("DELETE", "/_sandbox/requests")

    def log_entry(self, log_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/_sandbox/logs/{log_id}"))

    def stats(self) -> dict[str, Any]:
        """`requests_total`, `by_route` {route: {status: n}}, `faults`, `max_concurrency`, ..."""
        return dict(self._call("GET", "/_sandbox/stats"))


class PlatformAdmin(_AdminClient):
    """Client of the platform stand-in's admin API (`/_platform`)."""

    def health(self) -> bool:
        return bool(self._call("GET", "/_platform/health")["ok"])

    def invitations(self) -> dict[str, Any]:
        """`invitations`, `requests_by_order`, `creations_by_order`, `duplicates` (orders invited twice),
        `revoke_requests_by_order` and `revocations_by_order` (revoke calls that did revoke)."""
        return dict(self._call("GET", "/_platform/invitations"))

    def simulate(
        self,
        count: int | None = None,
        *,
        order_ids: list[str] | None = None,
        seed: int | None = None,
        cancel_rate: float | None = None,
    ) -> dict[str, Any]:
        """Let `count` (default: all) invited candidates finish; their results land in the warehouse."""
        body = _drop_none({"count": count, "order_ids": order_ids, "seed": seed, "cancel_rate": cancel_rate})
        return dict(self._call("POST", "/_platform/simulate", json=body))

    def get_knobs(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_platform/knobs"))

    def set_knobs(self, **knobs: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", "/_platform/knobs", json=knobs))

    def reset(self, *, keep_knobs: bool = False, truncate_warehouse: bool = True) -> None:
        self._call(
            "POST",
            "/_platform/reset",
            json={"keep_knobs": keep_knobs, "truncate_warehouse": truncate_warehouse},
        )


class KomboSandbox(ServerThread):
    """The Kombo sandbox in a thread: `.url`, `.api_url` (`.../v1`), `.api_key`, `.admin`, `.set_webhook()`."""

    def __init__(
        self, settings: KomboSandboxSettings | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.settings = settings or KomboSandboxSettings()
        super().__init__(create_kombo_app(self.settings), host, port)
        self.api_key = self.settings.api_key
        self.admin = SandboxAdmin(self.url)

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def webhook_secret(self) -> str:
        return str(self.app.state.runtime.webhook_secret)

    def set_webhook(self, url: str | None, secret: str | None = None) -> None:
        self.admin.set_webhook(url, secret)

    def headers(self, integration_id: str | None = None) -> dict[str, str]:
        """`Authorization` (and `X-Integration-Id`) as a Kombo client sends them."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if integration_id is not None:
            headers["X-Integration-Id"] = integration_id
        return headers

    def client(self, integration_id: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """An httpx client on `.api_url` with those headers (close it, or use it as a context manager)."""
        return httpx.Client(base_url=self.api_url, headers=self.headers(integration_id), timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self.admin.close()
        super().stop(timeout)


class PlatformStandin(ServerThread):
    """The platform stand-in in a thread: `.url`, `.warehouse_url`, `.api_key`, `.admin`."""

    def __init__(self, settings: PlatformSettings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings
        super().__init__(create_platform_app(settings), host, port)
        self.warehouse_url = settings.warehouse_url
        self.api_key = settings.api_key
        self.admin = PlatformAdmin(self.url)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def stop(self, timeout: float = 15.0) -> None:
        self.admin.close()
        super().stop(timeout)


def run_kombo_sandbox(settings: KomboSandboxSettings | None = None, *, port: int = 0) -> KomboSandbox:
    """Start the Kombo sandbox on a free port (or `port`) and wait until it answers."""
    return KomboSandbox(settings, port=port).start()


def run_platform_standin(
    warehouse_url: str | None = None, settings: PlatformSettings | None = None, *, port: int = 0
) -> PlatformStandin:
    """Start the platform stand-in; `warehouse_url` overrides the settings' (default: `.local/...db`)."""
    settings = settings or PlatformSettings()
    if warehouse_url is not None:
        settings.warehouse_url = warehouse_url
    return PlatformStandin(settings, port=port).start()


@dataclass
class ReceivedWebhook:
    body: bytes
    headers: dict[str, str]
    path: str
    received_at: float = field(default_factory=time.monotonic)

    @property
    def signature(self) -> str | None:
        return self.headers.get("x-kombo-signature")

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookRecorder(ServerThread):
    """A tiny webhook receiver that keeps every raw request and answers as told (default 200 `{}`).

    `respond_with(422, {"status": "ORDER_REJECTED", "message": "..."})` changes the answer;
    `responder = lambda received: (status, json_body)` decides per request.
    """

    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self._lock = threading.Lock()
        self._answer: tuple[int, Any] = (200, {})
        self.responder: Callable[[ReceivedWebhook], tuple[int, Any]] | None = None
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(request: Request, path: str) -> Response:
            received = ReceivedWebhook(await request.body(), dict(request.headers), "/" + path)
            with self._lock:
                self.received.append(received)
                answer = self.responder(received) if self.responder else self._answer
            status, payload = answer
            if isinstance(payload, str | bytes):
                return Response(payload, status_code=status, media_type="text/plain")
            return JSONResponse(payload, status_code=status)

        super().__init__(app)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/kombo/webhooks"

    def respond_with(self, status: int, payload: Any = None) -> None:
        with self._lock:
            self._answer = (status, {} if payload is None else payload)

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self._answer = (200, {})
            self.responder = None
