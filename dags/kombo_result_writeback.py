"""
### Kombo result write-back: every completed assessment reaches the ATS once, correct, and nothing is lost

Runs every 10 minutes (`KOMBO_WRITEBACK_SCHEDULE`), one run at a time.

1. **read_results**: runs the team's query (`include/sql/results.sql`) on the warehouse for rows updated in
   the data interval plus `writeback.overlap_minutes`, in chunks; maps each row to Kombo's result (pandas),
   validates it (pydantic), quarantines bad rows with their reason and queues the rest in the result outbox,
   keyed by order id and payload hash: nothing already queued or sent is queued again.
2. **send_results**: `PUT /assessment/orders/{id}/result`, concurrently within Kombo's rate and in-flight
   limits; lost acknowledgements are resolved by reading the order back; permanent errors become dead letters
   (code, message, log_url); a change after the order left OPEN is recorded as `not_writable`.
3. **report**: outbox counts and the newest dead letters.

Params (manual runs): `order_ids` (replay or preview those results, dead letters included), `dry_run` (show the
mapped payloads and their diff, send nothing), `date_from` / `date_to` (re-read that range),
`replay_dead_letters` (requeue every dead letter), `discard_order_ids` / `discard_quarantine_ids` with
`discard_reason` (give up on those dead letters / quarantined rows, keeping the reason). See docs/writeback.md.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from kombo_sync.dag_kit import cron, dag_defaults, flag_param


@dag(
    dag_id="kombo_result_writeback",
    schedule=cron("KOMBO_WRITEBACK_SCHEDULE", "*/10 * * * *"),
    doc_md=__doc__,
    **dag_defaults("writeback", retry_delay=timedelta(minutes=1)),
    params={
        "order_ids": Param(
            [], type=["array", "null"], items={"type": "string"}, description="replay / preview these"
        ),
        "dry_run": flag_param("print the payloads and their diff, send nothing"),
        "date_from": Param(
            None, type=["null", "string"], description="re-read from (YYYY-MM-DD or ISO time)"
        ),
        "date_to": Param(None, type=["null", "string"], description="until, exclusive (default: now)"),
        "replay_dead_letters": flag_param("requeue every dead letter"),
        "discard_order_ids": Param(
            [], type=["array", "null"], items={"type": "string"}, description="discard these dead letters"
        ),
        "discard_quarantine_ids": Param(
            [], type=["array", "null"], items={"type": "integer"}, description="discard these quarantine rows"
        ),
        "discard_reason": Param(
            None, type=["null", "string"], description="why (required with the two discard params)"
        ),
    },
)
def kombo_result_writeback() -> None:
    @task
    def read_results(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.writeback.tasks import read_task

        return read_task(context)

    # all_done: results queued by earlier runs are still sent when this run's read failed.
    @task(pool="kombo_api", trigger_rule="all_done")
    def send_results(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.writeback.tasks import send_task

        return send_task(context)

    @task(trigger_rule="all_done")
    def report(read_summary, send_summary):  # type: ignore[no-untyped-def]
        from kombo_sync.writeback.tasks import report_task

        return report_task(read_summary, send_summary)

    read = read_results()
    sent = send_results()
    read >> sent
    report(read, sent)


kombo_result_writeback()
