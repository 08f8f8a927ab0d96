"""Run the fake HackAgent API in its own process: ``python -m hackagent_otel.testing``.

Useful for benchmarks (the server then does not share the client's interpreter lock)
and for trying a pipeline by hand. Prints the base URL on its first line, then serves
until interrupted. ``GET /_fake/stats`` reports call and trace counts, ``GET /_fake/calls``
each call with its arrival time.
"""

from __future__ import annotations

import argparse
import sys
import threading

from hackagent_otel.testing._fake_api import FakeHackAgentAPI


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until SIGINT/SIGTERM or stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m hackagent_otel.testing")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--unique-sequences", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every call")
    parser.add_argument(
        "--until-stdin-closes",
        action="store_true",
        help="stop when standard input reaches end of file (for parent processes)",
    )
    args = parser.parse_args(argv)
    api = FakeHackAgentAPI(
        args.api_key,
        port=args.port,
        unique_sequences=args.unique_sequences,
        control_endpoints=True,
    )
    with api:
        api.set_latency(args.latency_ms)
        print(api.base_url, flush=True)
        try:
            if args.until_stdin_closes:
                sys.stdin.read()
            else:
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
