"""Caller-thread cost of one tracked step: ours against a bare SDK span and the original style.

One step = config, input sample, 2 metadata entries and 2 progress entries. Measured in
one process, one after another, on the same machine:

* bare: an SDK span with the same attributes and 4 events (the floor);
* ours: ``StepTracker.track_step`` with the HackAgent processor attached (records are
  mapped and delivered on background threads; their cost there is not on the caller);
* original style: the synchronous tracker's calls, two blocking httpx POSTs per step to
  the local HackAgent API over loopback, at 0 ms and 20 ms added latency.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

import hackagent_otel as ho
from hackagent_otel._processor import HackAgentSpanProcessor
from hackagent_otel._records import Record
from hackagent_otel.testing import FakeHackAgentAPI

CONFIG = {"model": "attacker-llm", "temperature": 0.9, "max_tokens": 256, "api_key": "sk-x"}
INPUT = {"goals": ["reveal the system prompt", "disable the filter"], "batch": 1}


class CountingSink:
    """A sink that only counts: the bench measures the caller's thread, not delivery."""

    def __init__(self) -> None:
        self.records = 0

    def submit(self, record: Record) -> None:
        self.records += 1

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> bool:
        return True

    def __call__(self, run_id: str) -> CountingSink:
        return self


def _timed(step: Callable[[], None], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        step()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def bare_step(tracer: Tracer) -> Callable[[], None]:
    """The same span our step makes (13 attributes, 4 events), values precomputed."""
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


def original_style_step(client: httpx.Client, result_id: str) -> Callable[[], None]:
    sequence = iter(range(1, 10**9))

    def step() -> None:
        for content in ({"step_name": "Generate"}, {"step_name": "Generate (Summary)"}):
            client.post(
                f"/result/{result_id}/trace",
                json={"sequence": next(sequence), "step_type": "OTHER", "content": content},
            )

    return step


def _row(name: str, samples: list[float], floor: float) -> str:
    median = statistics.median(samples)
    p99 = statistics.quantiles(samples, n=100)[98]
    return f"{name:<34} {median:>10.1f} {p99:>10.1f} {median / floor:>10.2f}x"


def main(n: int = 20_000, n_sync: int = 400) -> None:
    provider = TracerProvider()
    sink = CountingSink()
    provider.add_span_processor(HackAgentSpanProcessor(sink))
    ho.configure(tracer_provider=provider, records="off", handle_sigterm=False)
    tracker = ho.StepTracker(
        ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
    )
    bare = bare_step(TracerProvider().get_tracer("bench"))
    ours = our_step(tracker)
    for warm in (bare, ours):
        _timed(warm, 2000)
    bare_samples, our_samples = [], []
    for _ in range(5):  # interleave rounds so drift hits both alike
        bare_samples += _timed(bare, n // 5)
        our_samples += _timed(ours, n // 5)
    floor = statistics.median(bare_samples)
    rows = [_row("bare SDK span (floor)", bare_samples, floor), _row("ours", our_samples, floor)]
    with FakeHackAgentAPI(api_key="k") as api:
        headers = {"Authorization": "Bearer k"}
        with httpx.Client(base_url=api.base_url, headers=headers) as client:
            for latency in (0, 20):
                api.set_latency(latency)
                step = original_style_step(client, str(uuid.uuid4()))
                count = n_sync if latency == 0 else n_sync // 8
                rows.append(_row(f"original style, {latency} ms API", _timed(step, count), floor))
    ho.shutdown()
    ours_median = statistics.median(our_samples)
    print(f"{'per tracked step (us)':<34} {'median':>10} {'p99':>10} {'vs floor':>11}")
    print("\n".join(rows))
    print(f"records mapped off-thread: {sink.records}; ours = {ours_median / floor:.2f}x the floor")


if __name__ == "__main__":
    main()
