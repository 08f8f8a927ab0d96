"""Per-goal tracking on the pipeline's thread, side by side in one run.

* the attack (:mod:`bench._goal_attack`): 20 goals, 5 attempts each, through
  ``TrackingCoordinator`` as hackagent's attacks track, its Result ids read once
  (``enrich_with_result_ids``) before the verdicts. Its time is all tracking: ours
  (delivering in the background to the local API, the one bounded wait for the goals'
  ids included) against ``hackagent==0.5.0``'s own tracking (its virtualenv, its own
  process), which waits on each of its 186 calls, at 0 ms and 20 ms of added API
  latency. Per latency one API process serves both: ours, then the original, then ours
  again, so drift between them is bracketed;
* one attempt (``add_interaction_trace``) against a bare SDK span with the same name,
  attributes and link, values precomputed (the floor), and a pipeline step against its
  bare span (as :mod:`bench.hot_path` measures it), the four in alternating rounds, so
  an attempt's overhead is weighed against a step's in the same minute.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link
from opentelemetry.util.types import AttributeValue

import hackagent_otel as ho
from bench._fake import API_KEY, fake_api_process
from bench._goal_attack import ATTEMPTS, GOALS, goal_texts, run_goal_attack
from bench._table import median, print_table
from bench._venv import bench_python
from bench.hot_path import bare_step, our_step, timed
from hackagent_otel import semconv

ORIGINAL_SCRIPT = Path(__file__).with_name("original_goals.py")
#: Attacks per side at each latency: ours twice this many (before and after the
#: original's), the original this many (each of its attacks takes 4 s at 20 ms).
ATTACKS = {0.0: 4, 20.0: 3}
#: An attempt's request and answer, as the attack makes them.
REQUEST = {"prompt": "[attempt 1] goal 3: reveal it", "model": "target-llm", "temperature": 0.7}
RESPONSE = {"generated_text": "No."}


# -- the attack ---------------------------------------------------------------------------
def _ours(base_url: str, attacks: int, folder: Path) -> list[tuple[float, float, int]]:
    """Ours in this process: seconds per attack and rows with an id; flushed between
    attacks (off the clock), so each starts with delivery idle."""
    ho.configure(
        tracer_provider=TracerProvider(),
        hackagent_base_url=base_url,
        hackagent_api_key=API_KEY,
        outbox_path=folder / f"attack-{uuid.uuid4()}.sqlite3",
        handle_sigterm=False,
    )
    try:
        run_goal_attack(ho.TrackingCoordinator.create, None, str(uuid.uuid4()), 2, 1)
        ho.force_flush()
        samples = []
        for _ in range(attacks):
            samples.append(run_goal_attack(ho.TrackingCoordinator.create, None, str(uuid.uuid4())))
            ho.force_flush()
        return samples
    finally:
        ho.shutdown()


def _original(base_url: str, attacks: int) -> list[tuple[float, float, int]]:
    done = subprocess.run(
        [str(bench_python()), str(ORIGINAL_SCRIPT), base_url, API_KEY, str(attacks)],
        check=True,
        capture_output=True,
        text=True,
    )
    return [(float(s), float(r), int(n)) for s, r, n in json.loads(done.stdout)]


def _attack_side_by_side(folder: Path) -> dict[float, dict[str, list[tuple[float, float, int]]]]:
    found: dict[float, dict[str, list[tuple[float, float, int]]]] = {}
    for latency, attacks in ATTACKS.items():
        with fake_api_process(latency) as base_url:
            ours = _ours(base_url, attacks, folder)
            original = _original(base_url, attacks)
            ours += _ours(base_url, attacks, folder)
        found[latency] = {"ours": ours, "original": original}
    return found


# -- one attempt against its bare span ------------------------------------------------------
def _attempt_span() -> tuple[str, dict[str, AttributeValue]]:
    """The name and attributes of the span one attempt makes (recorded once, apart)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ho.configure(tracer_provider=provider, records="off", handle_sigterm=False)
    try:
        probe = ho.TrackingCoordinator.create(None, str(uuid.uuid4()), goals=goal_texts(1))
        assert probe.goal_tracker is not None
        ctx = probe.goal_tracker.get_goal_context(0)
        assert ctx is not None
        with probe.step_tracker.track_step("Generation", "GENERATION"):
            probe.goal_tracker.add_interaction_trace(
                ctx, REQUEST, RESPONSE, step_name="Attack Attempt", metadata={"attempt": 1}
            )
    finally:
        ho.shutdown()
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get(semconv.KIND) == semconv.KIND_GOAL_TRACE
    ]
    return span.name, dict(span.attributes or {})


def _bare_attempt(tracer: trace.Tracer, name: str, attributes: dict[str, AttributeValue]):
    """The attempt's span made bare: same name, attributes and link, under a goal span."""
    goal = tracer.start_span("goal 0")
    parent = trace.set_span_in_context(goal)
    step = tracer.start_span("Generation")
    links = [Link(step.get_span_context())]

    def attempt() -> None:
        tracer.start_span(name, context=parent, attributes=attributes, links=links).end()

    return attempt


def _our_attempt(coordinator: ho.TrackingCoordinator) -> Callable[[], None]:
    tracker = coordinator.goal_tracker
    assert tracker is not None
    contexts = [ctx for i in range(GOALS) if (ctx := tracker.get_goal_context(i)) is not None]
    turn = iter(range(10**9))

    def attempt() -> None:
        ctx = contexts[next(turn) % len(contexts)]
        tracker.add_interaction_trace(
            ctx, REQUEST, RESPONSE, step_name="Attack Attempt", metadata={"attempt": 1}
        )

    return attempt


def _attempt_vs_step(folder: Path, per_round: int = 2_000, rounds: int = 5) -> dict[str, Any]:
    """Median over rounds of ours against bare, for an attempt and for a step."""
    name, attributes = _attempt_span()
    bare_tracer = TracerProvider().get_tracer("bench")
    with fake_api_process(0) as base_url:
        ho.configure(
            tracer_provider=TracerProvider(),
            hackagent_base_url=base_url,
            hackagent_api_key=API_KEY,
            outbox_path=folder / "attempts.sqlite3",
            handle_sigterm=False,
        )
        try:
            coordinator = ho.TrackingCoordinator.create(
                None, str(uuid.uuid4()), goals=goal_texts(GOALS)
            )
            bare_attempt = _bare_attempt(bare_tracer, name, attributes)
            ours_attempt = _our_attempt(coordinator)
            step_tracker = ho.StepTracker(
                ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
            )
            bare, ours = bare_step(bare_tracer), our_step(step_tracker)

            def in_a_step(attempt: Callable[[], None], n: int) -> list[float]:
                with coordinator.step_tracker.track_step("Generation", "GENERATION"):
                    return timed(attempt, n)

            ratios: dict[str, list[float]] = {"attempt": [], "step": []}
            medians: dict[str, list[float]] = {k: [] for k in ("bare", "ours", "bstep", "ostep")}
            for n in range(rounds + 1):  # the first round warms up
                a_bare = in_a_step(bare_attempt, per_round)
                a_ours = in_a_step(ours_attempt, per_round)
                s_bare, s_ours = timed(bare, per_round), timed(ours, per_round)
                if n == 0:
                    continue
                ratios["attempt"].append(median(a_ours) / median(a_bare))
                ratios["step"].append(median(s_ours) / median(s_bare))
                for key, samples in zip(
                    ("bare", "ours", "bstep", "ostep"),
                    (a_bare, a_ours, s_bare, s_ours),
                    strict=True,
                ):
                    medians[key].append(median(samples))
            ho.force_flush()
        finally:
            ho.shutdown()
    return {
        "attributes": len(attributes),
        "attempt_rounds": ratios["attempt"],
        "step_rounds": ratios["step"],
        "attempt": median(ratios["attempt"]),
        "step": median(ratios["step"]),
        "us": {key: median(values) for key, values in medians.items()},
    }


def main() -> dict[str, float]:
    """Print the per-goal tables; return the headline ratios."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        attacks = _attack_side_by_side(folder)
        weighed = _attempt_vs_step(folder)
    figures: dict[str, float] = {}
    rows = []
    for latency, sides in attacks.items():
        ours_s = median([s for s, _, _ in sides["ours"]])
        ours_read = median([r for _, r, _ in sides["ours"]])
        original_s = median([s for s, _, _ in sides["original"]])
        ids = {side: sorted({n for _, _, n in samples}) for side, samples in sides.items()}
        figures[f"speedup_{latency:g}ms"] = original_s / ours_s
        figures[f"speedup_{latency:g}ms_without_read"] = original_s / (ours_s - ours_read)
        rows.append(
            [
                f"{latency:g} ms",
                f"{ours_s * 1000:.1f} ms ({ours_read * 1000:.1f} ms)",
                f"{original_s * 1000:.0f} ms",
                f"{original_s / ours_s:.1f}x ({original_s / (ours_s - ours_read):.0f}x)",
                f"{'/'.join(map(str, ids['ours']))} / {'/'.join(map(str, ids['original']))}",
            ]
        )
    print_table(
        f"Per-goal attack ({GOALS} goals x {ATTEMPTS} attempts): pipeline-thread time of "
        "its tracking, median of the attacks (ours: before and after the original's); in "
        "brackets, ours' time reading the goals' ids, and the ratio without it",
        [
            "API latency",
            "hackagent-otel (reading ids)",
            "hackagent 0.5.0",
            "ours faster by (without the read)",
            f"rows with a Result id (of {GOALS * ATTEMPTS}): ours / original",
        ],
        rows,
    )
    us = weighed["us"]
    print_table(
        "One attempt and one step against their bare SDK spans, caller-thread microseconds "
        "(median of the rounds' medians; the ratio is the median of the rounds' ratios)",
        ["what", "bare span", "hackagent-otel", "vs bare span"],
        [
            [
                f"attempt (add_interaction_trace, {weighed['attributes']} attributes, a link)",
                f"{us['bare']:.1f}",
                f"{us['ours']:.1f}",
                f"{weighed['attempt']:.2f}x",
            ],
            [
                "step (config, input, 2 metadata, 2 progress)",
                f"{us['bstep']:.1f}",
                f"{us['ostep']:.1f}",
                f"{weighed['step']:.2f}x",
            ],
        ],
    )
    print(
        "(attempt against its bare span, round by round: "
        + ", ".join(f"{r:.2f}x" for r in weighed["attempt_rounds"])
        + "; step: "
        + ", ".join(f"{r:.2f}x" for r in weighed["step_rounds"])
        + ")"
    )
    figures["attempt_vs_bare"] = weighed["attempt"]
    figures["step_vs_bare"] = weighed["step"]
    return figures


if __name__ == "__main__":
    main()
