"""A stand-in for the assessment provider's own platform: an invitation API and a warehouse that fills up.

`POST /api/invitations` invites a candidate (idempotent on the Kombo order id);
`POST /api/invitations/{order_id}/revoke` withdraws it (idempotent: a repeat answers 200 with
`already_revoked: true`; an unknown order 404 `not_found`; a candidate who already finished 409
`invitation_finished`, with the invitation's status);
`POST /api/invitations/{order_id}/remind` reminds the candidate (idempotent on the `Idempotency-Key`, one
reminder per key: a repeat answers 200 with the same reminder and `repeated: true`; an unknown order 404
`not_found`; a revoked invitation 409 `invitation_revoked`, a finished one 409 `invitation_finished`). Simulated candidates finish (`POST /_platform/simulate`, or `--finish-after` seconds) and their results land in the warehouse table
`assessment_results` (see `sandbox.warehouse`), where the pipeline's write-back job reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.types import ASGIApp

from sandbox import warehouse
from sandbox.common import (
    IdFactory,
    Receive,
    SandboxFastAPI,
    Scope,
    Send,
    drop_connection,
    iso_ms,
    json_bytes,
    send_raw,
    server_send,
    utc_now,
)
from sandbox.knobs import Dice, PlatformKnobs

logger = logging.getLogger("sandbox.platform")


@dataclass
class PlatformSettings:
    warehouse_url: str = warehouse.DEFAULT_WAREHOUSE_URL
    api_key: str | None = None  # None: no authentication
    knobs: PlatformKnobs = field(default_factory=PlatformKnobs)
    finish_after_seconds: float | None = None  # candidates finish this long after their invitation
    cancel_rate: float = 0.1
    # Candidates who never start: their invitations stay open until revoked (the background finisher skips them;
    # chosen per order id, the same way every run with the same seed). Shown as `no_show` in the admin view.
    no_show_rate: float = 0.0
    public_base_url: str | None = None  # default: the URL the request came in on


@dataclass
class Invitation:
    invitation_id: str
    order_id: str
    integration_id: str
    package_id: str
    candidate: dict[str, Any]
    job: dict[str, Any]
    assessment_url: str
    base_url: str
    created_at: datetime
    created_monotonic: float
    status: str = "invited"  # invited | completed | cancelled | revoked
    finished_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None

    def api_view(self) -> dict[str, Any]:
        return {
            "invitation_id": self.invitation_id,
            "assessment_url": self.assessment_url,
            "order_id": self.order_id,
            "created_at": iso_ms(self.created_at),
        }

    def admin_view(self) -> dict[str, Any]:
        return {
            **self.api_view(),
            "integration_id": self.integration_id,
            "package_id": self.package_id,
            "candidate": dict(self.candidate),
            "job": dict(self.job),
            "status": self.status,
            "finished_at": iso_ms(self.finished_at),
            "revoked_at": iso_ms(self.revoked_at),
            "revoke_reason": self.revoke_reason,
        }

    def revoke_view(self, already: bool) -> dict[str, Any]:
        return {
            "invitation_id": self.invitation_id,
            "order_id": self.order_id,
            "status": self.status,
            "revoked_at": iso_ms(self.revoked_at),
            "already_revoked": already,
        }


class PlatformState:
    """Invitations in memory; thread-safe. `requests` counts POSTs per order id, `creations` new invitations,
    `revoke_requests` revoke calls per order id, `revocations` the ones that revoked (a repeat does not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.invitations: list[Invitation] = []
        self.by_order: dict[str, Invitation] = {}
        self.requests: Counter[str] = Counter()
        self.creations: Counter[str] = Counter()
        self.revoke_requests: Counter[str] = Counter()
        self.revocations: Counter[str] = Counter()
        self.remind_requests: Counter[str] = Counter()
        self.reminders: dict[str, dict[str, Any]] = {}  # idempotency key -> the reminder
        self.reminder_creations: Counter[str] = Counter()  # per idempotency key

    def invite(self, make: Any, order_id: str, idempotent: bool) -> tuple[Invitation, bool]:
        with self._lock:
            self.requests[order_id] += 1
            existing = self.by_order.get(order_id)
            if existing is not None and idempotent:
                return existing, False
            invitation: Invitation = make()
            self.invitations.append(invitation)
            self.by_order.setdefault(order_id, invitation)
            self.creations[order_id] += 1
            return invitation, True

    def revoke(self, order_id: str, reason: str | None) -> tuple[Invitation | None, bool]:
        """Revoke the order's invitation: (invitation, True) when this call revoked it, (invitation, False) when it
        was already revoked or the candidate finished, (None, False) when the order has no invitation."""
        with self._lock:
            self.revoke_requests[order_id] += 1
            invitation = self.by_order.get(order_id)
            if invitation is None or invitation.status != "invited":
                return invitation, False
            invitation.status = "revoked"
            invitation.revoked_at = utc_now()
            invitation.revoke_reason = reason
            self.revocations[order_id] += 1
            return invitation, True

    def remind(
        self, order_id: str, key: str, number: int | None, make_id: Any
    ) -> tuple[Invitation | None, dict[str, Any] | None, bool]:
        """(invitation, reminder, created): the reminder under ``key`` (created by this call or an earlier one);
        no reminder when the order has no open invitation (None, or an invitation that is not `invited`)."""
        with self._lock:
            self.remind_requests[order_id] += 1
            invitation = self.by_order.get(order_id)
            existing = self.reminders.get(key)
            if existing is not None:
                return invitation, existing, False
            if invitation is None or invitation.status != "invited":
                return invitation, None, False
            reminder = {
                "reminder_id": make_id(),
                "order_id": order_id,
                "invitation_id": invitation.invitation_id,
                "number": number,
                "idempotency_key": key,
                "sent_at": iso_ms(utc_now()),
            }
            self.reminders[key] = reminder
            self.reminder_creations[key] += 1
            return invitation, reminder, True

    def pending(self, order_ids: set[str] | None = None, older_than: float | None = None) -> list[Invitation]:
        with self._lock:
            return [
                invitation
                for invitation in self.invitations
                if invitation.status == "invited"
                and (order_ids is None or invitation.order_id in order_ids)
                and (older_than is None or invitation.created_monotonic <= older_than)
            ]

    def mark_finished(self, finished: list[tuple[Invitation, str]]) -> None:
        now = utc_now()
        with self._lock:
            for invitation, status in finished:
                invitation.status = status
                invitation.finished_at = now

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "invitations": [invitation.admin_view() for invitation in self.invitations],
                "requests_by_order": dict(self.requests),
                "creations_by_order": dict(self.creations),
                "duplicates": sorted(order_id for order_id, count in self.creations.items() if count > 1),
                "revoke_requests_by_order": dict(self.revoke_requests),
                "revocations_by_order": dict(self.revocations),
                "remind_requests_by_order": dict(self.remind_requests),
                "reminders": [dict(reminder) for reminder in self.reminders.values()],
                "reminders_by_order": dict(
                    Counter(reminder["order_id"] for reminder in self.reminders.values())
                ),
                "reminder_duplicates": sorted(
                    key for key, count in self.reminder_creations.items() if count > 1
                ),
            }


class PlatformRuntime:
    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.engine = warehouse.create_schema(settings.warehouse_url)
        self.finish_lock = asyncio.Lock()
        self.reset()

    def reset(self, keep_knobs: bool = False) -> None:
        if not keep_knobs:
            self.knobs = self.settings.knobs.model_copy(deep=True)
            self.dice = Dice(self.knobs.seed)
        self.ids = IdFactory(None if self.knobs.seed is None else f"{self.knobs.seed}:platform")
        self.state = PlatformState()

    def finish(
        self, invitations: list[Invitation], seed: int | None, cancel_rate: float
    ) -> list[dict[str, Any]]:
        """Write the candidates' results to the warehouse (blocking; run it in a thread)."""
        rows = [
            warehouse.simulated_result(
                invitation.order_id,
                invitation.invitation_id,
                seed=seed,
                cancel_rate=cancel_rate,
                base_url=invitation.base_url,
                invited_at=invitation.created_at,
            )
            for invitation in invitations
        ]
        # With idempotency off one order can have several invitations; the warehouse keeps one row per order.
        latest = {row["order_id"]: row for row in rows}
        warehouse.write_results(self.engine, latest.values(), replace=True)
        self.state.mark_finished(
            [(invitation, row["status"]) for invitation, row in zip(invitations, rows, strict=True)]
        )
        return rows


class PlatformFrontDoor:
    """Latency and failures for `/api/*` only (never for admin or report routes)."""

    def __init__(self, app: ASGIApp, runtime: PlatformRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)  # type: ignore[arg-type]
            return
        runtime, knobs = self.runtime, self.runtime.knobs
        started = time.monotonic()
        status: dict[str, Any] = {"value": None}

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["value"] = message["status"]
            await send(message)

        try:
            delay_ms = runtime.dice.uniform(knobs.latency_min_ms, knobs.latency_max_ms)
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            point = runtime.dice.roll() if (knobs.failure_rate or knobs.lost_response_rate) else 1.0
            if point < knobs.failure_rate:
                body = json_bytes({"error": "service_unavailable", "message": "Please retry later."})
                await send_raw(recording_send, 503, body)
            elif point < knobs.failure_rate + knobs.lost_response_rate:

                async def swallow(message: Any) -> None:
                    return None

                await self.app(scope, receive, swallow)  # type: ignore[arg-type]
                await drop_connection(server_send(scope, send), receive, 60.0)
                status["value"] = "lost"
            else:
                await self.app(scope, receive, recording_send)  # type: ignore[arg-type]
        finally:
            logger.debug(
                "%s %s status=%s %.1fms",
                scope["method"],
                scope["path"],
                status["value"],
                (time.monotonic() - started) * 1000,
            )


class CandidateIn(BaseModel):
    email: str = Field(min_length=3)
    first_name: str | None = None
    last_name: str | None = None


class JobIn(BaseModel):
    name: str | None = None


class InvitationIn(BaseModel):
    order_id: str | None = Field(default=None, description="idempotency key; or the `Idempotency-Key` header")
    integration_id: str = Field(min_length=1)
    package_id: str = Field(min_length=1)
    candidate: CandidateIn
    job: JobIn = Field(default_factory=JobIn)


class RevokeIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class RemindIn(BaseModel):
    order_id: str | None = None
    number: int | None = Field(default=None, ge=1, le=100)
    idempotency_key: str | None = Field(default=None, max_length=300)


class SimulateIn(BaseModel):
    count: int | None = Field(default=None, ge=0, description="default: every invited candidate")
    order_ids: list[str] | None = None
    seed: int | None = Field(default=None, description="default: the knobs' seed, else 0")
    cancel_rate: float | None = Field(default=None, ge=0, le=1)


class PlatformResetIn(BaseModel):
    keep_knobs: bool = False
    truncate_warehouse: bool = True


def _runtime(request: Request) -> PlatformRuntime:
    runtime: PlatformRuntime = request.app.state.runtime
    return runtime


def _base_url(request: Request) -> str:
    return (_runtime(request).settings.public_base_url or str(request.base_url)).rstrip("/")


api = APIRouter()


def _unauthorized(request: Request) -> JSONResponse | None:
    api_key = _runtime(request).settings.api_key
    if api_key is not None and request.headers.get("authorization", "") != f"Bearer {api_key}":
        return JSONResponse({"error": "unauthorized", "message": "Bearer token required."}, status_code=401)
    return None


@api.post("/api/invitations")
async def create_invitation(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    if (refused := _unauthorized(request)) is not None:
        return refused
    try:
        spec = InvitationIn.model_validate_json(await request.body())
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        return JSONResponse({"error": "invalid_request", "fields": fields}, status_code=422)
    header_key = request.headers.get("idempotency-key")
    if spec.order_id and header_key and spec.order_id != header_key:
        return JSONResponse(
            {"error": "invalid_request", "message": "order_id and Idempotency-Key differ."}, status_code=422
        )
    key = spec.order_id or header_key
    if not key:
        return JSONResponse({"error": "invalid_request", "fields": ["order_id"]}, status_code=422)
    order_id: str = key
    base = _base_url(request)

    def make() -> Invitation:
        invitation_id = f"inv_{runtime.ids.new(20)}"
        return Invitation(
            invitation_id=invitation_id,
            order_id=order_id,
            integration_id=spec.integration_id,
            package_id=spec.package_id,
            candidate=spec.candidate.model_dump(),
            job=spec.job.model_dump(),
            assessment_url=f"{base}/assessments/{invitation_id}",
            base_url=base,
            created_at=utc_now(),
            created_monotonic=time.monotonic(),
        )

    invitation, created = runtime.state.invite(make, order_id, runtime.knobs.idempotent)
    return JSONResponse(invitation.api_view(), status_code=201 if created else 200)


@api.post("/api/invitations/{order_id}/revoke")
async def revoke_invitation(request: Request, order_id: str) -> JSONResponse:
    """Withdraw the candidate's invitation (the order was cancelled in the ATS). Idempotent: a repeat answers 200
    with `already_revoked: true`, so a caller that lost the first answer can simply call again."""
    runtime = _runtime(request)
    if (refused := _unauthorized(request)) is not None:
        return refused
    raw = await request.body()
    try:
        spec = RevokeIn.model_validate_json(raw) if raw.strip() else RevokeIn()
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        return JSONResponse({"error": "invalid_request", "fields": fields}, status_code=422)
    invitation, revoked = runtime.state.revoke(order_id, spec.reason)
    if invitation is None:
        return JSONResponse(
            {"error": "not_found", "message": "No invitation for this order."}, status_code=404
        )
    if invitation.status not in ("invited", "revoked"):
        return JSONResponse(
            {
                "error": "invitation_finished",
                "message": "The candidate already finished; nothing to revoke.",
                "status": invitation.status,
                "invitation_id": invitation.invitation_id,
            },
            status_code=409,
        )
    return JSONResponse(invitation.revoke_view(already=not revoked), status_code=200)


@api.post("/api/invitations/{order_id}/remind")
async def remind_candidate(request: Request, order_id: str) -> JSONResponse:
    """Remind the candidate of an open invitation. Idempotent on the `Idempotency-Key` (or the body's
    `idempotency_key`): one reminder per key, a repeat answers 200 with the same reminder (`repeated: true`)."""
    runtime = _runtime(request)
    if (refused := _unauthorized(request)) is not None:
        return refused
    raw = await request.body()
    try:
        spec = RemindIn.model_validate_json(raw) if raw.strip() else RemindIn()
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        return JSONResponse({"error": "invalid_request", "fields": fields}, status_code=422)
    key = request.headers.get("idempotency-key") or spec.idempotency_key
    if not key:
        return JSONResponse({"error": "invalid_request", "fields": ["idempotency_key"]}, status_code=422)
    invitation, reminder, created = runtime.state.remind(
        order_id, key, spec.number, lambda: f"rem_{runtime.ids.new(20)}"
    )
    if reminder is not None:
        return JSONResponse(
            {**reminder, "status": "sent", "repeated": not created}, status_code=201 if created else 200
        )
    if invitation is None:
        return JSONResponse(
            {"error": "not_found", "message": "No invitation for this order."}, status_code=404
        )
    error = "invitation_revoked" if invitation.status == "revoked" else "invitation_finished"
    return JSONResponse(
        {
            "error": error,
            "message": "No reminder: the invitation is no longer open.",
            "status": invitation.status,
            "invitation_id": invitation.invitation_id,
        },
        status_code=409,
    )


@api.get("/assessments/{invitation_id}", response_class=HTMLResponse)
async def assessment_page(invitation_id: str) -> str:
    return f"<html><body><h1>Assessment {invitation_id}</h1><p>Good luck!</p></body></html>"


@api.get("/assessments/{invitation_id}/result", response_class=HTMLResponse)
async def result_page(invitation_id: str) -> str:
    return f"<html><body><h1>Result of assessment {invitation_id}</h1></body></html>"


@api.get("/reports/{invitation_id}.pdf")
async def report(invitation_id: str) -> Response:
    return Response(
        warehouse.TINY_PDF,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{invitation_id}.pdf"'},
    )


admin = APIRouter(prefix="/_platform", tags=["platform admin"])


@admin.get("/health")
async def admin_health() -> dict[str, Any]:
    return {"ok": True}


@admin.get("/invitations")
async def admin_invitations(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    snapshot = runtime.state.snapshot()
    for view in snapshot["invitations"]:
        view["no_show"] = is_no_show(view["order_id"], runtime.knobs.seed, runtime.settings.no_show_rate)
    return snapshot


@admin.get("/knobs")
async def admin_get_knobs(request: Request) -> dict[str, Any]:
    return _runtime(request).knobs.model_dump()


@admin.patch("/knobs")
async def admin_set_knobs(request: Request, patch: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(request)
    try:
        runtime.knobs = runtime.knobs.merged(patch)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False)) from None
    if "seed" in patch:
        runtime.dice.reseed(runtime.knobs.seed)
    return runtime.knobs.model_dump()


async def _simulate(
    runtime: PlatformRuntime, invitations: list[Invitation], seed: int | None, cancel_rate: float
) -> list[dict[str, Any]]:
    async with runtime.finish_lock:
        # Another finisher may have taken some of them while we waited.
        invitations = [invitation for invitation in invitations if invitation.status == "invited"]
        if not invitations:
            return []
        return await asyncio.to_thread(runtime.finish, invitations, seed, cancel_rate)


@admin.post("/simulate")
async def admin_simulate(request: Request, spec: SimulateIn | None = None) -> dict[str, Any]:
    """Let invited candidates finish: their results are written to the warehouse."""
    runtime = _runtime(request)
    spec = spec or SimulateIn()
    pending = runtime.state.pending(set(spec.order_ids) if spec.order_ids is not None else None)
    if spec.count is not None:
        pending = pending[: spec.count]
    seed = spec.seed if spec.seed is not None else (runtime.knobs.seed or 0)
    cancel_rate = spec.cancel_rate if spec.cancel_rate is not None else runtime.settings.cancel_rate
    rows = await _simulate(runtime, pending, seed, cancel_rate)
    return {
        "finished": len(rows),
        "completed": sum(1 for row in rows if row["status"] == "completed"),
        "cancelled": sum(1 for row in rows if row["status"] == "cancelled"),
        "order_ids": [row["order_id"] for row in rows],
    }


@admin.post("/reset")
async def admin_reset(request: Request, options: PlatformResetIn | None = None) -> dict[str, Any]:
    runtime = _runtime(request)
    options = options or PlatformResetIn()
    runtime.reset(keep_knobs=options.keep_knobs)
    if options.truncate_warehouse:
        await asyncio.to_thread(warehouse.truncate_results, runtime.engine)
    return {"ok": True}


def is_no_show(order_id: str, seed: int | None, rate: float) -> bool:
    """Whether this order's candidate never starts the assessment (deterministic per seed and order id)."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{order_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


async def _finish_in_background(runtime: PlatformRuntime, after_seconds: float) -> None:
    while True:
        await asyncio.sleep(min(1.0, max(0.05, after_seconds / 4)))
        rate = runtime.settings.no_show_rate
        due = [
            invitation
            for invitation in runtime.state.pending(older_than=time.monotonic() - after_seconds)
            if not is_no_show(invitation.order_id, runtime.knobs.seed, rate)
        ]
        if due:
            try:
                await _simulate(runtime, due, runtime.knobs.seed or 0, runtime.settings.cancel_rate)
            except Exception:
                logger.exception("finishing %d simulated candidates failed", len(due))


def create_platform_app(settings: PlatformSettings | None = None) -> FastAPI:
    """The platform stand-in: `/api/invitations`, `/reports/{id}.pdf`, admin under `/_platform`."""
    settings = settings or PlatformSettings()
    runtime = PlatformRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if settings.finish_after_seconds is not None:
            task = asyncio.create_task(_finish_in_background(runtime, settings.finish_after_seconds))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            runtime.engine.dispose()

    app = SandboxFastAPI(
        title="Assessment platform stand-in",
        description="Invitation API and results warehouse of the assessment provider (see sandbox/README.md).",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.include_router(api)
    app.include_router(admin)
    app.add_middleware(PlatformFrontDoor, runtime=runtime)
    return app
