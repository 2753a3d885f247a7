"""Builders of Kombo webhook events and signed requests, for the tests, the benchmark and manual checks.

`KOMBO_EXAMPLES` are the examples of Kombo's OpenAPI document (`webhooks.*.post.requestBody...example`,
copy of 2026-05-01), kept verbatim so the tests do not need the document itself.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from kombo_sync.kombo.signatures import SIGNATURE_HEADER, sign

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"

_END_USER: dict[str, Any] = {
    "origin_id": "36123",
    "creator_email": "user@example.com",
    "organization_name": "Acme, Inc.",
}
_ORDER_DATA: dict[str, Any] = {
    "id": "B5KQKhAgTv6ZwzrfAbqbhipd",
    "integration_id": "workday:CBNMt7dSNCzBdnRTx87dev4E",
    "package_id": "typescript_test",
    "status": "OPEN",
    "candidate": {
        "remote_id": "12345",
        "email": "john.doe@gmail.com",
        "first_name": "John",
        "last_name": "Doe",
        "phone": "+1 123 456 7890",
    },
    "application": {"remote_id": "54321"},
    "job": {
        "remote_id": "67890",
        "name": "Bottle Opener",
        "job_code": "BO-2024-01",
        "description": (
            "<p>We are looking for a skilled and energetic individual to join our team as the chief bottle "
            "open officer. This unique role requires precision, attention to detail, and the ability to handle "
            "a high volume of beverage bottles in a fast-paced environment. The ideal candidate will ensure "
            "bottles are opened swiftly and safely while maintaining hygiene standards.</p>"
        ),
        "location": {
            "street_1": "Lohmühlenstraße 65",
            "city": "Berlin",
            "state": "Berlin",
            "zip_code": "12435",
            "country": "DE",
            "raw": "Berlin, Germany",
        },
        "hiring_team": [
            {
                "first_name": "Jane",
                "last_name": "Doe",
                "remote_id": "78901",
                "email": "jane.doe@gmail.com",
                "hiring_team_roles": ["RECRUITER"],
            }
        ],
    },
}
KOMBO_EXAMPLES: dict[str, dict[str, Any]] = {
    "assessment:order-received": {
        "id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
        "type": "assessment:order-received",
        "data": _ORDER_DATA,
    },
    "inline-assessment:order-received": {
        "id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
        "type": "inline-assessment:order-received",
        "data": _ORDER_DATA,
    },
    "integration-created": {
        "id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
        "type": "integration-created",
        "data": {
            "id": "personio:CBNMt7dSNCzBdnRTx87dev4E",
            "tool": "personio",
            "category": "HRIS",
            "end_user": _END_USER,
        },
    },
    "integration-deleted": {
        "id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
        "type": "integration-deleted",
        "data": {
            "id": "personio:CBNMt7dSNCzBdnRTx87dev4E",
            "tool": "personio",
            "category": "HRIS",
            "end_user": _END_USER,
            "deleted_at": "2021-09-01T12:00:00.000Z",
        },
    },
    "integration-state-changed": {
        "id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
        "type": "integration-state-changed",
        "data": {
            "integration_tool": "personio",
            "integration_category": "HRIS",
            "integration_id": "personio:CBNMt7dSNCzBdnRTx87dev4E",
            "end_user": _END_USER,
            "qa_status": "PASSED",
            "setup_status": "COMPLETED",
            "state": "ACTIVE",
            "updated_at": "2021-09-01T12:00:00.000Z",
        },
    },
}

# Kombo's public OpenAPI document for the assessment endpoints, kept in the repository for the tests.
OPENAPI_LOCATIONS = (PROJECT_ROOT / "docs" / "kombo" / "openapi-assessment.json",)


def openapi_examples() -> dict[str, dict[str, Any]] | None:
    """The webhook examples of Kombo's OpenAPI document when a copy is at hand, else None."""
    for path in OPENAPI_LOCATIONS:
        if path.is_file():
            spec = json.loads(path.read_text())
            found: dict[str, dict[str, Any]] = {}
            for name, item in spec.get("webhooks", {}).items():
                content = item.get("post", {}).get("requestBody", {}).get("content", {})
                example = content.get("application/json", {}).get("example")
                if example is not None:
                    found[name] = example
            return found
    return None


def new_id() -> str:
    return uuid.uuid4().hex[:24]


def order_event(
    *,
    event_id: str | None = None,
    order_id: str | None = None,
    integration_id: str = "workday:CBNMt7dSNCzBdnRTx87dev4E",
    package_id: str = "typescript_test",
    email: str = "john.doe@gmail.com",
    application_remote_id: str | None = "",
    event_type: str = "assessment:order-received",
    status: str = "OPEN",
) -> dict[str, Any]:
    """An order-received event shaped like Kombo's example, with the ids and candidate you choose (by default
    each order comes from its own ATS application, as orders for different candidates do)."""
    data = copy.deepcopy(_ORDER_DATA)
    data.update(id=order_id or new_id(), integration_id=integration_id, package_id=package_id, status=status)
    data["candidate"]["email"] = email
    data["application"]["remote_id"] = (
        f"app-{data['id']}" if application_remote_id == "" else application_remote_id
    )
    return {"id": event_id or new_id(), "type": event_type, "data": data}


def integration_event(
    event_type: str,
    integration_id: str,
    *,
    event_id: str | None = None,
    category: str = "ASSESSMENT",
    state: str = "ACTIVE",
    origin_id: str | None = "36123",
) -> dict[str, Any]:
    """An `integration-created`, `-deleted` or `-state-changed` event for `integration_id`."""
    tool = integration_id.split(":", 1)[0]
    end_user = {**_END_USER, "origin_id": origin_id}
    data: dict[str, Any]
    if event_type == "integration-state-changed":
        data = {
            "integration_tool": tool,
            "integration_category": category,
            "integration_id": integration_id,
            "end_user": end_user,
            "qa_status": "PASSED",
            "setup_status": "COMPLETED",
            "state": state,
            "updated_at": "2026-01-05T09:00:00.000Z",
        }
    else:
        data = {"id": integration_id, "tool": tool, "category": category, "end_user": end_user}
        if event_type == "integration-deleted":
            data["deleted_at"] = "2026-01-05T09:00:00.000Z"
    return {"id": event_id or new_id(), "type": event_type, "data": data}


def encode(event: Mapping[str, Any] | bytes) -> bytes:
    """The raw body as Kombo would send it (compact JSON, UTF-8)."""
    if isinstance(event, bytes):
        return event
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate can only travel as a \u escape
        return json.dumps(event, separators=(",", ":")).encode("ascii")


def signed(event: Mapping[str, Any] | bytes, secret: str) -> tuple[bytes, dict[str, str]]:
    """(raw body, headers) of a correctly signed delivery."""
    body = encode(event)
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveAirflow:
    """Airflow components (`api-server`, `scheduler`, `dag-processor`, `triggerer`) as child processes on
    loopback, for live tests and the benchmark. Each runs in its own process group and is stopped by `stop()`.

    `home` is the AIRFLOW_HOME; `env` adds to (and overrides) the current environment, e.g. the webhook
    secret and `AIRFLOW_CONN_KOMBO_STATE`. Logs go to `<log_dir>/<component>.log`. `batch_nice` > 0 starts every
    component but the api-server at that niceness (and so the task processes they start).
    """

    def __init__(
        self,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        components: Sequence[str] = ("api-server",),
        port: int | None = None,
        log_dir: Path | None = None,
        migrate: bool = True,
        batch_nice: int = 0,
    ) -> None:
        self.home = Path(home)
        self.batch_nice = batch_nice
        self.port = port or free_port()
        self.components = tuple(components)
        self.log_dir = Path(log_dir or self.home / "logs")
        self.migrate = migrate
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "include"), str(PROJECT_ROOT)]),
            }
        )
        self.env.update(env or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Any] = []

    @property
    def webhook_url(self) -> str:
        prefix = self.env.get("KOMBO_WEBHOOK_PREFIX", "/kombo").rstrip("/")
        return f"{self.url}{prefix}/webhooks"

    def airflow(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run one `airflow ...` CLI command in this environment (raises on failure)."""
        return subprocess.run(
            [str(AIRFLOW_BIN), *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def start(self, timeout: float = 120.0) -> LiveAirflow:
        """Migrate the metadata DB (once per home), start the components, wait until the API answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.migrate:
            self.airflow("db", "migrate", timeout=timeout)
        for component in self.components:
            self.restart(component)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, component: str) -> subprocess.Popen[bytes]:
        """Start one component (again, after it was stopped or died), logging to the same file."""
        args = [str(AIRFLOW_BIN), component]
        if component == "api-server":
            args += ["--port", str(self.port), "--host", "127.0.0.1"]
        log = open(self.log_dir / f"{component}.log", "ab")  # closed in stop()
        self._logs.append(log)
        niceness = 0 if component == "api-server" else self.batch_nice
        self.processes[component] = subprocess.Popen(
            args, env=self.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=functools.partial(os.nice, niceness) if niceness > 0 else None,
        )  # fmt: skip
        return self.processes[component]

    def wait_ready(self, timeout: float) -> None:
        if "api-server" not in self.processes:
            return
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                for name, proc in self.processes.items():
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"airflow {name} exited with {proc.returncode}; see {self.log_dir}"
                        )
                try:
                    if client.get(f"{self.url}/api/v2/monitor/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"airflow api-server not ready after {timeout:.0f} s; see {self.log_dir}")

    def log_text(self, component: str = "api-server") -> str:
        path = self.log_dir / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each component's process group, SIGKILL what is still there after `timeout`."""
        self.stop_components(*self.processes, timeout=timeout)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def stop_components(self, *components: str, timeout: float = 20.0) -> None:
        """Stop only these components (e.g. a scheduler started for one test), the others keep running."""
        chosen = [self.processes.pop(name) for name in components if name in self.processes]
        for proc in chosen:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in chosen:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> LiveAirflow:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
