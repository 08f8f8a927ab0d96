"""Ours beside Pydantic Logfire and Langfuse recording the same step, side by side.

``python -m bench.peers`` (part of ``make bench``; about a minute, plus a few minutes
once to build the peers' virtualenv). The contenders (:mod:`bench._peer_contenders`
says how each is configured) run in one process of a virtualenv of their own
(bench/_venv.py:peers_python: the peers at the versions pinned in
bench/peers-requirements.txt and this checkout), interleaved round by round
(:mod:`bench.peers_steps`); this side turns their samples into the table:

* median and p99 of the caller-thread microseconds per step, over every round;
* against the bare span: the median, over the rounds, of each round's median over the
  bare span's median in the same round (drift between rounds cancels out of it);
* the fastest peer (the lowest round median of the four peer recordings, round by
  round) over each contender, the same way;
* what draining each contender's pipeline after its round took, per step: the part of
  its background work still pending when its last step returned (not in the step
  figures; threads that kept up with the steps cost the caller only their share of the
  interpreter lock, which the step figures hold);
* all in: a round's steps and the drain after them, per step (the median over the
  rounds): what a pipeline of back-to-back steps pays per step for the contender's
  whole pipeline to keep up, its background threads' turns at the interpreter lock
  included (the median step hides most of them: a background thread takes the lock for
  up to 5 ms at a time, which a few steps pay in full, which is the p99).

Targets (issue 16): ours with records at most 1.5x the bare span, spans only at most
1.3x, and ours with records at least 4x cheaper than the fastest peer.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from bench._table import median, p99, print_table
from bench._venv import ROOT, peers_python

ROUNDS = 10
STEPS = 1_000
BARE = "bare"
OURS_SPANS = "ours, spans only"
OURS_RECORDS = "ours, records"
PEERS = ("logfire", "langfuse")
#: What each contender's step makes at its dropping end.
REACHED = {
    BARE: "spans",
    OURS_SPANS: "spans",
    OURS_RECORDS: "API calls",
}
TARGETS = {OURS_RECORDS: 1.5, OURS_SPANS: 1.3}
PEER_TARGET = 4.0


def child_env(folder: str) -> dict[str, str]:
    """The environment without our, OpenTelemetry's or the peers' settings (each
    contender is configured in code), ``bench`` importable from this checkout."""
    prefixes = ("HACKAGENT_", "OTEL_", "LOGFIRE_", "LANGFUSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = str(ROOT)
    env["HACKAGENT_OUTBOX_PATH"] = os.path.join(folder, "outbox.sqlite3")
    return env


def measure(rounds: int = ROUNDS, steps: int = STEPS) -> dict[str, Any]:
    """Run :mod:`bench.peers_steps` in the peers' venv; its JSON result."""
    python = peers_python()
    with tempfile.TemporaryDirectory(prefix="hackagent-otel-peers-") as folder:
        done = subprocess.run(
            [str(python), "-m", "bench.peers_steps", str(rounds), str(steps)],
            check=False,
            capture_output=True,
            text=True,
            cwd=folder,  # anything a peer writes to its working directory goes with it
            env=child_env(folder),
        )
    if done.returncode != 0:
        raise RuntimeError(f"bench.peers_steps exited {done.returncode}:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def round_medians(samples: Sequence[float], steps: int) -> list[float]:
    return [median(samples[i : i + steps]) for i in range(0, len(samples), steps)]


def is_peer(name: str) -> bool:
    return name.startswith(PEERS)


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per contender: median, p99, by-round ratios to the bare span and from the fastest
    peer, drain and what reached the end, per step."""
    steps = int(result["steps"])
    runs = result["contenders"]
    rounds = {name: round_medians(run["samples"], steps) for name, run in runs.items()}
    fastest_peer = [
        min(values) for values in zip(*(r for n, r in rounds.items() if is_peer(n)), strict=True)
    ]
    out: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        count = len(run["samples"])
        out[name] = {
            "median": median(run["samples"]),
            "p99": p99(run["samples"]),
            "vs_bare": median([m / b for m, b in zip(rounds[name], rounds[BARE], strict=True)]),
            "peer_over": median([f / m for f, m in zip(fastest_peer, rounds[name], strict=True)]),
            "drain_per_step": sum(run["drain_us"]) / count,
            "all_in": median(
                [
                    (sum(run["samples"][i * steps : (i + 1) * steps]) + drained) / steps
                    for i, drained in enumerate(run["drain_us"])
                ]
            ),
            "reached_per_step": run["reached_end"] / count,
        }
    return out


def print_results(result: dict[str, Any], found: dict[str, dict[str, float]]) -> None:
    rows = []
    for name, f in found.items():
        reached = REACHED.get(name, "spans")
        rows.append(
            [
                name,
                f"{f['median']:.1f}",
                f"{f['p99']:.0f}",
                f"{f['vs_bare']:.2f}x",
                f"{f['peer_over']:.2f}x",
                f"{f['drain_per_step']:.1f}",
                f"{f['all_in']:.0f}",
                f"{f['reached_per_step']:.2f} {reached}",
            ]
        )
    print_table(
        "Peers: caller-thread microseconds per step (config, input, 2 metadata, 2 progress), "
        f"{result['rounds']} interleaved rounds of {result['steps']:,} steps each",
        [
            "contender",
            "median us",
            "p99 us",
            "vs bare (by round)",
            "fastest peer / this",
            "drain us/step",
            "all in us/step",
            "reached the end per step",
        ],
        rows,
    )
    versions = result["versions"]
    print(
        f"(logfire {versions['logfire']}, langfuse {versions['langfuse']}, "
        f"opentelemetry-sdk {versions['opentelemetry-sdk']}, Python {result['python']}; "
        "every pipeline ends in an exporter, or for our records a sender, that drops "
        "what reaches it: no network is timed)"
    )


def targets(found: dict[str, dict[str, float]]) -> list[list[str]]:
    """The three targets' rows: figure, measured, target, met."""
    rows = []
    for name, limit in TARGETS.items():
        ratio = found[name]["vs_bare"]
        rows.append([f"{name} vs bare span", f"{ratio:.2f}x", f"<= {limit}x", _met(ratio <= limit)])
    over = found[OURS_RECORDS]["peer_over"]
    rows.append(
        [
            "fastest peer / ours, records",
            f"{over:.2f}x",
            f">= {PEER_TARGET}x",
            _met(over >= PEER_TARGET),
        ]
    )
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def main(rounds: int = ROUNDS, steps: int = STEPS) -> dict[str, Any]:
    """Print the peers' table and targets; return the figures."""
    result = measure(rounds, steps)
    found = figures(result)
    print_results(result, found)
    print_table("Peers: targets", ["figure", "measured", "target", ""], targets(found))
    return {"figures": found, "versions": result["versions"], "targets": targets(found)}


if __name__ == "__main__":
    main()
