"""The demo: the step pipeline's and the per-goal attack's timelines in the terminal, the
spans behind them, and where their records went."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once
from rich.console import Console

from apps.attack_scenario import results_by_goal
from hackagent_otel import semconv
from hackagent_otel._demo import DemoRun, render_timeline, run_demo
from hackagent_otel._runs import trace_id_for_run
from hackagent_otel.testing import FakeHackAgentAPI

STEPS = (
    "Load Goals",
    "Generate Prefixes",
    "Prefix batch 1",
    "Prefix batch 2",
    "Execute Attacks",
    "Evaluate Responses",
    "Judge (primary)",
    "Judge (fallback)",
)
#: Two records per step, one ERROR_TEST_FRAMEWORK result update for the failed judge,
#: then the result status and two run status updates.
PIPELINE_RECORDS = 2 * len(STEPS) + 1 + 1 + 2
ATTACK_STEPS = ("Generate Prompts", "Attack Round 1", "Attack Round 2")
VERDICTS = {
    0: "SUCCESSFUL_JAILBREAK",
    1: "FAILED_JAILBREAK",
    2: "SUCCESSFUL_JAILBREAK",
    3: "FAILED_JAILBREAK",
}
#: The rounds each goal's attempts were made in: round 2 retries goals 0 and 1, and
#: runs goal 3, whose target crashes.
ATTEMPT_STEPS = {
    0: ["Attack Round 1", "Attack Round 2"],
    1: ["Attack Round 1", "Attack Round 2"],
    2: ["Attack Round 1"],
    3: ["Attack Round 2"],
}
ATTEMPTS = sum(len(steps) for steps in ATTEMPT_STEPS.values())
#: The per-goal attack: two run status updates, a creation and a "Goal Setup" trace per
#: goal, two records per step (on goal 0's Result), the attempts, an evaluation and a
#: verdict for each of the three goals the coordinator planned, the crashed goal's verdict.
ATTACK_RECORDS = 2 + 2 * len(VERDICTS) + 2 * len(ATTACK_STEPS) + ATTEMPTS + 2 * 3 + 1
DEMO_RECORDS = PIPELINE_RECORDS + ATTACK_RECORDS
CRASH = "TargetCrashedError: target closed the connection mid-answer"


@pytest.fixture
def fresh_global_provider(clean_env: None) -> Iterator[None]:
    """run_demo() may make its provider global; give the global back afterwards."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    yield
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def demo_output() -> tuple[str, DemoRun]:
    out = io.StringIO()
    demo = run_demo(Console(file=out, width=200))
    return out.getvalue(), demo


@pytest.fixture
def temporary_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile`` makes its folders during the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_demo_draws_every_step_marks_the_failure_and_keeps_records_in_the_outbox(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    text, _ = demo_output()

    for step in STEPS + ATTACK_STEPS:
        assert step in text
    (judge,) = [line for line in text.splitlines() if "Judge (primary)" in line]
    assert "failed" in judge
    assert "judge model timed out" in judge
    assert "run id" in text
    assert f"HackAgent records: {DEMO_RECORDS} made, kept in the demo's own outbox" in text
    # Never in the user's outbox, where a later push would deliver them; its own is gone.
    assert not env_outbox_path.exists()
    assert list(temporary_folders.iterdir()) == []


def test_the_demo_delivers_its_records_to_the_configured_api(
    fresh_global_provider: None,
    fake_api: FakeHackAgentAPI,
    env_outbox_path: Path,
    temporary_folders: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HACKAGENT_BASE_URL", fake_api.base_url)
    monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)

    text, demo = demo_output()

    assert f"HackAgent records: {DEMO_RECORDS} made, {DEMO_RECORDS} delivered to" in text
    assert len(fake_api.calls) == DEMO_RECORDS
    assert [t["sequence"] for t in fake_api.traces_for(demo.result_id)] == list(range(1, 17))
    failed = fake_api.result(demo.result_id)
    assert failed is not None
    assert failed["evaluation_status"] == "FAILED_JAILBREAK"
    # The attack: a Result per goal with its verdict; goal 0's also has the steps.
    results = results_by_goal(fake_api)
    assert sorted(results) == sorted(VERDICTS)
    for index, verdict in VERDICTS.items():
        result = fake_api.result(results[index])
        assert result is not None
        assert result["evaluation_status"] == verdict
    crashed = fake_api.result(results[3])
    assert crashed is not None
    assert crashed["evaluation_notes"] == f"Attack failed with exception: {CRASH.split(': ')[1]}"
    goal_0 = fake_api.traces_for(results[0])
    # Setup, 3 steps of 2 records, 2 attempts, the evaluation: one counter, no gaps.
    assert [t["sequence"] for t in goal_0] == list(range(1, 11))
    assert list(env_outbox_path.parent.iterdir()) == [temporary_folders]
    assert list(temporary_folders.iterdir()) == []


def test_with_only_otlp_configured_the_demo_leaves_records_to_the_bridge(
    fresh_global_provider: None,
    fake_api: FakeHackAgentAPI,
    env_outbox_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any OTLP/HTTP endpoint will do: the spans' fate there is not under test.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", fake_api.base_url)

    text, _ = demo_output()

    assert "made downstream from the spans by the bridge" in text
    assert "spans sent over OTLP" in text
    assert not env_outbox_path.exists()
    assert [c for c in fake_api.calls if not c.path.startswith("/v1/")] == []


def test_hackagent_otel_demo_runs_as_a_command(fake_api: FakeHackAgentAPI, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HACKAGENT_", "OTEL_"))}
    env.update(
        HACKAGENT_BASE_URL=fake_api.base_url,
        HACKAGENT_API_KEY=fake_api.api_key,
        HACKAGENT_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"),
        COLUMNS="200",
    )
    done = subprocess.run(
        [sys.executable, "-m", "hackagent_otel", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Judge (fallback)" in done.stdout
    assert "goal 3 x FAILED_JAILBREAK" in done.stdout
    assert len(fake_api.calls) == DEMO_RECORDS
    assert list(tmp_path.iterdir()) == []  # no outbox in HACKAGENT_OUTBOX_PATH's folder


def test_the_demo_draws_each_goal_with_its_attempts_and_verdict_and_marks_the_crash(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    text, _ = demo_output()

    found = re.findall(r"goal (\d) (?:x )?(SUCCESSFUL_JAILBREAK|FAILED_JAILBREAK)", text)
    assert {int(index): verdict for index, verdict in found} == VERDICTS
    assert "goal 3 x FAILED_JAILBREAK" in text  # the crashed one, and only it
    assert len(re.findall(r"goal \d x ", text)) == 1
    (crash,) = [line for line in text.splitlines() if "TargetCrashedError" in line]
    assert f"x {CRASH}" in crash
    # Under its goal, each attempt names its step, the target's answer and its tokens.
    attempts = re.findall(r'attempt in (Attack Round \d): "([^"]+)" (\d+)\+(\d+) tok', text)
    assert len(attempts) == ATTEMPTS
    assert ("Attack Round 1", "I can't help with that.") in [a[:2] for a in attempts]
    assert all(int(used_in) > 0 and int(used_out) > 0 for *_, used_in, used_out in attempts)
    assert text.count("evaluation: ") == 3  # one per planned goal, from finalize_all_goals


def test_the_demo_lists_under_each_step_the_goals_whose_attempts_it_saw(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    text, _ = demo_output()

    lines = text.splitlines()
    for step, goals in (
        ("Attack Round 1", "goal 0, goal 1, goal 2"),
        ("Attack Round 2", "goal 0, goal 1, goal 3"),
    ):
        (at,) = [i for i, line in enumerate(lines) if f"{step} ok" in line]
        assert lines[at + 1].endswith(f"attempts in this step: {goals}")
    (prompts,) = [i for i, line in enumerate(lines) if "Generate Prompts ok" in line]
    assert "attempts in this step" not in lines[prompts + 1]


def test_the_attack_timeline_fits_an_80_column_terminal(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    _, demo = demo_output()

    drawn = {}
    for width in (80, 200):
        out = io.StringIO()
        Console(file=out, width=width).print(
            render_timeline(demo.spans, demo.attack_run_id, "per-goal attack")
        )
        drawn[width] = out.getvalue().splitlines()
    assert drawn[80] == drawn[200]  # nothing wrapped


def spans_of(demo: DemoRun, kind: str) -> list[ReadableSpan]:
    return [
        s
        for s in demo.spans
        if s.attributes
        and s.attributes.get(semconv.RUN_ID) == demo.attack_run_id
        and s.attributes.get(semconv.KIND) == kind
    ]


def test_an_attempt_is_a_child_of_its_goal_and_links_to_the_step_it_happened_in(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    _, demo = demo_output()

    trace_id = trace_id_for_run(demo.attack_run_id)
    goals = {
        s.attributes[semconv.GOAL_REF]: s for s in spans_of(demo, semconv.KIND_GOAL) if s.attributes
    }
    steps = {s.context.span_id: s for s in spans_of(demo, semconv.KIND_STEP)}
    attempts = [
        s
        for s in spans_of(demo, semconv.KIND_GOAL_TRACE)
        if s.attributes and s.attributes[semconv.TRACE_ORIGIN] == "interaction"
    ]
    assert len(attempts) == ATTEMPTS
    seen: dict[int, list[str]] = {}
    for attempt in attempts:
        attrs = attempt.attributes or {}
        goal = goals[attrs[semconv.GOAL_REF]]
        assert attempt.parent is not None
        assert attempt.parent.span_id == goal.context.span_id
        (link,) = attempt.links
        step = steps[link.context.span_id]
        assert link.context.trace_id == step.context.trace_id == trace_id
        assert attempt.context.trace_id == trace_id
        assert attrs[semconv.GEN_AI_REQUEST_MODEL] == "target-chat-7b"
        assert isinstance(attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS], int)
        assert isinstance(attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS], int)
        index = attrs[semconv.GOAL_INDEX]
        assert isinstance(index, int)
        seen.setdefault(index, []).append(step.name)
    assert {i: sorted(names) for i, names in seen.items()} == ATTEMPT_STEPS


def test_the_crashed_goal_is_failed_with_its_exception_on_its_span(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    _, demo = demo_output()

    by_index = {
        (s.attributes or {})[semconv.GOAL_INDEX]: s for s in spans_of(demo, semconv.KIND_GOAL)
    }
    assert {
        i: (s.attributes or {})[semconv.RESULT_EVALUATION_STATUS] for i, s in by_index.items()
    } == VERDICTS
    crashed = by_index[3]
    assert crashed.status.status_code is StatusCode.ERROR
    assert crashed.status.description == CRASH
    (event,) = [e for e in crashed.events if e.name == "exception"]
    assert str((event.attributes or {})["exception.type"]).endswith("TargetCrashedError")
    assert all(by_index[i].status.status_code is StatusCode.UNSET for i in (0, 1, 2))
    # track_goal ran inside "Attack Round 2": the goal's span hangs from that step.
    steps = {s.context.span_id: s.name for s in spans_of(demo, semconv.KIND_STEP)}
    assert crashed.parent is not None
    assert steps[crashed.parent.span_id] == "Attack Round 2"
