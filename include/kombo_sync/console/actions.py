"""The console's repairs: each is a run of `kombo_result_writeback` with the DAG's own params as conf.

Nothing here writes the state store. A replay or a discard goes through exactly the code path of a manual run
with those params (docs/writeback.md), created by the core REST API's own trigger function, so the run shows in
Airflow's run history with the user who asked for it and a note.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
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


def trigger_writeback(conf: dict[str, Any], *, user: Any, request: Any, note: str) -> str:
    """Create a queued manual run of the write-back DAG with `conf` through the core API's trigger function
    (param validation, run id, `triggering_user_name`); returns its run id."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
    from airflow.models.dagbag import DBDagBag
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    body = TriggerDAGRunPostBody(logical_date=None, conf=conf, note=note)
    with create_session() as session:
        run = trigger_dag_run(
            WRITEBACK_DAG_ID, body=body, dag_bag=DBDagBag(), user=user, session=session, request=request
        )
        # Annotated as the response model, it returns the ORM DagRun.
        run_id = str(getattr(run, "run_id"))  # noqa: B009
        # Airflow's audit log, as the REST route's action_logging writes it (Browse > Audit Log).
        session.add(
            Log(
                event="trigger_dag_run",
                owner=user.get_name(),
                extra=json.dumps({"source": "kombo_console", "method": "POST", "note": note}),
                dag_id=WRITEBACK_DAG_ID,
                run_id=run_id,
            )
        )
    log.info(
        "console: %s triggered %s run %s (%s)",
        user.get_name(),
        WRITEBACK_DAG_ID,
        run_id,
        ", ".join(f"{key}: {len(value) if isinstance(value, list) else 1}" for key, value in conf.items()),
    )
    return run_id
