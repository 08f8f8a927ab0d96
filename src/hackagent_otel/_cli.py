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
        "demo", help="run the example pipeline and show its step timeline in the terminal"
    )
    outbox = commands.add_parser("outbox", help="show what waits in the outbox, and why")
    outbox.add_argument("--path", type=Path, help="an outbox file (default: every one)")
    outbox.add_argument("--limit", type=int, default=20, help="rows listed per state")
    push = commands.add_parser("push", help="deliver the outbox's pending records now")
    push.add_argument("--path", type=Path, help="the outbox file (default: the default one)")
    push.add_argument("--base-url", help="HackAgent API root (default: $HACKAGENT_BASE_URL)")
    push.add_argument("--api-key", help="API key (default: $HACKAGENT_API_KEY)")
    push.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up after this long without progress while the API is unreachable (default: 60)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from hackagent_otel._demo import run_demo

        run_demo()
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
