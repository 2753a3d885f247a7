"""Headless Chromium driven over the DevTools protocol, for the console's browser tests (no Playwright, no
download: Debian's `chromium` package and the `websockets` client the venv already has).

`chromium_path()` finds the browser; `HeadlessChromium` starts it on loopback with a throw-away profile, and
`login` (Airflow's own login form), `set_cookie`, `clear_cookies`, `open` (waits for the load event and for the
page's scripts), `submit` (a click that navigates), `type_text`, `evaluate` and `screenshot` drive one tab.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def chromium_path() -> str | None:
    """The Chromium binary (`chromium`, or `CHROMIUM_BIN`), or None when it is not installed."""
    configured = os.environ.get("CHROMIUM_BIN")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


class HeadlessChromium:
    """One headless Chromium process with one tab, stopped (with its profile removed) by `close()`."""

    def __init__(self, binary: str, *, timeout: float = 30.0) -> None:
        from websockets.sync.client import connect

        self.timeout = timeout
        self._profile = Path(tempfile.mkdtemp(prefix="kombo-chromium-"))
        self._ids = itertools.count(1)
        args = [
            binary,
            "--headless=new",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={self._profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            port = self._devtools_port()
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5.0).json()
            target = next(page for page in pages if page.get("type") == "page")
            self._socket = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
            self.call("Page.enable")
            self.call("Network.enable")
            # Documents of iframes (the Airflow UI embeds the console) are not the page's own status.
            self._main_frame = self.call("Page.getFrameTree")["frameTree"]["frame"]["id"]
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            if marker.exists():
                text = marker.read_text().split()
                if text:
                    return int(text[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events that arrive meanwhile are dropped)."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def set_cookie(self, name: str, value: str, url: str) -> None:
        """A cookie for `url`'s site, as the Airflow UI's login would have set it (http only)."""
        result = self.call("Network.setCookie", name=name, value=value, url=url, httpOnly=True, path="/")
        if not result.get("success", True):
            raise RuntimeError(f"chromium refused the cookie {name}")
        # A response still on its way from an earlier page may delete the cookie (Airflow's middleware clears an
        # invalid `_token`): set it until the browser holds it after a moment's quiet.
        for _ in range(20):
            time.sleep(0.05)
            held = self.call("Network.getCookies", urls=[url]).get("cookies", [])
            if any(cookie.get("name") == name and cookie.get("value") == value for cookie in held):
                return
            self.call("Network.setCookie", name=name, value=value, url=url, httpOnly=True, path="/")
        raise RuntimeError(f"chromium does not keep the cookie {name}")

    def clear_cookies(self) -> None:
        """Forget every cookie: the browser is logged out."""
        self.call("Network.clearBrowserCookies")

    def open(self, url: str, *, ready: str = "document.readyState === 'complete'") -> int:
        """Navigate, wait for the load event and until the JS expression `ready` holds; returns the HTTP status
        of the main document."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": "Page.navigate", "params": {"url": url}}))
        return self._await_page(message_id, ready)

    def submit(self, click: str, *, ready: str = "document.readyState === 'complete'") -> int:
        """Run the JS expression `click` (a click on a button or link that navigates, e.g. a form's submit),
        then wait as `open` does; returns the HTTP status of the document the browser lands on."""
        message_id = next(self._ids)
        self._socket.send(
            json.dumps({"id": message_id, "method": "Runtime.evaluate", "params": {"expression": click}})
        )
        return self._await_page(message_id, ready)

    def _await_page(self, message_id: int, ready: str) -> int:
        # The last document response before the load event: a POST answered 303 ends on the GET it redirects to.
        # A navigation's own responses carry its loader id (Page.navigate answers with it): a late event of the
        # page before is not this page's status, and its load event does not end the wait.
        status: int | None = None
        loader: str | None = None
        statuses: dict[str, int] = {}
        deadline = time.monotonic() + self.timeout
        loaded = False
        while not loaded:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message or "exceptionDetails" in message.get("result", {}):
                    raise RuntimeError(f"navigation: {message.get('error') or message['result']}")
                loader = message.get("result", {}).get("loaderId")
            if message.get("method") == "Network.responseReceived":
                params = message["params"]
                if params.get("type") == "Document" and params.get("frameId") == self._main_frame:
                    status = int(params["response"]["status"])
                    statuses[params.get("loaderId", "")] = status
            if message.get("method") == "Page.loadEventFired":
                loaded = loader is None or loader in statuses
        if loader is not None:
            status = statuses[loader]
        while not self.evaluate(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page did not become ready: {ready}")
            time.sleep(0.05)
        return status or 0

    def wait_for(self, condition: str) -> None:
        """Wait until the JS expression `condition` holds in the current page."""
        deadline = time.monotonic() + self.timeout
        while not self.evaluate(condition):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never met: {condition}")
            time.sleep(0.05)

    def type_text(self, selector: str, text: str) -> None:
        """Focus the element `selector` and type `text` into it as keyboard input (React forms see it)."""
        self.wait_for(f"document.querySelector({json.dumps(selector)}) !== null")
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def login(self, base_url: str, username: str, password: str, next_path: str) -> int:
        """Log in through Airflow's login page (SimpleAuthManager's form) as a user would, landing on
        `next_path`; returns the HTTP status of that page. The form's script sets the session cookie (after
        the old cookies are cleared: a script cannot replace an http-only one)."""
        from urllib.parse import quote

        self.clear_cookies()
        self.open(f"{base_url}/auth/login?next={quote(next_path, safe='')}")
        self.type_text("input[name=username]", username)
        self.type_text("input[name=password]", password)
        button = "document.querySelector('button[type=submit]')"
        self.wait_for(f"{button} !== null && !{button}.disabled")
        return self.submit(f"{button}.click()")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport, written to `path`."""
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._socket.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
