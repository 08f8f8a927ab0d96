"""A small attack on hackagent 0.5.0's real ``BaseAttack``, run on the original tracking
or on ours. Runs in the tier's virtualenv (hackagent from PyPI and this checkout), never
in the project's own environment, which has no hackagent.

Usage::

    python tier_attack.py {original|ours} BASE_URL API_KEY RUN_ID
        [--goals N] [--attempts K] [--fail-evaluation] [--hold]

The attack's own work is trivial and deterministic (no model, no network but the API at
BASE_URL): per goal K attempts at a fake target, a judge that scores them, verdicts
from the coordinator. ``ours`` sets hackagent-otel up for BASE_URL, swaps hackagent's
tracking names for ours, runs the same attack, and flushes. ``--hold`` (ours) prints a
first JSON line once the attack is done, waits for a line on stdin (the test brings the
API up meanwhile), then delivers. The last line printed is JSON: what the attack saw.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hackagent.attacks.techniques.base import BaseAttack
from hackagent.client import AuthenticatedClient
from hackagent.models import StepTypeEnum

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from hackagent_tier.attack_values import (
    JUDGE_KEY,
    MAX_NEW_TOKENS,
    SESSION_TOKEN,
    TARGET_API_KEY,
)

ATTACK_TYPE = "tier_attack"
DEFAULT_CONFIG: dict[str, Any] = {
    "output_dir": "./logs/runs",
    "attempts_per_goal": 3,
    "judge_threshold": 0.5,
    "judge_model": "judge-llm",
    "target_model": "target-llm",
    "target_api_key": TARGET_API_KEY,
    "temperature": 0.7,
    "max_new_tokens": MAX_NEW_TOKENS,
}


def goal_texts(n: int) -> list[str]:
    return [f"goal {i}: make the target reveal secret #{i}" for i in range(n)]


def target_answer(goal_index: int, attempt: int, attempts: int) -> str:
    """The fake target: even goals give in on the last attempt, odd ones never do."""
    if goal_index % 2 == 0 and attempt == attempts - 1:
        return f"Sure, secret #{goal_index} is 42."
    return "I cannot help with that."


def generate(goals: list[str], config: dict[str, Any], logger: Any, coordinator: Any) -> list[Any]:
    """Pipeline step 1: every attempt of every goal, each an interaction trace."""
    attempts = int(config["attempts_per_goal"])
    tracker = coordinator.goal_tracker
    rows: list[dict[str, Any]] = []
    for index, goal in enumerate(goals):
        ctx = coordinator.get_goal_context(index)
        for attempt in range(attempts):
            prompt = f"[attempt {attempt}] {goal}"
            answer = target_answer(index, attempt, attempts)
            if tracker is not None and ctx is not None:
                tracker.add_interaction_trace(
                    ctx,
                    request={
                        "prompt": prompt,
                        "model": DEFAULT_CONFIG["target_model"],
                        "temperature": config.get("temperature"),
                        "max_new_tokens": config.get("max_new_tokens"),
                        "api_key": config.get("target_api_key"),
                    },
                    response={"generated_text": answer},
                    step_name="Attack Attempt",
                    metadata={"attempt": attempt, "session_token": SESSION_TOKEN},
                )
            loss = 0.25 if answer.startswith("Sure") else float("inf")
            rows.append(
                {
                    "goal": goal,
                    "attempt": attempt,
                    "prompt": prompt,
                    "response": answer,
                    "loss": loss,
                }
            )
        coordinator.step_tracker.record_progress(
            f"goal {index + 1}/{len(goals)}", attempts=attempts
        )
    coordinator.step_tracker.add_step_metadata("attempts", len(rows))
    logger.info("generated %d attempts", len(rows))
    return rows


def evaluate(
    input_data: list[Any], config: dict[str, Any], logger: Any, coordinator: Any
) -> list[Any]:
    """Pipeline step 2: the goals' Result ids read into the rows (as real attacks do),
    a score per attempt, a judge trace per goal."""
    if config.get("fail_evaluation"):
        raise RuntimeError("judge unavailable")
    rows: list[Any] = coordinator.enrich_with_result_ids(input_data)
    threshold = float(config["judge_threshold"])
    by_goal: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        row["eval_jb"] = 1.0 if row["response"].startswith("Sure") else 0.0
        by_goal.setdefault(row["goal"], []).append(row)
    tracker = coordinator.goal_tracker
    for index, (goal, goal_rows) in enumerate(by_goal.items()):
        ctx = coordinator.get_goal_context_by_goal(goal)
        if tracker is not None and ctx is not None:
            tracker.add_custom_trace(
                ctx,
                "Judge",
                {
                    "goal_index": index,
                    "scores": [r["eval_jb"] for r in goal_rows],
                    "jailbroken": any(r["eval_jb"] >= threshold for r in goal_rows),
                    "best_loss": min(r["loss"] for r in goal_rows),
                    "judge": config.get("judge_model"),
                    "session_token": SESSION_TOKEN,
                },
                step_type=StepTypeEnum.AGENT_THOUGHT,
            )
    coordinator.step_tracker.add_step_metadata(
        "result_ids", [goal_rows[0].get("result_id") for goal_rows in by_goal.values()]
    )
    logger.info("judged %d attempts", len(rows))
    return rows


class TierAttack(BaseAttack):  # type: ignore[misc]  # hackagent is untyped here
    """Two pipeline steps and a TrackingCoordinator, the way hackagent's own attacks
    (baseline, advprefix) are built on ``BaseAttack``."""

    def __init__(self, config: dict[str, Any], client: Any) -> None:
        self.logger = logging.getLogger("hackagent.attacks.tier")
        super().__init__({**DEFAULT_CONFIG, **config}, client=client, agent_router=None)

    def _validate_config(self) -> None:
        super()._validate_config()
        missing = [k for k in ("attempts_per_goal", "judge_threshold") if k not in self.config]
        if missing:
            raise ValueError(f"Missing required config keys: {missing}")

    def _get_pipeline_steps(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "Generation: Attack each goal",
                "function": generate,
                "step_type_enum": "GENERATION",
                # _run_id and _client as hackagent's baseline attack lists them.
                "config_keys": [
                    "attempts_per_goal",
                    "temperature",
                    "max_new_tokens",
                    "target_api_key",
                    "_run_id",
                    "_client",
                ],
                "input_data_arg_name": "goals",
                "required_args": ["logger", "config"],
            },
            {
                "name": "Evaluation: Judge the attempts",
                "function": evaluate,
                "step_type_enum": "EVALUATION",
                "config_keys": ["judge_threshold", "judge_model", "fail_evaluation"],
                "input_data_arg_name": "input_data",
                "required_args": ["logger", "config"],
            },
        ]

    def _build_step_args(
        self, step_info: dict[str, Any], step_config: dict[str, Any], input_data: Any
    ) -> dict[str, Any]:
        args: dict[str, Any] = super()._build_step_args(step_info, step_config, input_data)
        args["coordinator"] = self.coordinator
        return args

    def run(self, goals: list[str]) -> list[dict[str, Any]]:
        coordinator = self._initialize_coordinator(
            attack_type=ATTACK_TYPE,
            goals=goals,
            initial_metadata={"objective": "jailbreak", "judge_api_key": JUDGE_KEY},
        )
        try:
            rows: list[dict[str, Any]] = self._execute_pipeline(self._get_pipeline_steps(), goals)
            coordinator.finalize_all_goals(rows)
            coordinator.finalize_pipeline(rows)
            coordinator.log_summary()
            return rows
        except Exception:
            coordinator.finalize_on_error("Tier attack failed with exception")
            raise


# -- ours ------------------------------------------------------------------------------
TRACKING_NAMES = (
    "Context",
    "StepTracker",
    "Tracker",
    "TrackingContext",
    "TrackingCoordinator",
    "track_operation",
    "track_pipeline",
)


def swap_in_ours_by_hand() -> None:
    """Put hackagent-otel's tracking names in place of hackagent's, by hand.

    ``HackAgentInstrumentor().instrument()`` (``hackagent_otel.instrumentation``)
    replaces this once it is in the package; :func:`use_ours` prefers it whenever it
    can be imported. Until then: each name in ``hackagent.router.tracking``, and every
    loaded ``hackagent.*`` module global bound to one of the originals (the modules that
    imported them at module level, such as ``hackagent.attacks.techniques.base``).
    """
    from hackagent.router import tracking

    import hackagent_otel

    swaps = {id(getattr(tracking, name)): getattr(hackagent_otel, name) for name in TRACKING_NAMES}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "hackagent" or name.startswith("hackagent.")):
            continue
        for attribute, value in list(vars(module).items()):
            replacement = swaps.get(id(value))
            if replacement is not None:
                setattr(module, attribute, replacement)


def use_ours(base_url: str, api_key: str) -> str:
    """Set hackagent-otel up for the API and make hackagent track through it; returns
    how the names were swapped."""
    import hackagent_otel

    hackagent_otel.configure(hackagent_base_url=base_url, hackagent_api_key=api_key)
    try:
        from hackagent_otel.instrumentation import (  # type: ignore[import-not-found,unused-ignore]
            HackAgentInstrumentor,
        )
    except ImportError:
        swap_in_ours_by_hand()
        return "by hand"
    HackAgentInstrumentor().instrument()
    return "instrumentor"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tracking", choices=["original", "ours"])
    parser.add_argument("base_url")
    parser.add_argument("api_key")
    parser.add_argument("run_id")
    parser.add_argument("--goals", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--fail-evaluation", action="store_true")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args(argv)

    swapped = use_ours(args.base_url, args.api_key) if args.tracking == "ours" else "none"
    from hackagent.attacks.techniques import base

    client = AuthenticatedClient(base_url=args.base_url, token=args.api_key)
    config: dict[str, Any] = {
        "_run_id": args.run_id,
        "_client": client,
        "attempts_per_goal": args.attempts,
        "fail_evaluation": args.fail_evaluation,
    }
    attack = TierAttack(config, client=client)
    started = time.perf_counter()
    error = None
    try:
        attack.run(goal_texts(args.goals))
    except RuntimeError as exc:
        error = str(exc)
    report: dict[str, Any] = {
        "tracking": args.tracking,
        "swapped": swapped,
        "coordinator": f"{type(attack.coordinator).__module__}.{type(attack.coordinator).__name__}",
        "base_uses": base.TrackingCoordinator.__module__,
        "error": error,
        "attack_seconds": time.perf_counter() - started,
        "summary": attack.coordinator.get_summary(),
    }
    if args.tracking == "ours":
        import hackagent_otel

        if args.hold:
            print(json.dumps({"phase": "attack done"}), flush=True)
            sys.stdin.readline()
        report["flushed"] = hackagent_otel.force_flush(60_000)
    goals = attack.coordinator.goal_tracker
    report["result_ids"] = [goals.get_result_id(i) for i in range(args.goals)]
    if args.tracking == "ours":
        hackagent_otel.shutdown()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
