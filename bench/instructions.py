"""Instructions per tracked step on the pipeline's thread, counted by callgrind.

Timings on a shared 2-core machine drift from run to run; instruction counts do not
(valgrind counts them exactly, whatever else the machine is doing), so this is how the
hot path's parts are weighed. Each figure is the difference between a run of 1,000
steps and a run of none, so start-up cancels out:

* bare: the bare SDK span of ``bench.hot_path`` (the floor);
* ours, no delivery: ``StepTracker`` with records off;
* ours, no sanitizing: the same with the sanitizer replaced by constants, to weigh it;
* ours, delivering: records on, to the local API; only the pipeline's own thread counts.

``python -m bench.instructions`` (needs valgrind; about 5 minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench._table import print_table

STEPS = 1_000
WARM_UP = 200
VARIANTS = ("bare", "ours, no delivery", "ours, no sanitizing", "ours, delivering")


def _child(variant: str, steps: int, outbox: str) -> None:
    """Run ``steps`` steps of ``variant`` after a warm-up (inside valgrind)."""
    from opentelemetry.sdk.trace import TracerProvider

    import hackagent_otel as ho
    from bench._fake import API_KEY, fake_api_process
    from bench.hot_path import bare_step, our_step
    from hackagent_otel._sanitize import Sanitizer

    if variant == "ours, no sanitizing":  # every sanitizer's, the one configure() makes too
        Sanitizer.dumps = lambda self, value, limits=None: "{}"  # type: ignore[method-assign]
        Sanitizer.dumps_keyed = lambda self, key, value, limits=None: "1"  # type: ignore[method-assign]
        Sanitizer.sanitize_text = lambda self, text, limit=None: str(text)  # type: ignore[method-assign]
    with fake_api_process(0) as url:
        ho.configure(
            tracer_provider=TracerProvider(),
            hackagent_base_url=url,
            hackagent_api_key=API_KEY,
            records="on" if variant == "ours, delivering" else "off",
            outbox_path=outbox,
            handle_sigterm=False,
        )
        tracker = ho.StepTracker(
            ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
        )
        step = (
            bare_step(TracerProvider().get_tracer("bench"))
            if variant == "bare"
            else our_step(tracker)
        )
        for _ in range(WARM_UP + steps):
            step()
        os._exit(0)  # no shutdown work in the count


def _main_thread_instructions(variant: str, steps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.instructions",
                "--child",
                variant,
                str(steps),
                str(Path(tmp) / "outbox.sqlite3"),
            ],
            check=True,
            capture_output=True,
        )
        main_thread = Path(f"{out}-01")  # thread 1 is the pipeline's
        for line in main_thread.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {main_thread}")


def main() -> dict[str, float]:
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind (Debian: apt-get install valgrind)")
        return {}
    per_step = {
        variant: (_main_thread_instructions(variant, STEPS) - _main_thread_instructions(variant, 0))
        / STEPS
        for variant in VARIANTS
    }
    floor = per_step["bare"]
    print_table(
        "Instructions per tracked step on the pipeline's thread (callgrind)",
        ["variant", "instructions", "vs bare span"],
        [[v, f"{n:,.0f}", f"{n / floor:.2f}x"] for v, n in per_step.items()],
    )
    sanitizing = (per_step["ours, no delivery"] - per_step["ours, no sanitizing"]) / floor
    print(f"(sanitizing: {sanitizing:.2f}x of the bare span)")
    return {variant: n / floor for variant, n in per_step.items()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
