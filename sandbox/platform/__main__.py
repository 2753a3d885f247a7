"""Run the platform stand-in: `python -m sandbox.platform --port 8766 --finish-after 30`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from sandbox.knobs import PlatformKnobs
from sandbox.platform_app import PlatformSettings, create_platform_app
from sandbox.warehouse import DEFAULT_WAREHOUSE_URL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.platform", description="The assessment provider's platform, simulated."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--warehouse-url", default=DEFAULT_WAREHOUSE_URL, help="any SQLAlchemy URL")
    parser.add_argument("--api-key", default=None, help="require `Authorization: Bearer <key>` on /api/*")
    parser.add_argument("--public-base-url", default=None, help="base of assessment and report URLs")
    parser.add_argument(
        "--finish-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="candidates finish this long after their invitation (default: only /_platform/simulate)",
    )
    parser.add_argument(
        "--cancel-rate", type=float, default=0.1, help="share of simulated candidates who cancel"
    )
    parser.add_argument(
        "--no-show-rate",
        type=float,
        default=0.0,
        help="share of candidates who never start (with --finish-after: their invitations stay open)",
    )
    knobs = parser.add_argument_group("knobs (PATCH /_platform/knobs at runtime)")
    knobs.add_argument("--latency-ms", default=None, help='fixed ("100") or a range ("50-150")')
    knobs.add_argument("--failure-rate", type=float, default=0.0, help="share of /api calls answering 503")
    knobs.add_argument("--lost-response-rate", type=float, default=0.0, help="create, then drop the reply")
    knobs.add_argument("--not-idempotent", action="store_true", help="every POST creates a new invitation")
    knobs.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs one line per request")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 0 <= args.no_show_rate <= 1:
        sys.exit("--no-show-rate must be between 0 and 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    knob_values: dict[str, object] = {
        "failure_rate": args.failure_rate,
        "lost_response_rate": args.lost_response_rate,
        "idempotent": not args.not_idempotent,
        "seed": args.seed,
    }
    if args.latency_ms is not None:
        knob_values["latency_ms"] = args.latency_ms
    try:
        knobs = PlatformKnobs.model_validate(knob_values)
    except ValueError as exc:
        sys.exit(f"invalid knob: {exc}")
    settings = PlatformSettings(
        warehouse_url=args.warehouse_url,
        api_key=args.api_key,
        knobs=knobs,
        finish_after_seconds=args.finish_after,
        cancel_rate=args.cancel_rate,
        no_show_rate=args.no_show_rate,
        public_base_url=args.public_base_url,
    )
    app = create_platform_app(settings)
    print(f"platform stand-in on http://{args.host}:{args.port} (admin API: /_platform)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)


if __name__ == "__main__":
    main()
