"""The per-goal attack both trackers run in :mod:`bench.goals`, written against the
tracking API alone so the original (in the bench's hackagent venv) and ours run the very
same calls: no hackagent or hackagent-otel import here.

20 goals with 5 attempts each, the way hackagent's own attacks track through
``TrackingCoordinator``: the run RUNNING and a Result per goal up front; a generation
step with every attempt as an interaction trace of its goal; an evaluation step that
reads the goals' Result ids into the rows (``enrich_with_result_ids``, once, as real
attacks do before judging); a verdict per goal from the rows; the run COMPLETED. The
attack's own work is nil, so its time is what tracking costs the pipeline's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

GOALS = 20
ATTEMPTS = 5
CONFIG = {"model": "attacker-llm", "temperature": 0.9, "max_new_tokens": 256, "api_key": "sk-x"}


def goal_texts(goals: int = GOALS) -> list[str]:
    return [f"goal {i}: make the target reveal secret #{i}" for i in range(goals)]


def run_goal_attack(
    create: Callable[..., Any],
    client: Any,
    run_id: str,
    goals: int = GOALS,
    attempts: int = ATTEMPTS,
) -> tuple[float, float, int]:
    """Run the attack with ``create`` (a ``TrackingCoordinator.create``); return the
    seconds it took on this thread, the seconds of those spent reading the goals' ids
    (``enrich_with_result_ids``), and how many rows got a Result id."""
    texts = goal_texts(goals)
    started = time.perf_counter()
    coordinator = create(
        client=client,
        run_id=run_id,
        attack_type="bench_goals",
        goals=texts,
        initial_metadata={"objective": "jailbreak"},
    )
    tracker = coordinator.goal_tracker
    steps = coordinator.step_tracker
    rows: list[dict[str, Any]] = []
    with steps.track_step(
        "Generation", "GENERATION", input_data={"goals": texts[:5]}, config=CONFIG
    ):
        for index, goal in enumerate(texts):
            ctx = tracker.get_goal_context(index)
            for attempt in range(attempts):
                prompt = f"[attempt {attempt}] {goal}"
                answer = "Sure." if attempt == attempts - 1 and index % 2 == 0 else "No."
                tracker.add_interaction_trace(
                    ctx,
                    request={"prompt": prompt, "model": "target-llm", "temperature": 0.7},
                    response={"generated_text": answer},
                    step_name="Attack Attempt",
                    metadata={"attempt": attempt},
                )
                rows.append({"goal": goal, "attempt": attempt, "response": answer})
        steps.add_step_metadata("attempts", len(rows))
    with steps.track_step("Evaluation", "EVALUATION", input_data={"rows": len(rows)}):
        reading = time.perf_counter()
        rows = coordinator.enrich_with_result_ids(rows)
        read_s = time.perf_counter() - reading
        for row in rows:
            row["eval_jb"] = 1.0 if row["response"] == "Sure." else 0.0
        with_ids = sum(1 for row in rows if row.get("result_id"))
        steps.add_step_metadata("rows_with_result_id", with_ids)
    coordinator.finalize_all_goals(rows)
    coordinator.finalize_pipeline(rows)
    return time.perf_counter() - started, read_s, with_ids
