"""The console's repairs: each is a run of `kombo_result_writeback` with the DAG's own params as conf.

Nothing here writes the state store. A replay or a discard goes through exactly the code path of a manual run
with those params (docs/writeback.md), created by the core REST API's own trigger function, so the run shows in
Airflow's run history with the user who asked for it and a note. The console (a logged-in Airflow user) and the
command line (`python -m kombo_sync.ops replay|discard`, the OS user) both call `trigger_writeback`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kombo_sync.console.security import WRITEBACK_DAG_ID

log = logging.getLogger(__name__)

# A DAG run's conf is stored in the metadata DB: keep each list to a size an operator can still read.
MAX_IDS_PER_RUN = 1000


class ActionError(ValueError):
    """The request cannot become a run (nothing chosen, no reason, too many ids)."""


def _ids(values: Iterable[str]) -> list[str]:
    found = list(dict.fromkeys(value.strip() for value in values if value and value.strip()))
    if len(found) > MAX_IDS_PER_RUN:
        raise ActionError(f"at most {MAX_IDS_PER_RUN} items per run; choose fewer or use replay_dead_letters")
    return found


@dataclass(frozen=True)
class CommandLineUser:
    """Who asked for a run from a terminal: the OS login, as the `user` of `trigger_writeback`."""

    login: str

    def get_name(self) -> str:
        return self.login

    def get_id(self) -> str:
        return f"cli:{self.login}"


def replay_order_ids(
    queries: Any,
    order_ids: Iterable[str] = (),
    quarantine_ids: Iterable[str] = (),
    all_for_integration: str | None = None,
) -> list[str]:
    """The orders a replay names: the chosen ones, every dead letter of `all_for_integration`, and the orders of
    the chosen open quarantined write-back rows (replaying one re-reads its order's row from the warehouse)."""
    wanted = list(order_ids)
    if all_for_integration:
        wanted += [letter["order_id"] for letter in queries.dead_letters(integration_id=all_for_integration)]
    rows = {int(value) for value in quarantine_ids if str(value).strip().isdigit()}
    if rows:
        wanted += [
            str(row["source_key"])
            for row in queries.quarantine(ids=rows)
            if row["job"] == "writeback" and row["integration_id"]
        ]
    return wanted


def replay_conf(order_ids: Iterable[str]) -> dict[str, Any]:
    """The conf of a replay: the DAG's `order_ids` (their dead letters are requeued, their rows re-read)."""
    wanted = _ids(order_ids)
    if not wanted:
        raise ActionError("choose at least one dead letter or quarantined row to replay")
    return {"order_ids": wanted}


def discard_conf(order_ids: Iterable[str], quarantine_ids: Iterable[str], reason: str) -> dict[str, Any]:
    """The conf of a discard: `discard_order_ids`, `discard_quarantine_ids` and the required reason."""
    orders = _ids(order_ids)
    rows = _ids(quarantine_ids)
    if not orders and not rows:
        raise ActionError("choose at least one dead letter or quarantined row to discard")
    if not reason.strip():
        raise ActionError("say why: a discard needs a reason")
    try:
        row_ids = [int(value) for value in rows]
    except ValueError as exc:
        raise ActionError("quarantine ids are numbers") from exc
    return {
        "discard_order_ids": orders,
        "discard_quarantine_ids": row_ids,
        "discard_reason": reason.strip()[:1000],
    }


def trigger_writeback(conf: dict[str, Any], *, user: Any, note: str, request: Any = None) -> str:
    """Create a queued manual run of the write-back DAG with `conf` through the core API's trigger function
    (param validation, run id, `triggering_user_name`); returns its run id.

    `request` is the console's HTTP request; None means the command line: the run is then marked as triggered
    from the CLI, as `airflow dags trigger` marks its runs. Errors are the route's own `HTTPException`s (404: the
    DAG is not in the metadata DB, 400: a param failed validation) and SQLAlchemy's when the DB is down."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
    from airflow.models.dagbag import DBDagBag
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from starlette.requests import Request

    from_cli = request is None
    if from_cli:
        # The route reads only the Referer header of its request (UI or REST API); a terminal sends none.
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []})
    body = TriggerDAGRunPostBody(logical_date=None, conf=conf, note=note)
    with create_session() as session:
        run = trigger_dag_run(
            WRITEBACK_DAG_ID, body=body, dag_bag=DBDagBag(), user=user, session=session, request=request
        )
        # Annotated as the response model, it returns the ORM DagRun.
        run_id = str(getattr(run, "run_id"))  # noqa: B009
        if from_cli:
            run.triggered_by = DagRunTriggeredByType.CLI  # type: ignore[attr-defined]
        # Airflow's audit log, as the REST route's action_logging writes it (Browse > Audit Log).
        session.add(
            Log(
                event="trigger_dag_run",
                owner=user.get_name(),
                extra=json.dumps(
                    {
                        "source": "kombo_ops_cli" if from_cli else "kombo_console",
                        "method": "cli" if from_cli else "POST",
                        "note": note,
                    }
                ),
                dag_id=WRITEBACK_DAG_ID,
                run_id=run_id,
            )
        )
    log.info(
        "%s: %s triggered %s run %s (%s)",
        "ops" if from_cli else "console",
        user.get_name(),
        WRITEBACK_DAG_ID,
        run_id,
        ", ".join(f"{key}: {len(value) if isinstance(value, list) else 1}" for key, value in conf.items()),
    )
    return run_id
