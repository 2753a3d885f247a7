"""Who may use the console: Airflow's own login and permissions, checked as the core REST API checks them.

Airflow gives plugin routes no authentication, so every console route depends on `read_access` or
`run_access`, which call the core API's dependencies (`airflow.api_fastapi.core_api.security.get_user`: the
`Authorization: Bearer` token or the UI's JWT cookie; `requires_access_dag`: the auth manager's decision).
Reading needs read access to the pipeline's DAGs; replay and discard create a write-back DAG run, so they need
DAG run create access on it; candidate e-mails and names need edit access on the intake DAG.

Cross-site requests: actions are POST only, carry a token derived from the caller's own JWT (a page on another
site cannot read it), and are refused when the browser says the request comes from another site
(`Sec-Fetch-Site: cross-site`).
Airflow is imported on the first request, not when the plugin is loaded by every Airflow component.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

WRITEBACK_DAG_ID = "kombo_result_writeback"
INTAKE_DAG_ID = "kombo_order_intake"
# Reading the console shows the state of these DAGs' work.
READ_DAG_IDS = (INTAKE_DAG_ID, WRITEBACK_DAG_ID)
CSRF_FIELD = "csrf_token"


async def console_user(request: Request) -> Any:
    """The logged-in Airflow user (401 without a token, 403 for an invalid one), as the core API finds it."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    return await get_user(request, None, credentials)


def _check_dag(request: Request, user: Any, method: str, dag_id: str, access_entity: Any = None) -> None:
    from airflow.api_fastapi.core_api.security import requires_access_dag

    requires_access_dag(method, access_entity, param_dag_id=dag_id)(request, user)  # type: ignore[arg-type]


async def read_access(request: Request, user: Any = Depends(console_user)) -> Any:
    """The user, if they may read the pipeline's DAGs (403 otherwise)."""

    def check() -> None:
        for dag_id in READ_DAG_IDS:
            _check_dag(request, user, "GET", dag_id)

    await run_in_threadpool(check)
    return user


async def run_access(request: Request, user: Any = Depends(console_user)) -> Any:
    """The user, if they may create runs of the write-back DAG (403 otherwise); also checks the request is
    not cross-site and carries the form's token."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    await run_in_threadpool(_check_dag, request, user, "POST", WRITEBACK_DAG_ID, DagAccessEntity.RUN)
    await check_same_origin(request)
    return user


def can_see_candidates(request: Request, user: Any) -> bool:
    """Whether the user may see candidate e-mails and names: edit access on the intake DAG."""
    try:
        _check_dag(request, user, "PUT", INTAKE_DAG_ID)
    except HTTPException:
        return False
    return True


def _session_token(request: Request) -> str:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


def csrf_token(request: Request) -> str:
    """The token the console's forms carry: an HMAC of the caller's own JWT (never stored, never logged)."""
    token = _session_token(request)
    return hmac.new(token.encode(), b"kombo-console-action", hashlib.sha256).hexdigest()


async def check_same_origin(request: Request) -> None:
    """403 unless the action comes from the console itself: the browser does not call it cross-site
    (`Sec-Fetch-Site`), and the form carries the token of the caller's session.

    The `Origin` header is not compared with `Host`: a reverse proxy may rewrite `Host`, and the token already
    proves the form was rendered for this session."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Cross-site request refused")
    form = await request.form()
    sent = str(form.get(CSRF_FIELD) or "")
    if not sent or not hmac.compare_digest(sent, csrf_token(request)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "The form has expired or did not come from the console: reload the page",
        )
