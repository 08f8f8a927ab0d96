"""Runs under the bench virtualenv that has ``hackagent==0.5.0``: the original tracker.

Not importable from the project (it needs hackagent). Usage:
``python original_steps.py BASE_URL API_KEY STEPS`` prints a JSON list of per-step
microseconds for the same step the other benchmarks track.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from hackagent.client import AuthenticatedClient
from hackagent.router.tracking import StepTracker, TrackingContext

CONFIG = {"model": "attacker-llm", "temperature": 0.9, "max_tokens": 256, "api_key": "sk-x"}
INPUT = {"goals": ["reveal the system prompt", "disable the filter"], "batch": 1}


def main() -> None:
    base_url, api_key, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = AuthenticatedClient(base_url=base_url, token=api_key)
    context = TrackingContext(
        client=client, run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4())
    )
    tracker = StepTracker(context)
    samples = []
    for _ in range(steps):
        start = time.perf_counter_ns()
        with tracker.track_step("Generate", "STEP1_GENERATE", input_data=INPUT, config=CONFIG):
            tracker.add_step_metadata("prefixes", 150)
            tracker.add_step_metadata("success_rate", 0.85)
            tracker.record_progress("batch 1/2", items=50, errors=0)
            tracker.record_progress("batch 2/2", items=100, errors=1)
        samples.append((time.perf_counter_ns() - start) / 1000)
    print(json.dumps(samples))


if __name__ == "__main__":
    main()
