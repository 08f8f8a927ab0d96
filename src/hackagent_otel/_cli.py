"""``hackagent-otel``: argument parsing only; each command calls a run function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hackagent_otel import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hackagent-otel",
        description="HackAgent pipeline tracking on OpenTelemetry.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="run the example pipeline and a per-goal attack; show their timelines here",
    )
    outbox = commands.add_parser(
        "outbox",
        help="show what waits in the outboxes, for which API, and why",
        description=(
            "List every outbox (the default one, $HACKAGENT_OUTBOX_PATH if set, and the "
            "one per API beside it) with the API its records are for, its counts, and its "
            "pending and rejected rows."
        ),
    )
    outbox.add_argument("--path", type=Path, help="one outbox file (default: every outbox)")
    outbox.add_argument("--limit", type=int, default=20, help="rows listed per state")
    push = commands.add_parser(
        "push",
        help="deliver every outbox's pending records to the API each was made for",
        description=(
            "Deliver the pending records of every outbox (the default one and the one per "
            "API beside it). An outbox made for an API goes to that API, whatever "
            "$HACKAGENT_BASE_URL says. Records made with no API (the default outbox) go "
            "only to an API named for them: --base-url, else $HACKAGENT_BASE_URL; with "
            "neither they are left and push exits 1. --base-url URL pushes only the "
            "outboxes made for URL and those made with no API. The key (--api-key, else "
            "$HACKAGENT_API_KEY) is sent to every API pushed to. Exit status: 0 when "
            "nothing is left pending in the outboxes pushed, 1 when something is, 2 on a "
            "usage error."
        ),
    )
    push.add_argument(
        "--path", type=Path, help="one outbox file, pushed alone (default: every outbox)"
    )
    push.add_argument(
        "--base-url",
        help=(
            "push the outboxes made for this API root and those made with no API, to it "
            "(default for records made with no API: $HACKAGENT_BASE_URL)"
        ),
    )
    push.add_argument("--api-key", help="API key (default: $HACKAGENT_API_KEY)")
    push.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up after this long without progress while the API is unreachable (default: 60)",
    )
    add_bridge_parser(commands)
    return parser


def add_bridge_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hackagent-otel bridge``: every option also has an env var (see BridgeSettings)."""
    bridge = commands.add_parser(
        "bridge",
        help="OTLP receiver: spans from a Collector or app in, HackAgent records out",
        description=(
            "Serve POST /v1/traces (OTLP/HTTP, protobuf or JSON, gzip), /healthz, /readyz "
            "and /metrics, and with --grpc-port OTLP/gRPC too. Records are committed to a "
            "durable outbox before each export is answered, and delivered to the HackAgent "
            "API ($HACKAGENT_BASE_URL, $HACKAGENT_API_KEY). "
            "Set $HACKAGENT_BRIDGE_TOKEN to require 'Authorization: Bearer <token>'."
        ),
    )
    bridge.add_argument("--host", help="interface to listen on (default: 127.0.0.1)")
    bridge.add_argument("--port", type=int, help="port to listen on (default: 4328)")
    bridge.add_argument(
        "--grpc-port",
        type=int,
        help="also serve OTLP/gRPC on this port, e.g. 4329 (default: off; "
        "the Collector's load_balancing exporter needs it)",
    )
    bridge.add_argument("--base-url", help="HackAgent API root (default: $HACKAGENT_BASE_URL)")
    bridge.add_argument(
        "--outbox", type=Path, help="the bridge's outbox file (default: bridge-outbox.sqlite3)"
    )
    bridge.add_argument("--max-body-bytes", type=int, help="limit as sent (default: 4 MiB)")
    bridge.add_argument(
        "--max-decompressed-bytes", type=int, help="limit once decompressed (default: 20 MiB)"
    )
    bridge.add_argument(
        "--max-pending",
        type=int,
        help="outbox rows waiting for the API above which exports get 429 (default: 200000)",
    )
    bridge.add_argument(
        "--max-spans-per-request",
        type=int,
        help="spans of ours taken from one request; the rest are rejected (default: 10000)",
    )
    bridge.add_argument(
        "--max-buffered-bytes",
        type=int,
        help="request body bytes held in memory at once before 429 (default: 64 MiB)",
    )
    bridge.add_argument(
        "--max-connections",
        type=int,
        help="open connections; past it the slowest to send headers is closed (default: 512)",
    )
    bridge.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="time a connection may take to send request headers (default: 10)",
    )
    bridge.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="time a request may take to send its body; then 408 (default: 30)",
    )
    bridge.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="default: info"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from hackagent_otel._demo import run_demo

        run_demo()
        return 0
    if args.command == "bridge":
        return _run_bridge(args)
    from rich.console import Console

    from hackagent_otel import _outbox_commands

    console = Console()
    if args.command == "outbox":
        return _outbox_commands.show_outbox(args.path, limit=args.limit, console=console)
    if args.command == "push":
        return _outbox_commands.push_outbox(
            args.path, args.base_url, args.api_key, console=console, max_wait=args.max_wait
        )
    return 2  # pragma: no cover - argparse rejects unknown commands


def _run_bridge(args: argparse.Namespace) -> int:
    from hackagent_otel.bridge import BridgeSettings, run

    try:
        settings = BridgeSettings.resolve(
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            hackagent_base_url=args.base_url,
            outbox_path=args.outbox,
            max_body_bytes=args.max_body_bytes,
            max_decompressed_bytes=args.max_decompressed_bytes,
            max_pending_records=args.max_pending,
            max_spans_per_request=args.max_spans_per_request,
            max_buffered_bytes=args.max_buffered_bytes,
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"hackagent-otel bridge: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
