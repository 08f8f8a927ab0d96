"""Memory while a long run is tracked with the HackAgent API down.

A child process tracks N steps (config, input, 2 metadata, 2 progress each) with
in-process delivery pointed at a closed port, so every record has to go to the outbox.
It reports its resident-set growth (peak minus the level after warm-up), the outbox's
size on disk, and that every record is there: the outbox takes the overflow and memory
stays bounded.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench._table import print_table


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(steps: int, outbox: str) -> None:
    """Runs in the child process; prints one JSON line of figures."""
    from opentelemetry.sdk.trace import TracerProvider

    import hackagent_otel as ho
    from bench.hot_path import our_step
    from hackagent_otel._delivery.outbox import Outbox
    from hackagent_otel._outbox_files import outbox_path_for_target

    api_url = f"http://127.0.0.1:{_closed_port()}"
    telemetry = ho.configure(
        tracer_provider=TracerProvider(),
        hackagent_base_url=api_url,
        hackagent_api_key="k",
        outbox_path=outbox,
        handle_sigterm=False,
    )
    tracker = ho.StepTracker(
        ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
    )
    step = our_step(tracker)
    for _ in range(2_000):
        step()
    ho.force_flush(60_000)
    baseline = _rss_kb()
    peak = baseline
    start = time.perf_counter()
    for i in range(steps):
        step()
        if i % 10_000 == 0:
            peak = max(peak, _rss_kb())
    tracked = time.perf_counter() - start
    ho.force_flush(300_000)
    peak = max(peak, _rss_kb(), 0)
    stats = telemetry.stats()
    ho.shutdown()
    api_outbox = outbox_path_for_target(Path(outbox), api_url)  # where the API's records wait
    with Outbox(api_outbox) as box:
        pending = box.counts().pending
    size = sum(p.stat().st_size for p in api_outbox.parent.glob(api_outbox.name + "*"))
    print(
        json.dumps(
            {
                "steps": steps,
                "growth_mb": (peak - baseline) / 1024,
                "outbox_mb": size / 2**20,
                "outbox_pending": pending,
                "records": stats["mapping"]["records"],
                "dropped": sum(d["dropped"] for d in stats["delivery"]),
                "seconds": tracked,
            }
        )
    )


def main(steps: int | None = None) -> dict[str, float]:
    steps = steps or int(os.environ.get("BENCH_MEMORY_STEPS", "1000000"))
    with tempfile.TemporaryDirectory() as folder:
        outbox = str(Path(folder) / "outbox.sqlite3")
        result = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--child", str(steps), outbox],
            check=True,
            capture_output=True,
            text=True,
        )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print_table(
        f"Memory: {figures['steps']:,} steps tracked with the API down",
        ["RSS growth", "outbox on disk", "records in outbox", "records made", "dropped", "steps/s"],
        [
            [
                f"{figures['growth_mb']:.1f} MB",
                f"{figures['outbox_mb']:.0f} MB",
                f"{figures['outbox_pending']:,}",
                f"{figures['records']:,}",
                str(figures["dropped"]),
                f"{figures['steps'] / figures['seconds']:,.0f}",
            ]
        ],
    )
    return {"growth_mb": figures["growth_mb"]}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), sys.argv[3])
    else:
        main()
