"""A long pipeline for the outage soak: ``python soak_app.py THREADS STEPS_PER_THREAD``.

``configure()`` delivers to ``APP_API_URL`` / ``APP_API_KEY`` (outbox at
``HACKAGENT_OUTBOX_PATH``). Each thread runs its steps on ``RESULTS_PER_THREAD`` results
of its own, in turn, with config, input, metadata and progress on every step. The app
prints JSON lines on stdout:

* ``{"run_id", "results"}`` once, at start;
* ``{"steps": n, "rss": bytes}`` about every 0.2 s while steps run;
* ``{"done": true, "steps", "seconds", "rss_baseline", "rss_peak"}`` when every thread is
  done (``rss_baseline`` is taken after the first ``WARMUP`` steps of every thread);
* then ``{"rss": bytes, "stats": ...}`` every 0.5 s until a line arrives on stdin, when
  it shuts down and prints ``{"final": stats, "rss_peak": bytes}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from typing import Any

import hackagent_otel
from hackagent_otel import StepTracker, TrackingContext

RESULTS_PER_THREAD = 5
WARMUP = 1_000


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main(threads: int, steps: int) -> int:
    telemetry = hackagent_otel.configure(
        hackagent_base_url=os.environ["APP_API_URL"],
        hackagent_api_key=os.environ["APP_API_KEY"],
        handle_sigterm=False,
    )
    run_id = str(uuid.uuid4())
    results = [[str(uuid.uuid4()) for _ in range(RESULTS_PER_THREAD)] for _ in range(threads)]
    emit(run_id=run_id, results=[r for rs in results for r in rs])
    done = [0] * threads
    warm = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        trackers = [
            StepTracker(TrackingContext(run_id=run_id, parent_result_id=result))
            for result in results[index]
        ]
        for i in range(steps):
            if i == WARMUP:
                warm.wait()
            tracker = trackers[i % RESULTS_PER_THREAD]
            with tracker.track_step(
                "Attack", "STEP_ATTACK", input_data={"prompt": f"p{i}"}, config={"n": i}
            ):
                tracker.add_step_metadata("i", i)
                tracker.record_progress("step", i=i)
            done[index] = i + 1

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    warm.wait()
    baseline = peak = rss()
    while any(w.is_alive() for w in workers):
        now = rss()
        peak = max(peak, now)
        emit(steps=sum(done), rss=now)
        time.sleep(0.2)
    seconds = time.monotonic() - started
    peak = max(peak, rss())
    emit(done=True, steps=sum(done), seconds=seconds, rss_baseline=baseline, rss_peak=peak)

    stop = threading.Event()

    def wait_for_exit() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_exit, daemon=True).start()
    while not stop.wait(0.5):
        now = rss()
        peak = max(peak, now)
        emit(rss=now, stats=telemetry.stats())
    hackagent_otel.shutdown()
    emit(final=telemetry.stats(), rss_peak=max(peak, rss()))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
