"""The platform channel's network in unit tests: a `PlatformTransport` whose answers come from a function of an
`httpx.Request` (httpx's request and response objects only as convenient containers; nothing is sent)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from kombo_sync.invites.platform import PlatformAnswer, PlatformInviter


class HandlerTransport:
    """Answers each POST with ``handler(request)`` and records the requests in ``seen``. The handler may raise
    `PlatformTimeout` or `PlatformUnreachable`, as the real transport does when there is no answer."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.seen: list[httpx.Request] = []

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> PlatformAnswer:
        request = httpx.Request("POST", url, content=body, headers=headers)
        self.seen.append(request)
        response = self.handler(request)
        return PlatformAnswer(response.status_code, response.read())

    def close(self) -> None:
        pass


def platform_answering(
    handler: Callable[[httpx.Request], httpx.Response], token: str = "tok-123"
) -> tuple[PlatformInviter, list[httpx.Request]]:
    """A PlatformInviter of ``http://platform.test`` whose requests ``handler`` answers, and the requests it sent."""
    transport = HandlerTransport(handler)
    return PlatformInviter("http://platform.test", token, transport=transport), transport.seen
