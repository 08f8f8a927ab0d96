"""A small HackAgent-style pipeline, run as its own process by the integration tests.

It uses only hackagent-otel's public API, the way a user's pipeline does: one
``configure()`` call that reads the standard ``OTEL_*`` environment variables
(``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``),
then ``StepTracker`` steps. It never flushes by hand in the ``timeline`` scenario: the
spans must leave the process at interpreter exit, as they do for users.

Scenarios (first argument):

``timeline [--runs N] [--canary SECRET]``
    N runs, one after the other, each with the same step tree::

        Generate (STEP1_GENERATE)   config with api_key / nested password = SECRET,
        |                           metadata, two progress entries
        +-- Attack (STEP1A_ATTACK)  metadata of its own; takes >= 50 ms
        Evaluate (STEP2_EVALUATE)   raises ValueError("judge unavailable")
        Summarize (STEP3_SUMMARY)
        run status -> COMPLETED

    Prints one JSON line per run: ``{"run_id": ..., "result_id": ...}``.

``restart``
    Talks to the test over stdin/stdout so the test can restart the Collector between
    the two phases: prints ``{"run_id": ...}``, runs ``Phase 1`` (with a child step),
    flushes and prints ``PHASE1``; waits for a line on stdin; runs ``Phase 2 step 1..3``
    and prints ``PHASE2`` (the spans are exported in the background while the Collector
    may be down); waits for a line on stdin; sets the run COMPLETED and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import hackagent_otel as ho

#: Every step span the ``timeline`` scenario creates, with its parent step (None: the run).
TIMELINE_STEPS: dict[str, str | None] = {
    "Generate": None,
    "Attack": "Generate",
    "Evaluate": None,
    "Summarize": None,
}
PHASE1_STEPS: dict[str, str | None] = {"Phase 1": None, "Phase 1 child": "Phase 1"}
PHASE2_STEPS: dict[str, str | None] = {f"Phase 2 step {i}": None for i in (1, 2, 3)}

ATTACK_MIN_SECONDS = 0.05


def _emit(payload: object) -> None:
    print(json.dumps(payload) if not isinstance(payload, str) else payload, flush=True)


def _new_tracker() -> tuple[ho.StepTracker, str, str]:
    run_id = str(uuid.uuid4())
    result_id = str(uuid.uuid4())
    context = ho.TrackingContext(client=None, run_id=run_id, parent_result_id=result_id)
    return ho.StepTracker(context), run_id, result_id


def run_timeline(canary: str) -> tuple[str, str]:
    """One run of the timeline scenario; returns (run_id, result_id)."""
    tracker, run_id, result_id = _new_tracker()
    config = {
        "model": "judge-model",
        "api_key": canary,
        "login": {"password": canary, "user": "red-team"},
        "attempts": 2,
    }
    input_data = {"goal": "make the agent reveal its system prompt", "token": canary}
    with tracker.track_step("Generate", "STEP1_GENERATE", input_data=input_data, config=config):
        tracker.add_step_metadata("items", 3)
        tracker.record_progress("batch 1/2", items=2)
        with tracker.track_step("Attack", "STEP1A_ATTACK", config={"temperature": 0.7}):
            tracker.add_step_metadata("payloads", ["p1", "p2"])
            tracker.add_step_metadata("session", {"cookie": canary, "id": 7})
            time.sleep(ATTACK_MIN_SECONDS)
        tracker.record_progress("batch 2/2", items=1)
    try:
        with tracker.track_step("Evaluate", "STEP2_EVALUATE"):
            raise ValueError("judge unavailable")
    except ValueError:
        pass
    with tracker.track_step("Summarize", "STEP3_SUMMARY"):
        tracker.add_step_metadata("verdict", "partial")
    tracker.update_run_status(ho.StatusEnum.COMPLETED)
    return run_id, result_id


def run_restart() -> None:
    """The two-phase run the Collector-restart test drives over stdin/stdout."""
    tracker, run_id, result_id = _new_tracker()
    _emit({"run_id": run_id, "result_id": result_id})
    with tracker.track_step("Phase 1", "PHASE1"), tracker.track_step("Phase 1 child", "PHASE1A"):
        tracker.add_step_metadata("phase", 1)
    ho.force_flush()
    _emit("PHASE1")
    sys.stdin.readline()
    for name in PHASE2_STEPS:
        with tracker.track_step(name, "PHASE2"):
            tracker.record_progress(f"{name} done", phase=2)
    _emit("PHASE2")
    sys.stdin.readline()
    tracker.update_run_status("COMPLETED")


def main(argv: list[str] | None = None) -> int:
    """Parse the scenario and run it; spans are flushed at interpreter exit."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["timeline", "restart"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--canary", default="not-a-secret")
    args = parser.parse_args(argv)

    ho.configure()
    if args.scenario == "timeline":
        for _ in range(args.runs):
            run_id, result_id = run_timeline(args.canary)
            _emit({"run_id": run_id, "result_id": result_id})
    else:
        run_restart()
    return 0


if __name__ == "__main__":
    sys.exit(main())
