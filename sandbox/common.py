"""Small helpers shared by the Kombo sandbox and the platform stand-in: ids, timestamps, raw ASGI replies."""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ID_ALPHABET = string.ascii_letters + string.digits

# Kombo's request date regex (API.md 1.1): used for `created_after` and `completed_at`.
KOMBO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$")


class IdFactory:
    """Kombo-looking opaque ids (24 letters and digits); reproducible when seeded, safe across threads."""

    def __init__(self, seed: int | str | None = None) -> None:
        self._lock = threading.Lock()
        # Not a secret, just unique: a fast PRNG (seeded from the OS when no seed is given) is enough.
        self._rng = random.Random(seed)

    def new(self, length: int = 24) -> str:
        with self._lock:
            number = self._rng.getrandbits(6 * length)
        chars = []
        for _ in range(length):
            number, digit = divmod(number, 62)
            chars.append(ID_ALPHABET[digit])
        return "".join(chars)


def utc_now() -> datetime:
    """Now in UTC, truncated to milliseconds (Kombo's timestamp precision)."""
    return truncate_ms(datetime.now(UTC))


def truncate_ms(value: datetime) -> datetime:
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def iso_ms(value: datetime | None) -> str | None:
    """Format as Kombo does: `YYYY-MM-DDTHH:mm:ss.sssZ`."""
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_kombo_date(text: str) -> datetime | None:
    """Parse a date accepted by Kombo's regex; None if it does not match or is not a real date."""
    if not isinstance(text, str) or not KOMBO_DATE_RE.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC)


def parse_any_datetime(text: str) -> datetime:
    """Lenient parser for admin input (any ISO 8601 form); naive values are taken as UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def send_raw(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def wait_for_disconnect(receive: Receive, seconds: float) -> bool:
    """Wait until the client goes away or `seconds` pass; True if the client disconnected."""

    async def _until_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(_until_disconnect(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def drop_connection(send: Send, receive: Receive, fallback_hang_seconds: float) -> None:
    """Close the client's TCP connection without sending a single byte of the response.

    ASGI has no "close" message for HTTP, so this reaches the server's transport through uvicorn's
    bound `send` (run the apps under uvicorn, as `sandbox.testing` and the CLIs do). Under any other
    server the reply is withheld instead until the client gives up.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        await wait_for_disconnect(receive, fallback_hang_seconds)
        return
    transport.close()
    # Let the server notice the lost connection, so it does not try to answer with its own 500.
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.005)


SERVER_SEND_KEY = "sandbox.server_send"


class SandboxFastAPI(FastAPI):
    """FastAPI that keeps the server's own `send` in the scope, so a fault can drop the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http":
            scope[SERVER_SEND_KEY] = send
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


def server_send(scope: Scope, fallback: Send) -> Send:
    return scope.get(SERVER_SEND_KEY, fallback)
