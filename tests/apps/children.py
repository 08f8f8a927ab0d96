"""Work done in child processes: a few tracked steps each, for the tests of records made
in forked, forkserver and spawn children and in pre-fork workers."""

from __future__ import annotations

import os

import hackagent_otel
from hackagent_otel import StepTracker, TrackingContext

STEPS_PER_CHILD = 3
#: Each step makes a start and a summary record.
RECORDS_PER_CHILD = 2 * STEPS_PER_CHILD


def configure_child(base_url: str, api_key: str, outbox_path: str) -> None:
    """A spawned or forkserver child sets tracking up itself, as the app's own code does."""
    os.environ["HACKAGENT_OUTBOX_PATH"] = outbox_path
    hackagent_otel.configure(
        hackagent_base_url=base_url, hackagent_api_key=api_key, handle_sigterm=False
    )


def tracked_steps(ids: tuple[str, str]) -> int:
    """Three steps on one result; returns the child's pid."""
    run_id, result_id = ids
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
    for n in range(STEPS_PER_CHILD):
        with tracker.track_step(f"child step {n}", "STEP_CHILD", config={"n": n}):
            pass
    return os.getpid()
