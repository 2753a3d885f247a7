"""The Kombo console: a FastAPI app the Airflow plugin mounts (default prefix `/kombo-console`), server-rendered
HTML with inline CSS and JavaScript (no build step, nothing from the internet) and relative links only, so
it works under any prefix and behind a reverse proxy.

Every route depends on `security.read_access` (pages, CSV) or `security.run_access` (actions); the queries live
in `console.queries`, the repairs in `console.actions`. Pages: overview (`./`), dead letters and quarantine
(`dead-letters`), order lookup (`orders?q=`), webhook log (`webhooks`), funnel and trends (`funnel?period=`),
run history (`runs`), erasures (`erasures`), CSV exports (`export/<table>.csv`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from kombo_sync.console.security import CSRF_FIELD, can_see_candidates, csrf_token, read_access, run_access

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
URL_PREFIX_ENV = "KOMBO_CONSOLE_PREFIX"
DEFAULT_URL_PREFIX = "/kombo-console"
EXPORTS = ("overview", "dead_letters", "quarantine", "webhooks", "orders", "funnel", "runs", "erasures")

_PAGES = (("./", "Overview"), ("funnel", "Funnel & trends"), ("dead-letters", "Dead letters & quarantine"),
          ("orders", "Order lookup"), ("webhooks", "Webhook log"), ("runs", "Run history"),
          ("erasures", "Erasures"))  # fmt: skip


def url_prefix() -> str:
    """Where the api-server serves the console (`KOMBO_CONSOLE_PREFIX`, default `/kombo-console`)."""
    return "/" + os.environ.get(URL_PREFIX_ENV, DEFAULT_URL_PREFIX).strip("/")


def _default_queries() -> Any:
    from kombo_sync.console.queries import ConsoleQueries
    from kombo_sync.runtime import state_store

    return ConsoleQueries(state_store())


def cell_text(value: Any) -> str:
    """A value as the pages and the CSV show it: UTC times to the second, booleans as yes/no, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def safe_url(value: Any) -> str | None:
    """A link target only when it is an http(s) URL (Kombo's log_url), never `javascript:` or the like."""
    text = str(value or "")
    return text if text.lower().startswith(("https://", "http://")) else None


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = cell_text
    env.filters["safe_url"] = safe_url
    env.filters["q"] = lambda value: quote(str(value), safe="")
    from kombo_sync.console.render import overview_rows, selectable_rows, table_rows

    env.filters["table_rows"] = lambda rows, columns, linkable=False: table_rows(columns, rows, linkable)
    env.filters["overview_rows"] = lambda rows, columns: overview_rows(columns, rows)
    env.filters["selectable_rows"] = lambda rows, columns, **options: selectable_rows(
        columns, rows, **options
    )
    return env


def to_csv(columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text with a header of labels; cells as the pages show them, formulas neutralised for spreadsheets."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([label for _key, label in columns])
    for row in rows:
        cells = [cell_text(row.get(key)) for key, _label in columns]
        writer.writerow([f"'{text}" if text[:1] in ("=", "+", "-", "@") else text for text in cells])
    return buffer.getvalue()


def _visible(columns: Sequence[tuple[str, str]], show_candidates: bool) -> list[tuple[str, str]]:
    from kombo_sync.console.queries import CANDIDATE_COLUMNS

    return [column for column in columns if show_candidates or column[0] not in CANDIDATE_COLUMNS]


def create_console_app(queries_factory: Callable[[], Any] | None = None) -> FastAPI:
    """The console app; `queries_factory` (default: `ConsoleQueries` on the configured state store) is called
    on the first request, so creating the app does no I/O."""
    app = FastAPI(
        title="Kombo console",
        description="The pipeline's state, health and repairs (see docs/console.md).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    factory = queries_factory or _default_queries
    holder: dict[str, Any] = {}
    env_holder: dict[str, Any] = {}

    def queries() -> Any:
        if "queries" not in holder:
            holder["queries"] = factory()
        return holder["queries"]

    def render(request: Request, template: str, user: Any, **values: Any) -> HTMLResponse:
        if "env" not in env_holder:
            env_holder["env"] = _environment()
        html = (
            env_holder["env"]
            .get_template(template)
            .render(
                pages=_PAGES,
                user_name=user.get_name(),
                csrf_field=CSRF_FIELD,
                csrf=csrf_token(request),
                message=request.query_params.get("message", ""),
                error=request.query_params.get("error", ""),
                **values,
            )
        )
        # Pages hold operational data: never cached by a proxy or the browser.
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def read(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(call, *args, **kwargs)
        except Exception as exc:
            # The database may be down or busy: say so without a traceback or statement text.
            log.error("Kombo console: state store read failed (%s)", type(exc).__name__)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "The state store is unavailable"
            ) from exc

    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request, user: Any = Depends(read_access)) -> HTMLResponse:
        from kombo_sync.console.queries import COLUMNS

        rows = await read(lambda: queries().overview())
        return render(request, "overview.html", user, page="./", columns=COLUMNS["overview"], rows=rows)

    @app.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(
        request: Request, integration_id: str = "", user: Any = Depends(read_access)
    ) -> HTMLResponse:
        from kombo_sync.console.queries import COLUMNS

        show = await run_in_threadpool(can_see_candidates, request, user)
        letters = await read(lambda: queries().dead_letters(integration_id=integration_id or None))
        jailed = await read(lambda: queries().quarantine(with_candidates=show))
        return render(
            request,
            "dead_letters.html",
            user,
            page="dead-letters",
            integration_id=integration_id,
            letter_columns=COLUMNS["dead_letters"],
            letters=letters,
            quarantine_columns=COLUMNS["quarantine"],
            quarantined=jailed,
            integrations=sorted({letter["integration_id"] for letter in letters}),
        )

    @app.get("/orders", response_class=HTMLResponse)
    async def order_lookup(
        request: Request, q: str = Query("", max_length=255), user: Any = Depends(read_access)
    ) -> HTMLResponse:
        from kombo_sync.console.queries import COLUMNS

        show = await run_in_threadpool(can_see_candidates, request, user)
        history = await read(lambda: queries().order_history(q, with_candidates=show)) if q.strip() else None
        return render(
            request,
            "orders.html",
            user,
            page="orders",
            q=q,
            history=history,
            show_candidates=show,
            order_columns=_visible(COLUMNS["orders"], show),
            invitation_columns=COLUMNS["invitations"],
            reminder_columns=COLUMNS["reminders"],
            webhook_columns=COLUMNS["webhooks"],
            version_columns=COLUMNS["versions"],
        )

    @app.get("/webhooks", response_class=HTMLResponse)
    async def webhook_log(
        request: Request, answer: str = Query("", max_length=3), user: Any = Depends(read_access)
    ) -> HTMLResponse:
        from kombo_sync.console.queries import COLUMNS

        # The form's "all" sends `answer=` (empty): that is no filter, not an error.
        status_filter = int(answer) if answer.isdigit() else None
        events = await read(lambda: queries().webhook_log(status=status_filter))
        return render(
            request,
            "webhooks.html",
            user,
            page="webhooks",
            answer=answer,
            columns=COLUMNS["webhooks"],
            rows=events,
        )

    @app.get("/funnel", response_class=HTMLResponse)
    async def funnel(
        request: Request, period: str = Query("7d", max_length=8), user: Any = Depends(read_access)
    ) -> HTMLResponse:
        from kombo_sync.console.charts import funnel_charts
        from kombo_sync.console.queries import COLUMNS, LATENCY_BIN_LABELS, PERIODS

        if period not in PERIODS:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"period is one of {', '.join(PERIODS)}")
        found = await read(lambda: queries().funnel(period))
        return render(
            request,
            "funnel.html",
            user,
            page="funnel",
            period=period,
            periods=[(key, label) for key, (label, _length, _unit) in PERIODS.items()],
            funnel=found,
            charts=funnel_charts(found, LATENCY_BIN_LABELS),
            columns=COLUMNS["funnel"],
        )

    @app.get("/runs", response_class=HTMLResponse)
    async def run_history(
        request: Request, job: str = Query("", max_length=64), user: Any = Depends(read_access)
    ) -> HTMLResponse:
        from kombo_sync.console.queries import COLUMNS

        found = await read(lambda: queries().run_history(job=job or None))
        jobs = await read(lambda: queries().run_jobs())
        return render(
            request, "runs.html", user, page="runs", job=job, jobs=jobs, columns=COLUMNS["runs"], rows=found
        )

    @app.get("/erasures", response_class=HTMLResponse)
    async def erasure_record(request: Request, user: Any = Depends(read_access)) -> HTMLResponse:
        from kombo_sync.console.queries import COLUMNS

        found = await read(lambda: queries().erasures())
        return render(
            request, "erasures.html", user, page="erasures", columns=COLUMNS["erasures"], rows=found
        )

    @app.get("/export/{table}.csv")
    async def export(
        request: Request,
        table: str,
        q: str = Query("", max_length=255),
        integration_id: str = "",
        period: str = Query("7d", max_length=8),
        job: str = Query("", max_length=64),
        user: Any = Depends(read_access),
    ) -> Response:
        from kombo_sync.console.queries import COLUMNS

        if table not in EXPORTS:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no table {table!r}; one of {', '.join(EXPORTS)}")
        show = await run_in_threadpool(can_see_candidates, request, user)
        rows: list[dict[str, Any]]
        if table == "overview":
            rows = await read(lambda: queries().overview())
        elif table == "dead_letters":
            rows = await read(lambda: queries().dead_letters(integration_id=integration_id or None))
        elif table == "quarantine":
            rows = await read(lambda: queries().quarantine(with_candidates=show))
        elif table == "webhooks":
            rows = await read(lambda: queries().webhook_log())
        elif table == "funnel":
            from kombo_sync.console.queries import PERIODS

            if period not in PERIODS:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, f"period is one of {', '.join(PERIODS)}")
            rows = (await read(lambda: queries().funnel(period))).buckets
        elif table == "runs":
            rows = await read(lambda: queries().run_history(job=job or None))
        elif table == "erasures":
            rows = await read(lambda: queries().erasures())
        else:
            rows = (await read(lambda: queries().order_history(q, with_candidates=show))).orders
        text = to_csv(_visible(COLUMNS[table], show), rows)
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="kombo-{table}.csv"',
                "Cache-Control": "no-store",
            },
        )

    def _back(**params: str) -> RedirectResponse:
        # Relative, so it works under any prefix or proxy; the browser resolves it against the action's URL
        # (`<console>/actions/replay`), hence one level up.
        return RedirectResponse("../dead-letters?" + urlencode(params), status_code=status.HTTP_303_SEE_OTHER)

    async def _form_lists(request: Request) -> tuple[list[str], list[str], Any]:
        form = await request.form()
        order_ids = [str(value) for value in form.getlist("order_id")]
        return order_ids, [str(value) for value in form.getlist("quarantine_id")], form

    @app.post("/actions/replay")
    async def replay(request: Request, user: Any = Depends(run_access)) -> RedirectResponse:
        from kombo_sync.console.actions import ActionError, replay_conf, replay_order_ids, trigger_writeback

        chosen, quarantine_ids, form = await _form_lists(request)
        integration_id = str(form.get("all_for_integration") or "") or None
        order_ids = await read(lambda: replay_order_ids(queries(), chosen, quarantine_ids, integration_id))
        try:
            conf = replay_conf(order_ids)
            run_id = await run_in_threadpool(
                trigger_writeback, conf, user=user, request=request, note="Replay from the Kombo console"
            )
        except ActionError as exc:
            return _back(error=str(exc))
        return _back(message=f"Replay of {len(conf['order_ids'])} order(s) queued as run {run_id}")

    @app.post("/actions/discard")
    async def discard(request: Request, user: Any = Depends(run_access)) -> RedirectResponse:
        from kombo_sync.console.actions import ActionError, discard_conf, trigger_writeback

        order_ids, quarantine_ids, form = await _form_lists(request)
        try:
            conf = discard_conf(order_ids, quarantine_ids, str(form.get("reason") or ""))
            run_id = await run_in_threadpool(
                trigger_writeback, conf, user=user, request=request, note="Discard from the Kombo console"
            )
        except ActionError as exc:
            return _back(error=str(exc))
        count = len(conf["discard_order_ids"]) + len(conf["discard_quarantine_ids"])
        return _back(message=f"Discard of {count} item(s) queued as run {run_id}")

    return app
