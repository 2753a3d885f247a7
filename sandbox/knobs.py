"""Knobs that make the sandbox slow or unreliable on purpose, and the seeded dice that apply them."""

from __future__ import annotations

import random
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _rate() -> Any:
    return Field(default=0.0, ge=0.0, le=1.0)


def _expand_latency(values: Any) -> Any:
    """Accept `latency_ms` as a shorthand: a number, "50-150", "50:150" or [50, 150]."""
    if not isinstance(values, dict) or "latency_ms" not in values:
        return values
    values = dict(values)
    latency = values.pop("latency_ms")
    if latency is None:
        low = high = 0.0
    elif isinstance(latency, list | tuple) and len(latency) == 2:
        low, high = float(latency[0]), float(latency[1])
    elif isinstance(latency, str) and any(sep in latency for sep in ("-", ":")):
        sep = ":" if ":" in latency else "-"
        first, second = latency.split(sep, 1)
        low, high = float(first), float(second)
    else:
        low = high = float(latency)
    values["latency_min_ms"], values["latency_max_ms"] = low, high
    return values


class LatencyKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_min_ms: float = Field(default=0.0, ge=0.0)
    latency_max_ms: float = Field(default=0.0, ge=0.0)
    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _latency_shorthand(cls, values: Any) -> Any:
        return _expand_latency(values)

    @model_validator(mode="after")
    def _latency_order(self) -> LatencyKnobs:
        if self.latency_max_ms < self.latency_min_ms:
            self.latency_max_ms = self.latency_min_ms
        return self

    def merged(self, patch: dict[str, Any]) -> Any:
        """A new, validated copy with `patch` applied (a `latency_ms` in the patch wins over min/max)."""
        current = self.model_dump()
        if "latency_ms" in patch:
            current.pop("latency_min_ms")
            current.pop("latency_max_ms")
        return type(self).model_validate({**current, **patch})


class KomboKnobs(LatencyKnobs):
    """Runtime behaviour of the Kombo sandbox; every field can be changed through `PATCH /_sandbox/knobs`."""

    rate_limit: int | None = Field(default=None, ge=1, description="requests per window per API key")
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    concurrency_limit: int | None = Field(default=30, ge=1, description="in-flight requests per integration")
    error_rate: float = _rate()  # 503 with REMOTE.SERVICE_UNAVAILABLE
    bare_503_rate: float = _rate()  # 503 from "the load balancer", no JSON
    throttle_rate: float = _rate()  # random 429 PLATFORM.RATE_LIMIT_EXCEEDED
    timeout_rate: float = _rate()  # hang, change not applied
    timeout_hang_seconds: float = Field(default=60.0, ge=0)
    lost_response_rate: float = _rate()  # change applied, reply dropped
    lost_response_mode: Literal["close", "hang"] = "close"
    fault_methods: list[str] = Field(default_factory=list, description="empty: every method")
    fault_path_prefix: str = "/v1/"
    fetch_attachment_urls: bool = False

    @model_validator(mode="after")
    def _rates_sum(self) -> KomboKnobs:
        total = (
            self.error_rate
            + self.bare_503_rate
            + self.throttle_rate
            + self.timeout_rate
            + self.lost_response_rate
        )
        if total > 1.0 + 1e-9:
            raise ValueError("the fault rates add up to more than 1")
        self.fault_methods = [method.upper() for method in self.fault_methods]
        return self


class PlatformKnobs(LatencyKnobs):
    """Runtime behaviour of the platform stand-in (`PATCH /_platform/knobs`)."""

    failure_rate: float = _rate()  # 503 before anything is created
    lost_response_rate: float = _rate()  # invitation created, reply dropped
    idempotent: bool = True  # False: every POST creates a new invitation, like a channel that cannot dedupe


FaultKind = Literal["error", "bare_503", "throttle", "timeout", "lost_response"]


class Dice:
    """Seeded random decisions shared by all requests; thread-safe so the sequence is reproducible."""

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def uniform(self, low: float, high: float) -> float:
        if high <= low:
            return low
        with self._lock:
            return self._rng.uniform(low, high)

    def roll(self) -> float:
        with self._lock:
            return self._rng.random()

    def kombo_fault(self, knobs: KomboKnobs, method: str, path: str) -> FaultKind | None:
        if not path.startswith(knobs.fault_path_prefix):
            return None
        if knobs.fault_methods and method.upper() not in knobs.fault_methods:
            return None
        thresholds: list[tuple[FaultKind, float]] = [
            ("error", knobs.error_rate),
            ("bare_503", knobs.bare_503_rate),
            ("throttle", knobs.throttle_rate),
            ("timeout", knobs.timeout_rate),
            ("lost_response", knobs.lost_response_rate),
        ]
        if not any(rate for _, rate in thresholds):
            return None
        point = self.roll()
        edge = 0.0
        for kind, rate in thresholds:
            edge += rate
            if point < edge:
                return kind
        return None
