"""`python -m kombo_sync.state migrate [--url URL]` and `python -m kombo_sync.state current [--url URL]`."""

from __future__ import annotations

import argparse
import logging
import sys

from kombo_sync.state.store import StateStore, head_revision, mask_url, resolve_state_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kombo_sync.state", description=__doc__)
    parser.add_argument(
        "command",
        choices=["migrate", "current"],
        help="migrate: upgrade the state store to the newest revision; current: print its revision",
    )
    parser.add_argument(
        "--url",
        help="state database URL (default: Airflow connection kombo_state, KOMBO_STATE_DB_URL, local SQLite)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "migrate" else logging.WARNING, format="%(message)s"
    )
    store = StateStore(args.url or resolve_state_url())
    try:
        if args.command == "migrate":
            revision = store.migrate()
            print(f"{mask_url(store.url)}: at revision {revision} (head {head_revision()})")
        else:
            print(store.current_revision() or "none")
    finally:
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
