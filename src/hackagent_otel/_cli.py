"""``hackagent-otel``: argument parsing only; each command calls a run function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hackagent_otel import __version__
from hackagent_otel._settings_table import Setting, argument, rows


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
    """``hackagent-otel bridge``: one option per row of BridgeSettings that has one."""
    from hackagent_otel.bridge._settings import BridgeSettings

    bridge = commands.add_parser(
        "bridge",
        help="OTLP receiver: spans from a Collector or app in, HackAgent records out",
        description=(
            "Serve POST /v1/traces (OTLP/HTTP, protobuf or JSON, gzip), /healthz, /readyz "
            "and /metrics, and with --grpc-port OTLP/gRPC too. Records are committed to a "
            "durable outbox before each export is answered, and "
            "delivered to the HackAgent API ($HACKAGENT_BASE_URL, $HACKAGENT_API_KEY). "
            "Set $HACKAGENT_BRIDGE_TOKEN to require 'Authorization: Bearer <token>'. "
            "Each option also has its env var, read when the option is not given."
        ),
    )
    for row in rows(BridgeSettings):
        if row.flag is not None:
            bridge.add_argument(
                row.flag,
                *row.old_flags(),
                dest=row.name,
                type=_option_value(row),
                metavar=row.kind.metavar,
                help=_option_help(row),
            )


def _option_value(row: Setting[Any]) -> Callable[[str], Any]:
    """What argparse calls on an option's text: the row's value, or a usage error."""

    def value(text: str) -> Any:
        try:
            return argument(row, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    value.__name__ = row.name
    return value


def _option_help(row: Setting[Any]) -> str:
    env = ", ".join(f"${name}" for name in row.env)
    text = f"{row.help} (default: {row.shown_default()}; env: {env})"
    return text.replace("`", "").replace("%", "%%")


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

    options = {row.name: getattr(args, row.name) for row in rows(BridgeSettings) if row.flag}
    try:
        settings = BridgeSettings.resolve(**options)
    except ValueError as exc:
        print(f"hackagent-otel bridge: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
