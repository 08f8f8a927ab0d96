"""Caller-thread cost of one tracked step, side by side in one run.

One step = config, input sample, 2 metadata entries and 2 progress entries:

* bare: an SDK span with the same 11 attributes and 4 events, values precomputed
  (the floor: what any OpenTelemetry instrumentation pays);
* ours: ``StepTracker.track_step`` with in-process delivery to the local HackAgent API
  (records mapped and sent on background threads, which share the interpreter lock);
* original: ``hackagent==0.5.0``'s StepTracker (its own virtualenv) against the same
  local API, in its own process, at 0 ms and 20 ms added API latency.

Steps run back to back, in rounds that alternate bare and ours so drift in the machine
hits both alike. With nothing between steps, delivery to the local API falls behind
(each step makes two records, each its own POST), so the outbox takes the overflow and
the mapping, outbox and delivery threads compete with the caller for the interpreter
lock: the worst case for ours. (Pausing between steps, as a pipeline waiting on a model
does, was tried: waking from the pause costs both trackers more than the step itself on
this machine, so it measures the wake-up, not the step.)

A last set of rounds runs ours with records off, so no mapping or delivery thread runs
beside the caller: what the caller's own work costs, apart from the background's share.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

import hackagent_otel as ho
from bench._fake import API_KEY, fake_api_process
from bench._original import original_step_samples
from bench._table import median, p99, print_table

CONFIG = {"model": "attacker-llm", "temperature": 0.9, "max_tokens": 256, "api_key": "sk-x"}
INPUT = {"goals": ["reveal the system prompt", "disable the filter"], "batch": 1}


def timed(step: Callable[[], None], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        step()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def bare_step(tracer: Tracer) -> Callable[[], None]:
    """The same span our step makes (11 attributes, 4 events), values precomputed."""
    start_attributes: dict[str, AttributeValue] = {
        "hackagent.kind": "step",
        "hackagent.run.id": str(uuid.uuid4()),
        "hackagent.step.name": "Generate",
        "hackagent.step.type": "STEP1_GENERATE",
        "hackagent.step.trace_type": "OTHER",
        "hackagent.step.sequence.start": 1,
        "hackagent.result.id": str(uuid.uuid4()),
        "hackagent.step.config": json.dumps(CONFIG),
        "hackagent.step.input": json.dumps(INPUT),
    }
    end_attributes: dict[str, AttributeValue] = {
        "hackagent.step.status": "completed",
        "hackagent.step.sequence.end": 2,
    }
    metadata = {"hackagent.metadata.key": "prefixes", "hackagent.metadata.value": "150"}
    progress = {"hackagent.progress.message": "batch", "hackagent.progress.metrics": "{}"}

    def step() -> None:
        with tracer.start_as_current_span("Generate", attributes=start_attributes) as span:
            span.add_event("hackagent.step.metadata", metadata)
            span.add_event("hackagent.step.metadata", metadata)
            span.add_event("hackagent.step.progress", progress)
            span.add_event("hackagent.step.progress", progress)
            span.set_attributes(end_attributes)

    return step


def our_step(tracker: ho.StepTracker) -> Callable[[], None]:
    def step() -> None:
        with tracker.track_step("Generate", "STEP1_GENERATE", input_data=INPUT, config=CONFIG):
            tracker.add_step_metadata("prefixes", 150)
            tracker.add_step_metadata("success_rate", 0.85)
            tracker.record_progress("batch 1/2", items=50, errors=0)
            tracker.record_progress("batch 2/2", items=100, errors=1)

    return step


def interleaved(
    bare: Callable[[], None], ours: Callable[[], None], steps: int
) -> tuple[list[float], list[float], list[float]]:
    """Bare and ours in 5 alternating rounds (drift hits both alike), after a warm-up:
    every sample of each, and ours against bare round by round (medians)."""
    timed(bare, 2000)
    timed(ours, 2000)
    bare_samples: list[float] = []
    our_samples: list[float] = []
    round_ratios: list[float] = []
    for _ in range(5):
        bare_round, our_round = timed(bare, steps // 5), timed(ours, steps // 5)
        round_ratios.append(median(our_round) / median(bare_round))
        bare_samples += bare_round
        our_samples += our_round
    return bare_samples, our_samples, round_ratios


def _quiet_ratio(steps: int) -> float:
    """Ours with records off against the bare span: the caller's own cost, with no
    mapping or delivery thread running beside it."""
    ho.configure(tracer_provider=TracerProvider(), records="off", handle_sigterm=False)
    tracker = ho.StepTracker(
        ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
    )
    try:
        _, _, round_ratios = interleaved(
            bare_step(TracerProvider().get_tracer("bench")), our_step(tracker), steps
        )
    finally:
        ho.shutdown()
    return median(round_ratios)


def main(steps: int = 20_000, original_steps: int = 400) -> dict[str, float]:
    """Print the hot-path table; return the headline ratios."""
    # A fresh outbox: rows an earlier run left would be drained during this one.
    with fake_api_process(0) as base_url, tempfile.TemporaryDirectory() as folder:
        telemetry = ho.configure(
            tracer_provider=TracerProvider(),
            hackagent_base_url=base_url,
            hackagent_api_key=API_KEY,
            outbox_path=Path(folder) / "outbox.sqlite3",
            handle_sigterm=False,
        )
        tracker = ho.StepTracker(
            ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
        )
        bare_samples, our_samples, round_ratios = interleaved(
            bare_step(TracerProvider().get_tracer("bench")), our_step(tracker), steps
        )
        ho.force_flush()
        delivery = telemetry.stats()["delivery"]
        ho.shutdown()
        original = {0: original_step_samples(base_url, API_KEY, original_steps)}
    with fake_api_process(20) as slow_url:
        original[20] = original_step_samples(slow_url, API_KEY, max(original_steps // 8, 20))
    quiet = _quiet_ratio(steps)

    floor, ours_median = median(bare_samples), median(our_samples)
    side_by_side = median(round_ratios)
    rows = [
        ["bare SDK span (floor)", f"{floor:.1f}", f"{p99(bare_samples):.1f}", "1.00x", ""],
        [
            "hackagent-otel",
            f"{ours_median:.1f}",
            f"{p99(our_samples):.1f}",
            f"{ours_median / floor:.2f}x ({side_by_side:.2f}x by round)",
            "1.0x",
        ],
    ]
    speedups = {}
    for latency, samples in original.items():
        m = median(samples)
        speedups[latency] = m / ours_median
        rows.append(
            [
                f"hackagent 0.5.0, {latency} ms API",
                f"{m:.1f}",
                f"{p99(samples):.1f}",
                f"{m / floor:.1f}x",
                f"{m / ours_median:.1f}x slower",
            ]
        )
    print_table(
        "Hot path: caller-thread microseconds per tracked step",
        ["tracker", "median us", "p99 us", "vs bare span", "vs ours"],
        rows,
    )
    sent = sum(d["sent"] for d in delivery)
    spooled = sum(d["spooled"] for d in delivery)
    print(
        "(ours against the bare span, round by round: "
        + ", ".join(f"{ratio:.2f}x" for ratio in round_ratios)
        + f"; their median {side_by_side:.2f}x: drift between rounds cancels out of it,"
        " while it moves the medians of all samples)"
    )
    print(
        f"(ours with records off, so no mapping or delivery thread runs beside it: "
        f"{quiet:.2f}x the bare span, median of rounds)"
    )
    print(
        f"(ours delivered {sent} records to the local API in the background meanwhile; "
        f"{spooled} of them went through the outbox while delivery was behind)"
    )
    return {
        "ours_vs_bare": ours_median / floor,
        "ours_vs_bare_by_round": side_by_side,
        "ours_quiet_vs_bare": quiet,
        "floor_speedup_0ms": median(original[0]) / floor,
        "floor_speedup_20ms": median(original[20]) / floor,
        "speedup_0ms": speedups[0],
        "speedup_20ms": speedups[20],
    }


if __name__ == "__main__":
    main()
