"""Run the Kombo sandbox: `python -m sandbox --port 8765 --webhook-url http://127.0.0.1:8080/kombo/webhook`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from sandbox.knobs import KomboKnobs
from sandbox.kombo_app import KomboSandboxSettings, create_kombo_app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="A local, faithful Kombo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="sandbox-key", help="the bearer key clients must send")
    parser.add_argument(
        "--extra-api-key", action="append", default=[], help="another accepted key (repeatable)"
    )
    parser.add_argument("--environment-id", default=None, help="returned by /v1/check-api-key")
    parser.add_argument("--webhook-url", default=None, help="where webhooks are POSTed")
    parser.add_argument(
        "--webhook-secret", default="sandbox-webhook-secret", help="HMAC key for X-Kombo-Signature"
    )
    parser.add_argument(
        "--webhook-timeout", type=float, default=10.0, help="seconds to wait for a webhook answer"
    )
    knobs = parser.add_argument_group("knobs (all can be changed at runtime: PATCH /_sandbox/knobs)")
    knobs.add_argument("--latency-ms", default=None, help='fixed ("100") or a range ("50-150")')
    knobs.add_argument("--rate-limit", type=int, default=None, help="requests per window per API key")
    knobs.add_argument("--rate-limit-window", type=float, default=60.0, help="seconds")
    knobs.add_argument("--concurrency-limit", type=int, default=30, help="per integration; 0 = unlimited")
    knobs.add_argument("--error-rate", type=float, default=0.0, help="503 REMOTE.SERVICE_UNAVAILABLE")
    knobs.add_argument("--bare-503-rate", type=float, default=0.0, help="503 without a JSON body")
    knobs.add_argument(
        "--throttle-rate", type=float, default=0.0, help="random 429 PLATFORM.RATE_LIMIT_EXCEEDED"
    )
    knobs.add_argument("--timeout-rate", type=float, default=0.0, help="hang without applying the request")
    knobs.add_argument("--timeout-hang-seconds", type=float, default=60.0)
    knobs.add_argument("--lost-response-rate", type=float, default=0.0, help="apply, then drop the reply")
    knobs.add_argument("--lost-response-mode", choices=("close", "hang"), default="close")
    knobs.add_argument("--fault-methods", default="", help="e.g. PUT or GET,PUT; default: every method")
    knobs.add_argument("--fetch-attachment-urls", action="store_true", help="download data_url attachments")
    knobs.add_argument("--seed", type=int, default=None, help="makes ids and fault dice reproducible")
    parser.add_argument(
        "--integration",
        action="append",
        default=[],
        metavar="TOOL[:ID]",
        help="create an ACTIVE assessment integration at start-up (repeatable); ids are printed",
    )
    parser.add_argument("--request-log-size", type=int, default=50_000, help="request log entries kept")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="do not freeze bulk-created orders out of Python's full garbage collections",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs one line per request")
    return parser


def settings_from_args(args: argparse.Namespace) -> KomboSandboxSettings:
    knob_values: dict[str, object] = {
        "rate_limit": args.rate_limit,
        "rate_limit_window_seconds": args.rate_limit_window,
        "concurrency_limit": args.concurrency_limit or None,
        "error_rate": args.error_rate,
        "bare_503_rate": args.bare_503_rate,
        "throttle_rate": args.throttle_rate,
        "timeout_rate": args.timeout_rate,
        "timeout_hang_seconds": args.timeout_hang_seconds,
        "lost_response_rate": args.lost_response_rate,
        "lost_response_mode": args.lost_response_mode,
        "fault_methods": [method for method in args.fault_methods.split(",") if method],
        "fetch_attachment_urls": args.fetch_attachment_urls,
        "seed": args.seed,
    }
    if args.latency_ms is not None:
        knob_values["latency_ms"] = args.latency_ms
    return KomboSandboxSettings(
        api_key=args.api_key,
        extra_api_keys=tuple(args.extra_api_key),
        environment_id=args.environment_id,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        webhook_timeout_seconds=args.webhook_timeout,
        knobs=KomboKnobs.model_validate(knob_values),
        integrations=tuple(args.integration),
        request_log_size=args.request_log_size,
        gc_freeze_bulk=not args.no_gc_freeze,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        sys.exit(f"invalid knob: {exc}")
    app = create_kombo_app(settings)
    for integration in app.state.runtime.state.list_integrations():
        print(f"integration {integration.id}", flush=True)
    print(f"Kombo sandbox on http://{args.host}:{args.port}/v1 (admin API: /_sandbox)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)


if __name__ == "__main__":
    main()
