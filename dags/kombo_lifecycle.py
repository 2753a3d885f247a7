"""
### Kombo lifecycle: reminders to candidates who have not finished, and expiry of orders without a result

Runs every hour at minute 20 (`KOMBO_LIFECYCLE_SCHEDULE`), one run at a time, so a reminder goes out within the
hour it is due. The schedule is `lifecycle` in `pipeline.yaml` (default: reminders 2 and 5 days after the
invitation, expiry after 14 days; per package and per integration overridable; reminders can be switched off).

1. **expire**: an invited order without a result past its expiry time has its invitation revoked (platform;
   e-mail cannot be taken back) and becomes `cancelled` with `expired_at`; its CANCELLED result with a TEXT
   attribute saying it expired and when goes to Kombo through the result outbox (the write-back sends it once).
   A result that arrives later is recorded `not_writable`, never sent.
2. **remind**: each reminder due now goes out once through the order's channel (the platform's reminder call
   or an e-mail from `include/templates/reminder_*`), claimed with a lease and recorded `sent`. Never to a
   cancelled, expired or finished order (one with any result in the outbox) or one whose candidate data was erased.
3. **report**: the counts; the run fails (not retried) when invitations could not be revoked or reminders were
   given up.

Params: `integration_ids` (empty = all), `dry_run` (count what is due; send, revoke and record nothing).
See docs/lifecycle.md.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from kombo_sync.dag_kit import cron, dag_defaults, flag_param, integration_ids_param


@dag(
    dag_id="kombo_lifecycle",
    schedule=cron("KOMBO_LIFECYCLE_SCHEDULE", "20 * * * *"),
    doc_md=__doc__,
    **dag_defaults("lifecycle", retry_delay=timedelta(seconds=30)),
    params={
        "integration_ids": integration_ids_param("empty: all"),
        "dry_run": flag_param("count what is due; send, revoke and record nothing"),
    },
)
def kombo_lifecycle() -> None:
    @task
    def expire(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.lifecycle.tasks import expire_task

        return expire_task(context)

    # After the expiry, so an order that just expired gets no reminder; runs even when the expiry failed.
    @task(trigger_rule="all_done")
    def remind(**context):  # type: ignore[no-untyped-def]
        from kombo_sync.lifecycle.tasks import remind_task

        return remind_task(context)

    @task(trigger_rule="all_done")
    def report(expire_summary, remind_summary):  # type: ignore[no-untyped-def]
        from kombo_sync.lifecycle.tasks import report_task

        return report_task(expire_summary, remind_summary)

    expired = expire()
    reminded = remind()
    expired >> reminded
    report(expired, reminded)


kombo_lifecycle()
