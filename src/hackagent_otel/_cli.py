"""``hackagent-otel``: argument parsing only; each command calls a run function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from hackagent_otel._demo import run_demo

        run_demo()
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
