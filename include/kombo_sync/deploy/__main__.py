"""`python -m kombo_sync.deploy COMMAND`: the one-off steps of `airflow-init`, and `init-env` for a new `.env`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kombo_sync.deploy import bootstrap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kombo_sync.deploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "ensure-state-db", help="create the state store's database (connection kombo_state) if missing"
    )
    ensure = commands.add_parser("ensure-db", help="create the database of a SQLAlchemy URL if missing")
    ensure.add_argument("url")
    passwords = commands.add_parser(
        "write-passwords",
        help="set the admin password of the simple auth manager from AIRFLOW_ADMIN_PASSWORD",
    )
    passwords.add_argument("--file", default=None, help="default: [core] simple_auth_manager_passwords_file")
    passwords.add_argument("--user", default=None, help="default: first user of simple_auth_manager_users")
    owner = commands.add_parser("fix-ownership", help="as root: chown -R $AIRFLOW_UID:0 the given folders")
    owner.add_argument("paths", nargs="+")
    env = commands.add_parser("init-env", help="write .env from .env.example with fresh secrets")
    env.add_argument("--example", default=".env.example")
    env.add_argument("--output", default=".env")
    env.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    if args.command == "ensure-state-db":
        print(f"state store database ready: {bootstrap.ensure_state_database()}")
    elif args.command == "ensure-db":
        created = bootstrap.ensure_database(args.url)
        print("database created" if created else "database already there")
    elif args.command == "write-passwords":
        path = bootstrap.write_passwords(args.file, user=args.user)
        print(f"admin password written to {path}")
    elif args.command == "fix-ownership":
        print(f"ownership fixed on {bootstrap.fix_ownership(args.paths)} entries")
    elif args.command == "init-env":
        try:
            keys = bootstrap.init_env(Path(args.example), Path(args.output), force=args.force)
        except FileExistsError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"wrote {args.output} with fresh values for: {', '.join(keys) or 'nothing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
