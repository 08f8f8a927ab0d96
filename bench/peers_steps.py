"""Runs in the peers' virtualenv: every contender of :mod:`bench.peers`, interleaved.

Not importable from the project's environment (it needs Logfire and Langfuse). Usage:
``python -m bench.peers_steps ROUNDS STEPS`` (from the checkout) prints one JSON object:
for each contender its per-step caller-thread microseconds, the time its pipeline took
to drain after each round, and how much reached the dropping end; and the versions.

After a warm-up of every contender, each round runs every contender's ``STEPS`` steps
in turn (ABCDE ABCDE ...), so drift in the machine's speed hits all alike; after each
contender's steps its pipeline is drained, untimed in the step figures, so no
contender's background work runs into the next one's steps.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from typing import Any

from bench._peer_contenders import Contender, all_contenders
from bench.hot_path import timed

WARM_UP = 1_000
PACKAGES = ("logfire", "langfuse", "opentelemetry-sdk", "hackagent-otel")


def run(contenders: list[Contender], rounds: int, steps: int) -> dict[str, dict[str, Any]]:
    """Every contender ``rounds`` times ``steps`` steps, interleaved round by round."""
    for contender in contenders:
        contender.before_round()
        timed(contender.step, WARM_UP)
        contender.drain()
    found: dict[str, dict[str, Any]] = {
        c.name: {"samples": [], "drain_us": [], "reached_end": 0} for c in contenders
    }
    for _ in range(rounds):
        for contender in contenders:
            entry = found[contender.name]
            contender.before_round()
            before = contender.reached_end()
            entry["samples"] += timed(contender.step, steps)
            started = time.perf_counter_ns()
            contender.drain()
            entry["drain_us"].append((time.perf_counter_ns() - started) / 1000)
            entry["reached_end"] += contender.reached_end() - before
    return found


def main() -> None:
    rounds, steps = int(sys.argv[1]), int(sys.argv[2])
    contenders = all_contenders()
    result = {
        "versions": {name: metadata.version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
        "rounds": rounds,
        "steps": steps,
        "contenders": run(contenders, rounds, steps),
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
