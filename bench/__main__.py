"""``make bench``: every benchmark, each measured side by side in one run, then the targets.

``BENCH_MEMORY_STEPS`` scales the memory run (default 1,000,000 steps, a few minutes).
Where valgrind is installed, the hot path is also weighed in instructions
(:mod:`bench.instructions`), which this machine's drift in speed does not move.
The scale-out comparison (:mod:`bench.bridge_scale`: the Collector in front of one
bridge, then two) runs where ``make otel-bins`` built ``.bin/otelcol``. The peers
(:mod:`bench.peers`: Pydantic Logfire and Langfuse recording the same step) run in a
virtualenv of their own, built once like hackagent 0.5.0's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench import (
    bridge_ingest,
    bridge_scale,
    delivery,
    goals,
    hot_path,
    instructions,
    memory,
    peers,
)
from bench._table import print_table


def main() -> None:
    # Each benchmark names fresh outboxes of its own in a temporary folder; this default
    # also keeps anything that takes its outbox from the environment (a subprocess, an
    # implicit set-up) out of the user's outbox, and is removed with the run.
    with tempfile.TemporaryDirectory(prefix="hackagent-otel-bench-") as folder:
        os.environ["HACKAGENT_OUTBOX_PATH"] = str(Path(folder) / "outbox.sqlite3")
        run_all()


def run_all() -> None:
    """Every benchmark, then the targets table."""
    hot = hot_path.main()
    peer = peers.main()
    per_goal = goals.main()
    sent = delivery.main()
    ingest = bridge_ingest.main()
    scale = bridge_scale.main()
    mem = memory.main()
    counted = instructions.main()
    checks = [
        ("hot path vs bare SDK span", f"{hot['ours_vs_bare']:.2f}x", "<= 1.5x"),
        (
            "  (the same, median of the side-by-side rounds)",
            f"{hot['ours_vs_bare_by_round']:.2f}x",
            "",
        ),
        (
            "  (the same with records off: no background threads)",
            f"{hot['ours_quiet_vs_bare']:.2f}x",
            "",
        ),
        (
            "  the same, in instructions",
            f"{counted['ours, delivering']:.2f}x" if counted else "(no valgrind)",
            "<= 1.5x",
        ),
        *peers_checks(peer["figures"]),
        ("faster than hackagent 0.5.0, 0 ms API", f"{hot['speedup_0ms']:.1f}x", ">= 20x"),
        (
            "  (the bare span itself, for scale)",
            f"{hot['floor_speedup_0ms']:.1f}x",
            "",
        ),
        ("faster than hackagent 0.5.0, 20 ms API", f"{hot['speedup_20ms']:.0f}x", ">= 500x"),
        ("  (the bare span itself, for scale)", f"{hot['floor_speedup_20ms']:.0f}x", ""),
        (
            "per-goal attack faster than hackagent 0.5.0, 20 ms API (its ids read)",
            f"{per_goal['speedup_20ms']:.1f}x",
            ">= 50x",
        ),
        (
            "  (the same without the read of the goals' ids)",
            f"{per_goal['speedup_20ms_without_read']:.0f}x",
            "",
        ),
        (
            "  the same at 0 ms API (with / without the read)",
            f"{per_goal['speedup_0ms']:.1f}x / {per_goal['speedup_0ms_without_read']:.0f}x",
            "",
        ),
        (
            "one attempt vs bare SDK span",
            f"{per_goal['attempt_vs_bare']:.2f}x",
            f"<= a step's ({per_goal['step_vs_bare']:.2f}x, beside it)",
        ),
        (
            "delivery vs one sequential httpx client, 20 ms API, 4 senders",
            f"{sent['ratio_20ms_4']:.2f}x",
            ">= 3.5x",
        ),
        ("  the same with 8 senders", f"{sent['ratio_20ms_8']:.2f}x", ">= 3.5x"),
        (
            "  0 ms API (the client's CPU is the cost), 4 / 8 senders",
            f"{sent['ratio_0ms_4']:.2f}x / {sent['ratio_0ms_8']:.2f}x",
            "",
        ),
        ("span end -> record p50", f"{sent['latency_p50_s'] * 1000:.1f} ms", "< 1 s"),
        (
            "bridge ingest, one worker",
            f"{ingest['spans_per_s_1']:,.0f} spans/s ({ingest['target_ratio']:.2f} of target)",
            f">= {bridge_ingest.TARGET:,} spans/s",
        ),
        (
            "Collector -> 1 bridge / -> 2 bridges (load_balancing), end to end",
            (
                f"{scale['spans_per_s_1']:,.0f} / {scale['spans_per_s_2']:,.0f} spans/s "
                f"({scale['two_vs_one']:.2f}x)"
                if scale
                else "(no .bin/otelcol)"
            ),
            "",
        ),
        ("RSS growth, API down", f"{mem['growth_mb']:.0f} MB", "< 100 MB"),
    ]
    print_table("Targets", ["figure", "measured", "target"], [list(c) for c in checks])


def peers_checks(found: dict[str, dict[str, float]]) -> list[tuple[str, str, str]]:
    """The peers' targets (:mod:`bench.peers`) as rows of the targets table."""
    records, spans = found[peers.OURS_RECORDS], found[peers.OURS_SPANS]
    return [
        (
            "peers bench: ours with records vs bare span (exported, by round)",
            f"{records['vs_bare']:.2f}x",
            f"<= {peers.TARGETS[peers.OURS_RECORDS]}x",
        ),
        (
            "  the same, spans only",
            f"{spans['vs_bare']:.2f}x",
            f"<= {peers.TARGETS[peers.OURS_SPANS]}x",
        ),
        (
            "  fastest peer (Logfire, Langfuse) / ours with records",
            f"{records['peer_over']:.2f}x",
            f">= {peers.PEER_TARGET}x",
        ),
        ("  (the bare span itself, for scale)", f"{found[peers.BARE]['peer_over']:.2f}x", ""),
    ]


if __name__ == "__main__":
    main()
