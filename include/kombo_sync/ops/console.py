"""The console's views and repairs from a terminal: `status`, `dead-letters`, `order`, `replay`, `discard`.

Every read is a `ConsoleQueries` method (the console's one home of its queries, the same health rules); every
repair is `console.actions.trigger_writeback`, the console's own path to a `kombo_result_writeback` run (the
core API's trigger function: param validation, run id, note), with the OS user as the one who asked.
Candidate e-mails and names are read only with `--show-candidate` and then only printed to stdout.

Over 400 lines on purpose: the five commands share their parser options, output and id checks, and a reader
sees in one file everything the terminal offers beside the console (docs/console.md "From the command line").
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from kombo_sync.console.queries import CANDIDATE_COLUMNS, COLUMNS, ORDER_STATE_COLUMNS, ConsoleQueries
from kombo_sync.ops.output import WIDTH, clip, iso, table, text, to_csv, to_json

# Exit codes: 0 done (status: every integration healthy), 1 status --check found one needing attention or an
# order lookup found nothing, 2 bad input or a database that cannot be reached (one line on stderr).
EXIT_ATTENTION = 1
EXIT_ERROR = 2
FORMATS = ("table", "csv", "json")
# As console.security.WRITEBACK_DAG_ID (not imported: that module loads FastAPI, which only repairs need).
WRITEBACK_DAG_ID = "kombo_result_writeback"

# The overview in a terminal: the counts of each state in one cell, problems and errors under the table.
STATUS_COLUMNS = (
    ("health", "Health"),
    ("integration_id", "Integration"),
    ("customer", "Customer"),
    ("tool", "ATS"),
    ("served", "Status"),
    ("last_poll_at", "Last poll"),
    ("today", "Today"),
    ("week", "7 days"),
    ("dead_letters", "Dead"),
    ("quarantined", "Quar."),
)
STATE_LEGEND = "Today / 7 days: orders " + "/".join(ORDER_STATE_COLUMNS) + " (days start 00:00 UTC)"
DEAD_LETTER_COLUMNS = (
    ("order_id", "Order"),
    ("integration_id", "Integration"),
    ("state", "State"),
    ("code", "Code"),
    ("message", "Message"),
    ("attempts", "Tries"),
    ("last_attempt_at", "Last attempt"),
)
QUARANTINE_COLUMNS = (
    ("id", "Id"),
    ("job", "Job"),
    ("source_key", "Key"),
    ("integration_id", "Integration"),
    ("reason", "Reason"),
    ("created_at", "Quarantined at"),
)
# Columns never cut in a table (ids to copy, times, counts).
WHOLE = frozenset(
    {"integration_id", "order_id", "id", "last_poll_at", "today", "week", "dead_letters", "quarantined"}
    | {"last_attempt_at", "created_at", "received_at", "sent_at", "attempts", "response_status", "number"}
)


class CommandError(Exception):
    """Bad input or an unreachable database: one line on stderr, exit 2, nothing done."""


def add_commands(commands: Any) -> None:
    """Add `status`, `dead-letters`, `order`, `replay` and `discard` to the ops parser's subcommands."""

    def output_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="table", help="default: table")
        parser.add_argument("--wide", action="store_true", help="tables: cut no cell to fit 120 columns")

    status = commands.add_parser("status", help="one line per integration, the ones needing attention first")
    status.add_argument(
        "--integration", action="append", default=[], metavar="ID", help="only these (repeat)"
    )
    status.add_argument("--unhealthy", action="store_true", help="only the integrations needing attention")
    status.add_argument("--check", action="store_true", help="exit 1 when any integration needs attention")
    output_options(status)

    letters = commands.add_parser("dead-letters", help="dead letters and open quarantined rows")
    letters.add_argument("--integration", metavar="ID", help="only this integration's")
    letters.add_argument(
        "--only", choices=("dead-letters", "quarantine"), help="one of the two lists (needed for csv)"
    )
    output_options(letters)

    order = commands.add_parser("order", help="everything known about an order")
    order.add_argument("term", metavar="ID", help="Kombo order id, invitation id or ATS application id")
    order.add_argument(
        "--show-candidate", action="store_true", help="print the candidate's e-mail and name (stdout only)"
    )
    output_options(order)

    replay = commands.add_parser("replay", help="replay dead letters: a kombo_result_writeback run")
    replay.add_argument("order_ids", nargs="*", metavar="ORDER_ID", help="the orders whose results to replay")
    replay.add_argument(
        "--integration", metavar="ID", help="with --all: every dead letter of this integration"
    )
    replay.add_argument("--all", action="store_true", help="with --integration: all its dead letters")
    replay.add_argument(
        "--quarantine-id",
        action="append",
        default=[],
        metavar="N",
        help="a quarantined write-back row (repeat)",
    )
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed, start nothing")
    replay.add_argument("--format", choices=("table", "json"), default="table", help="default: table")

    discard = commands.add_parser("discard", help="give up on dead letters / quarantined rows, with a reason")
    discard.add_argument(
        "order_ids", nargs="*", metavar="ORDER_ID", help="the orders whose dead letters to drop"
    )
    discard.add_argument(
        "--quarantine-id", action="append", default=[], metavar="N", help="an open quarantined row (repeat)"
    )
    discard.add_argument("--reason", required=True, help="why (kept with each discarded item)")
    discard.add_argument("--dry-run", action="store_true", help="show what would be discarded, start nothing")
    discard.add_argument("--format", choices=("table", "json"), default="table", help="default: table")


COMMANDS = ("status", "dead-letters", "order", "replay", "discard")


def run(args: argparse.Namespace, queries_factory: Callable[[], ConsoleQueries], out: TextIO) -> int:
    """Run one of `COMMANDS`, printing to `out` (the real stdout: Airflow's and the pipeline's logs are sent
    to stderr meanwhile); returns the exit code; raises `CommandError` for exit 2."""
    global _out
    _out = out
    width = 10**6 if getattr(args, "wide", False) else WIDTH
    if args.command == "status":
        return status(args, queries_factory(), width)
    if args.command == "dead-letters":
        return dead_letters(args, queries_factory(), width)
    if args.command == "order":
        return order(args, queries_factory(), width)
    return repair(args, queries_factory())


_out: TextIO = sys.stdout


def _print(value: str, end: str = "\n") -> None:
    _out.write(value + end)
    _out.flush()


# Status ----------------------------------------------------------------------------------------------------


def _counts(row: Mapping[str, Any], prefix: str) -> str:
    return "/".join(str(row.get(f"{prefix}_{state}") or 0) for state in ORDER_STATE_COLUMNS)


def _terminal_row(row: Mapping[str, Any]) -> dict[str, Any]:
    served = str(row.get("status") or "")
    if row.get("status") == "ACTIVE" and not row.get("enabled"):
        served = "disabled"
    return {
        **row,
        "served": served,
        "today": _counts(row, "today"),
        "week": _counts(row, "week"),
        # To the minute: the column fits beside the counts.
        "last_poll_at": iso(row["last_poll_at"])[:16] + "Z" if row.get("last_poll_at") else None,
    }


def status(args: argparse.Namespace, queries: ConsoleQueries, width: int) -> int:
    rows = queries.overview()
    if args.integration:
        wanted = set(args.integration)
        unknown = sorted(wanted - {row["integration_id"] for row in rows})
        if unknown:
            raise CommandError(f"no integration {', '.join(unknown)} in the state store")
        rows = [row for row in rows if row["integration_id"] in wanted]
    attention = [row for row in rows if row["health"] != "ok"]
    if args.unhealthy:
        rows = attention
    if args.format == "json":
        _print(to_json({"integrations": rows, "needs_attention": len(attention)}))
    elif args.format == "csv":
        _print(to_csv(COLUMNS["overview"], rows), end="")
    else:
        _print(table(STATUS_COLUMNS, [_terminal_row(row) for row in rows], width=width, whole=WHOLE))
        _print(clip(STATE_LEGEND, width))
        details = [row for row in rows if row["problems"] or row["last_error"]]
        if details:
            _print("")
        for row in details:
            _print(clip(f"{row['integration_id']}: {row['problems'] or 'ok'}", width))
            if row["last_error"]:
                _print(clip(f"  last error {text(row['last_error_at'])}: {text(row['last_error'])}", width))
            if row["last_error_log_url"]:
                _print(clip(f"  Kombo log: {row['last_error_log_url']}", width))
        _print(f"\n{len(rows)} integration(s), {len(attention)} needing attention")
    return EXIT_ATTENTION if args.check and attention else 0


# Dead letters ----------------------------------------------------------------------------------------------


def dead_letters(args: argparse.Namespace, queries: ConsoleQueries, width: int) -> int:
    if args.format == "csv" and not args.only:
        raise CommandError("csv holds one table: add --only dead-letters or --only quarantine")
    integration_id = args.integration or None
    letters = queries.dead_letters(integration_id=integration_id) if args.only != "quarantine" else []
    jailed = queries.quarantine(integration_id=integration_id) if args.only != "dead-letters" else []
    if args.format == "json":
        found: dict[str, Any] = {}
        if args.only != "quarantine":
            found["dead_letters"] = letters
        if args.only != "dead-letters":
            found["quarantine"] = jailed
        _print(to_json(found))
        return 0
    if args.format == "csv":
        table_name = "dead_letters" if args.only == "dead-letters" else "quarantine"
        _print(to_csv(COLUMNS[table_name], letters or jailed), end="")
        return 0
    if args.only != "quarantine":
        _print(f"Dead letters: {len(letters)}")
        if letters:
            _print(table(DEAD_LETTER_COLUMNS, letters, width=width, whole=WHOLE))
            for url in sorted({str(letter["log_url"]) for letter in letters if letter.get("log_url")}):
                _print(clip(f"  Kombo log: {url}", width))
    if args.only is None:
        _print("")
    if args.only != "dead-letters":
        _print(f"Open quarantined rows: {len(jailed)}")
        if jailed:
            _print(table(QUARANTINE_COLUMNS, jailed, width=width, whole=WHOLE))
    return 0


# Order lookup ----------------------------------------------------------------------------------------------


def _record(columns: Sequence[tuple[str, str]], row: Mapping[str, Any], width: int) -> list[str]:
    """A row as `Label: value` lines (for the few, wide rows of an order lookup)."""
    pad = max(len(label) for _key, label in columns) + 2
    return [
        clip(f"{(label + ':').ljust(pad)}{text(row.get(key))}", width)
        for key, label in columns
        if row.get(key) not in (None, "")
    ]


def order(args: argparse.Namespace, queries: ConsoleQueries, width: int) -> int:
    if not args.term.strip():
        raise CommandError("give a Kombo order id, invitation id or ATS application id")
    history = queries.order_history(args.term, with_candidates=args.show_candidate)
    order_columns = [
        column for column in COLUMNS["orders"] if args.show_candidate or column[0] not in CANDIDATE_COLUMNS
    ]
    found = bool(history.orders or history.webhooks or history.versions)
    if args.format == "json":
        _print(
            to_json(
                {
                    "term": history.term,
                    "orders": history.orders,
                    "invitations": history.invitations,
                    "reminders": history.reminders,
                    "webhook_events": history.webhooks,
                    "result_versions": history.versions,
                }
            )
        )
    elif args.format == "csv":
        _print(to_csv(order_columns, history.orders), end="")
    elif found:
        for item in history.orders:
            _print(f"Order {item['id']}")
            for line in _record(order_columns[1:], item, width):
                _print("  " + line)
            _print("")
        sections = (
            ("Invitations", COLUMNS["invitations"], history.invitations),
            ("Reminders", COLUMNS["reminders"], history.reminders),
            ("Webhook events", COLUMNS["webhooks"], history.webhooks),
        )
        for title, columns, rows in sections:
            _print(f"{title}: {len(rows)}")
            if rows:
                _print(table(columns, rows, width=width, whole=WHOLE))
            _print("")
        _print(f"Result versions: {len(history.versions)}")
        for version in history.versions:
            _print(f"  {version['order_id']} version {version['payload_hash']}")
            for line in _record(COLUMNS["versions"][2:], version, width - 4):
                _print("    " + line)
    if not found:
        if args.format == "table":
            _print(f"nothing matches {history.term!r} (order id, invitation id or ATS application id)")
        return EXIT_ATTENTION
    return 0


# Replay and discard ----------------------------------------------------------------------------------------


def _ids(values: Sequence[str], what: str) -> list[str]:
    cleaned = [value.strip() for value in values if value.strip()]
    if len(cleaned) != len(values):
        raise CommandError(f"an empty {what} was given")
    return cleaned


def _quarantine_ids(values: Sequence[str]) -> list[int]:
    bad = [value for value in values if not value.strip().isdigit()]
    if bad:
        raise CommandError(f"quarantine ids are numbers, not {bad[0]!r}")
    return [int(value) for value in values]


def _plan(args: argparse.Namespace, queries: ConsoleQueries) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's conf (the console's own conf builders) and one line per item it names; `CommandError` when an
    id matches nothing, so a typo never starts a run that does nothing."""
    from kombo_sync.console.actions import ActionError, discard_conf, replay_conf, replay_order_ids

    order_ids = _ids(args.order_ids, "order id")
    row_ids = _quarantine_ids(args.quarantine_id)
    open_rows = {int(row["id"]): row for row in queries.quarantine(ids=row_ids)} if row_ids else {}
    missing = [str(value) for value in row_ids if value not in open_rows]
    if missing:
        raise CommandError(f"no open quarantined row {', '.join(missing)}")
    replaying = args.command == "replay"
    if replaying:
        if args.all != bool(args.integration):
            raise CommandError(
                "replay all dead letters of an integration with both --integration ID and --all"
            )
        if not (order_ids or row_ids or args.all):
            raise CommandError("name ORDER_IDs, --quarantine-id N, or --integration ID --all")
        not_writeback = [str(key) for key, row in open_rows.items() if row["job"] != "writeback"]
        if not_writeback:
            raise CommandError(
                f"quarantined row {', '.join(not_writeback)} is not a write-back row: fix it at its source "
                "(the next run reads it again) or discard it"
            )
        if args.all:
            integration_letters = queries.dead_letters(integration_id=args.integration)
            if not integration_letters:
                raise CommandError(f"integration {args.integration} has no dead letters")
        order_ids = replay_order_ids(queries, order_ids, [str(key) for key in row_ids], args.integration)
    elif not (order_ids or row_ids):
        raise CommandError("name the ORDER_IDs of dead letters and/or --quarantine-id N to discard")
    try:
        # The console's conf builders: at most 1000 ids, a reason for a discard.
        conf = (
            replay_conf(order_ids)
            if replaying
            else discard_conf(order_ids, [str(key) for key in row_ids], args.reason)
        )
    except ActionError as exc:
        raise CommandError(str(exc)) from exc
    order_ids = list(conf.get("order_ids", conf.get("discard_order_ids", [])))
    known = queries.known_orders(order_ids)
    unknown = [order_id for order_id in order_ids if order_id not in known]
    if unknown:
        more = " ..." if unknown[10:] else ""
        raise CommandError(f"no order {', '.join(unknown[:10])}{more} in the state store")
    if not replaying:
        alive = [order_id for order_id in order_ids if not known[order_id]]
        if alive:
            raise CommandError(f"order {', '.join(alive[:10])} has no dead letter to discard")
    items = [{"kind": "order", "id": order_id, "dead_letter": known[order_id]} for order_id in order_ids]
    # A replayed quarantined row is its order (listed above); a discarded one is resolved itself.
    items += [] if replaying else [
        {"kind": "quarantined row", "id": str(key), "integration_id": open_rows[key]["integration_id"],
         "job": open_rows[key]["job"], "source_key": open_rows[key]["source_key"]}
        for key in row_ids
    ]  # fmt: skip
    return conf, items


def trigger(conf: dict[str, Any], note: str) -> str:
    """`trigger_writeback` as the OS user; Airflow's answers and an unreachable metadata DB as `CommandError`."""
    import sqlalchemy.exc
    from fastapi import HTTPException

    from kombo_sync.console.actions import CommandLineUser, trigger_writeback

    try:
        return trigger_writeback(conf, user=CommandLineUser(getpass.getuser()), note=note)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise CommandError(
                f"the DAG {WRITEBACK_DAG_ID} is not in Airflow's metadata database (has the dag-processor parsed "
                "dags/? is AIRFLOW_HOME the deployment's?)"
            ) from exc
        raise CommandError(f"Airflow refused the run: {exc.detail}") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise CommandError(
            f"Airflow's metadata database is not reachable or not set up ({type(exc).__name__}); check "
            "AIRFLOW_HOME / AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, or run `airflow db migrate`"
        ) from exc


def repair(args: argparse.Namespace, queries: ConsoleQueries) -> int:
    conf, items = _plan(args, queries)
    verb = "Replay" if args.command == "replay" else "Discard"
    run_id = None
    if not args.dry_run:
        note = f"{verb} from the command line (python -m kombo_sync.ops) by {getpass.getuser()}"
        run_id = trigger(conf, note)
    if args.format == "json":
        _print(to_json({"dag_id": WRITEBACK_DAG_ID, "run_id": run_id, "dry_run": args.dry_run, "conf": conf,
                        "items": items}))  # fmt: skip
        return 0
    what = f"{len(items)} {'order' if args.command == 'replay' else 'item'}(s)"
    if args.dry_run:
        _print(f"Dry run: a {WRITEBACK_DAG_ID} run would get {what}; nothing was started.")
    else:
        _print(f"{verb} of {what} queued as {WRITEBACK_DAG_ID} run {run_id}")
    columns = (("kind", "Kind"), ("id", "Id"), ("dead_letter", "Dead letter"), ("integration_id", "Integration"),
               ("job", "Job"), ("source_key", "Key"))  # fmt: skip
    _print(table(columns, items, whole=WHOLE))
    _print(clip(f"conf: {json.dumps(conf)}", WIDTH))
    if run_id:
        _print("Watch it:")
        _print(f"  airflow dags list-runs {WRITEBACK_DAG_ID}")
        _print(f"  airflow tasks states-for-dag-run {WRITEBACK_DAG_ID} {run_id}")
        _print(f"  or the Airflow UI: Dags > {WRITEBACK_DAG_ID} > Runs")
    return 0
