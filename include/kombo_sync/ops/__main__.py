"""`python -m kombo_sync.ops COMMAND`: operator commands on the state store.

`erase --email ADDRESS [--email ...]`: erase every order of these candidates now (GDPR erasure on request); prints
counts, never the data. `retention [--dry-run]`: apply the retention rules now, as the housekeeping DAG does.
`status`, `dead-letters`, `order ID`: the Kombo console's views; `replay`, `discard`: its repairs, as
`kombo_result_writeback` runs (kombo_sync.ops.console, docs/console.md "From the command line").
The state store and the salt come from the same connections and settings as the DAGs (docs/lifecycle.md);
Airflow's metadata database (for replay and discard) from AIRFLOW_HOME, as for the `airflow` command.
Exit codes: 0 done, 1 `status --check` found an integration needing attention (or `order` found nothing),
2 bad input or a database that cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kombo_sync.ops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    erase = commands.add_parser("erase", help="erase a candidate's personal data now (all their orders)")
    erase.add_argument(
        "--email", action="append", required=True, help="the candidate's e-mail (repeat for several)"
    )
    erase.add_argument("--reason", default="erasure requested by the candidate", help="recorded in erasures")
    erase.add_argument("--requested-by", default=None, help="recorded in erasures (default: your login)")
    erase.add_argument("--dry-run", action="store_true", help="count what would be erased, erase nothing")
    retention = commands.add_parser("retention", help="apply the retention rules now")
    retention.add_argument("--dry-run", action="store_true", help="count what would be erased, erase nothing")
    from kombo_sync.ops.console import add_commands

    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Library logs go to stderr; the counts (JSON) are the only thing on stdout.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    from kombo_sync.candidate_hash import SaltTooShort, candidate_hasher
    from kombo_sync.housekeeping.retention import InvalidEmail, checked_email, erase_candidates, purge
    from kombo_sync.ops.console import COMMANDS as CONSOLE_COMMANDS
    from kombo_sync.runtime import state_store
    from kombo_sync.settings import load_settings

    if args.command in CONSOLE_COMMANDS:
        return console_command(args)
    settings = load_settings()
    try:
        if args.command == "erase":
            # Checked before anything else, so a typo never half-erases a list.
            emails = [checked_email(email) for email in args.email]
        hasher = candidate_hasher(settings.retention.salt_conn_id, cached=False)
        store = state_store(settings)
        if args.command == "erase":
            summary = erase_candidates(
                store,
                hasher,
                emails,
                reason=args.reason,
                requested_by=args.requested_by or f"cli:{getpass.getuser()}",
                dry_run=args.dry_run,
            )
            if not summary["candidates_found"]:
                print("no order of this candidate is in the state store", file=sys.stderr)
        else:
            summary = purge(store, settings.retention, hasher, dry_run=args.dry_run)
    except (InvalidEmail, SaltTooShort) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0


def console_command(args: argparse.Namespace) -> int:
    """One of the console's commands; bad input and unreachable databases as one line on stderr, exit 2."""
    import sqlalchemy.exc

    from kombo_sync.console.queries import ConsoleQueries
    from kombo_sync.ops.console import EXIT_ERROR, CommandError, run
    from kombo_sync.runtime import state_store
    from kombo_sync.settings import load_settings

    out = sys.stdout
    try:
        # Airflow's logging (configured on its first import) and the pipeline's go to stderr: stdout holds only
        # the table, CSV or JSON asked for.
        with contextlib.redirect_stdout(sys.stderr):
            return run(args, lambda: ConsoleQueries(state_store(load_settings())), out)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        # The statement and the URL stay out of it (they may hold ids or a password).
        print(f"error: the state store cannot be read ({type(exc).__name__}); check the kombo_state connection",
              file=sys.stderr)  # fmt: skip
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
