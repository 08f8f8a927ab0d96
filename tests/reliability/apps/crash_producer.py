"""A pipeline that runs until it is SIGKILLed: ``python crash_producer.py SEED``.

``configure()`` delivers to ``APP_API_URL`` / ``APP_API_KEY`` with the outbox at
``HACKAGENT_OUTBOX_PATH`` (the same file across restarts, so each start finds what the
killed one left). It prints ``{"run_id", "result_id"}`` once, then runs steps on that
result in batches of random size; after each batch, when ``force_flush()`` returns True
(every record so far is delivered or committed to the outbox), it prints
``{"acked": steps}``: those steps' records must never be lost, whatever happens next.
Step ``n`` (from 1) makes the traces with sequences ``2n - 1`` and ``2n``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid

import hackagent_otel
from hackagent_otel import StepTracker, TrackingContext


def main(seed: int) -> int:
    rng = random.Random(seed)
    hackagent_otel.configure(
        hackagent_base_url=os.environ["APP_API_URL"],
        hackagent_api_key=os.environ["APP_API_KEY"],
        handle_sigterm=False,
    )
    run_id, result_id = str(uuid.uuid4()), str(uuid.uuid4())
    print(json.dumps({"run_id": run_id, "result_id": result_id}), flush=True)
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
    steps = 0
    while True:
        for _ in range(rng.randint(1, 40)):
            steps += 1
            with tracker.track_step("Probe", "STEP_PROBE", config={"n": steps}):
                tracker.add_step_metadata("n", steps)
        if hackagent_otel.force_flush(10_000):
            print(json.dumps({"acked": steps}), flush=True)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
