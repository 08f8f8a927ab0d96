"""Per-goal tracking over real HTTP: the calls hackagent 0.5.0's Tracker and
TrackingCoordinator send, made from spans, with the API's ids, never waiting."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

import hackagent_otel
from apps.attack_scenario import (
    CANARY,
    GOALS,
    attack_calls,
    expected_attack_calls,
    run_attack_scenario,
)
from hackagent_otel import Context, Tracker, TrackingCoordinator, semconv
from hackagent_otel.testing import FakeHackAgentAPI, Fault
from otel_fixtures import ConfigureAPI, OTel, UnprintableError, api_calls, attrs


@pytest.fixture(params=["configured API", "httpx.Client"])
def client_kind(request: pytest.FixtureRequest, fake_api: FakeHackAgentAPI) -> Any:
    if request.param == "configured API":
        return None
    return httpx.Client(
        base_url=fake_api.base_url, headers={"Authorization": f"Bearer {fake_api.api_key}"}
    )


def test_a_coordinated_attack_makes_the_calls_the_original_makes_with_the_apis_ids(
    api_otel: OTel, fake_api: FakeHackAgentAPI, client_kind: Any
) -> None:
    run_id = str(uuid.uuid4())
    coordinator = run_attack_scenario(client_kind, run_id)
    assert hackagent_otel.force_flush(10_000)
    r0, r1 = (coordinator.goal_tracker.get_result_id(i) for i in (0, 1))  # type: ignore[union-attr]
    assert r0 is not None
    assert r1 is not None
    assert fake_api.result(r0) is not None  # the ids are the API's own
    assert fake_api.wait_for(lambda: len(fake_api.calls) >= 14, timeout=10)
    assert attack_calls(fake_api, run_id, [r0, r1]) == expected_attack_calls(run_id, r0, r1)
    assert CANARY not in json.dumps([c.body for c in fake_api.calls])


def test_creating_goals_never_waits_on_a_slow_api(
    api_otel: OTel, fake_api: FakeHackAgentAPI
) -> None:
    fake_api.set_latency(300)
    run_id = str(uuid.uuid4())
    started = time.perf_counter()
    coordinator = TrackingCoordinator.create(None, run_id, goals=[f"g{i}" for i in range(20)])
    tracker = coordinator.goal_tracker
    assert tracker is not None
    for i in range(20):
        ctx = tracker.get_goal_context(i)
        assert ctx is not None
        tracker.add_interaction_trace(ctx, {"prompt": "x"}, "y")
        tracker.finalize_goal(ctx, success=False)
    took = time.perf_counter() - started
    assert took < 0.3  # one round trip of this API alone takes 0.3 s
    fake_api.set_latency(0)
    assert hackagent_otel.force_flush(20_000)


def test_reading_an_id_waits_for_the_creation_and_is_bounded(
    configure_api: ConfigureAPI, fake_api: FakeHackAgentAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HACKAGENT_RESULT_ID_TIMEOUT", "0.3")
    configure_api()
    fake_api.inject(Fault.hang(seconds=3), path_prefix="/run/", method="POST")
    tracker = Tracker(None, str(uuid.uuid4()))
    ctx = tracker.create_goal_result("g", 0)
    started = time.monotonic()
    assert ctx.result_id is None  # past the bound, as when the original's creation failed
    assert 0.25 <= time.monotonic() - started < 2
    tracker.add_custom_trace(ctx, "attempt", {"n": 1})
    fake_api.clear_faults()  # the hung creation fails, is retried and answered
    assert hackagent_otel.force_flush(10_000)
    result_id = ctx.result_id  # known now: no wait
    assert result_id is not None
    assert fake_api.result(result_id) is not None
    assert [t["sequence"] for t in fake_api.traces_for(result_id)] == [1, 2]


def test_track_goal_finalizes_a_crash_as_failed_and_reraises(
    api_otel: OTel, fake_api: FakeHackAgentAPI
) -> None:
    run_id = str(uuid.uuid4())
    tracker = Tracker(None, run_id, attack_type="pair")
    with pytest.raises(RuntimeError, match="target fell over"), tracker.track_goal("g", 0) as ctx:
        raise RuntimeError("target fell over " + "x" * 300)
    assert ctx.is_finalized
    assert hackagent_otel.force_flush(10_000)
    result_id = ctx.result_id
    assert result_id is not None
    (patch,) = [c for c in api_calls(fake_api, f"/result/{result_id}") if c[0] == "PATCH"]
    assert patch[2]["evaluation_status"] == "FAILED_JAILBREAK"
    notes = patch[2]["evaluation_notes"]
    assert notes == "Attack failed with exception: " + ("target fell over " + "x" * 300)[:200]
    (goal,) = api_otel.of_kind(semconv.KIND_GOAL)
    assert goal.status.status_code.name == "ERROR"
    assert [e.name for e in goal.events] == ["exception"]
    assert attrs(goal)[semconv.GOAL_SUCCESS] is False


def test_track_goal_finalizes_a_crash_whose_str_raises(
    api_otel: OTel, fake_api: FakeHackAgentAPI
) -> None:
    tracker = Tracker(None, str(uuid.uuid4()), attack_type="pair")
    with pytest.raises(UnprintableError), tracker.track_goal("g", 0) as ctx:
        raise UnprintableError
    assert ctx.is_finalized
    assert hackagent_otel.force_flush(10_000)
    (patch,) = [c for c in api_calls(fake_api, f"/result/{ctx.result_id}") if c[0] == "PATCH"]
    assert patch[2]["evaluation_notes"] == "Attack failed with exception: <UnprintableError>"
    (goal,) = api_otel.of_kind(semconv.KIND_GOAL)
    assert goal.status.status_code.name == "ERROR"


def test_finalize_on_error_fails_every_open_goal_then_the_run(
    api_otel: OTel, fake_api: FakeHackAgentAPI
) -> None:
    run_id = str(uuid.uuid4())
    coordinator = TrackingCoordinator.create(None, run_id, goals=GOALS)
    tracker = coordinator.goal_tracker
    assert tracker is not None
    done = tracker.get_goal_context(0)
    assert done is not None
    tracker.finalize_goal(done, success=True)
    coordinator.finalize_on_error("Pipeline failed at step 2")
    assert hackagent_otel.force_flush(10_000)
    r1 = tracker.get_result_id(1)
    assert r1 is not None
    (patch,) = [c for c in api_calls(fake_api, f"/result/{r1}") if c[0] == "PATCH"]
    assert (patch[2]["evaluation_status"], patch[2]["evaluation_notes"]) == (
        "FAILED_JAILBREAK",
        "Pipeline failed at step 2",
    )
    statuses = [c[2]["status"] for c in api_calls(fake_api, f"/run/{run_id}") if c[0] == "PATCH"]
    assert statuses == ["RUNNING", "FAILED"]


def test_a_goal_finalized_twice_is_refused_the_second_time(api_otel: OTel) -> None:
    tracker = Tracker(None, str(uuid.uuid4()))
    ctx = tracker.create_goal_result("g", 0)
    assert tracker.finalize_goal(ctx, success=True)
    assert not tracker.finalize_goal(ctx, success=False)
    assert ctx.metadata["success"] is True


def test_without_a_run_id_everything_is_a_local_no_op(otel: OTel) -> None:
    tracker = Tracker(None, None)
    ctx = tracker.create_goal_result("g", 0)
    tracker.add_custom_trace(ctx, "x", {"a": 1})
    assert not tracker.finalize_goal(ctx, success=True)
    assert ctx.result_id is None
    assert [t["sequence"] for t in ctx.traces] == [1]
    assert otel.spans() == []
    assert TrackingCoordinator.create(None, None, goals=["g"]).goal_tracker is None


def test_a_goal_is_a_span_of_its_runs_trace_with_its_attempts_under_it(otel: OTel) -> None:
    run_id = str(uuid.uuid4())
    coordinator = TrackingCoordinator.create(None, run_id, attack_type="pair", goals=["g0"])
    tracker = coordinator.goal_tracker
    ctx = coordinator.get_goal_context(0)
    assert tracker is not None
    assert ctx is not None
    response = {
        "content": "sure",
        "model": "m-1",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    with coordinator.step_tracker.track_step("Attack", "STEP2"):
        tracker.add_interaction_trace(
            ctx, {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]}, response
        )
    tracker.finalize_goal(ctx, success=True)
    (goal,) = otel.of_kind(semconv.KIND_GOAL)
    (attempt,) = otel.of_kind(semconv.KIND_GOAL_TRACE)
    step = otel.step("Attack")
    assert goal.context.trace_id == step.context.trace_id == int(uuid.UUID(run_id))
    assert attempt.parent is not None
    assert attempt.parent.span_id == goal.context.span_id
    assert [link.context.span_id for link in attempt.links] == [step.context.span_id]
    assert attrs(goal)[semconv.GOAL_INDEX] == 0
    assert attrs(goal)[semconv.ATTACK_TYPE] == "pair"
    assert attrs(goal)[semconv.GOAL_SUCCESS] is True
    assert attrs(goal)[semconv.RESULT_EVALUATION_STATUS] == "SUCCESSFUL_JAILBREAK"
    found = attrs(attempt)
    assert found[semconv.GEN_AI_REQUEST_MODEL] == "m-1"
    assert found[semconv.GEN_AI_RESPONSE_MODEL] == "m-1"
    assert (
        found[semconv.GEN_AI_USAGE_INPUT_TOKENS],
        found[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
    ) == (7, 3)
    assert json.loads(found[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]


def test_traces_of_goal_zero_and_its_steps_never_share_a_sequence_number(otel: OTel) -> None:
    coordinator = TrackingCoordinator.create(None, str(uuid.uuid4()), goals=["g0"])
    tracker = coordinator.goal_tracker
    ctx = coordinator.get_goal_context(0)
    assert tracker is not None
    assert ctx is not None

    def attempts() -> None:
        for _ in range(200):
            tracker.add_custom_trace(ctx, "a", {})

    def steps() -> None:
        for _ in range(100):
            with coordinator.step_tracker.track_step("s", "S"):
                pass

    workers = [threading.Thread(target=attempts), threading.Thread(target=steps)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    numbers = [attrs(s)[semconv.TRACE_SEQUENCE] for s in otel.of_kind(semconv.KIND_GOAL_TRACE)]
    for step in otel.steps():
        numbers += [
            attrs(step)[semconv.STEP_SEQUENCE_START],
            attrs(step)[semconv.STEP_SEQUENCE_END],
        ]
    assert sorted(numbers) == list(range(2, 2 + 200 + 200))  # 1 is the Goal Setup trace


def test_context_equals_and_shows_like_the_originals_dataclass() -> None:
    assert Context("g", 0) == Context("g", 0)
    assert Context("g", 0) != Context("g", 1)
    assert "goal='g'" in repr(Context("g", 0))


def test_an_attack_with_the_api_down_throughout_arrives_whole_once_the_api_is_back(
    configure_api: ConfigureAPI, fake_api: FakeHackAgentAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HACKAGENT_RESULT_ID_TIMEOUT", "0.2")
    configure_api()
    fake_api.stop()
    run_id = str(uuid.uuid4())
    started = time.monotonic()
    coordinator = run_attack_scenario(None, run_id)
    assert time.monotonic() - started < 2  # one bounded wait for the ids, nothing else
    assert coordinator.goal_tracker is not None
    assert coordinator.goal_tracker.get_result_id(0) is None  # not created yet
    assert hackagent_otel.force_flush(5_000)  # in the outbox: durable
    fake_api.start()
    assert fake_api.wait_for(lambda: len(fake_api.calls) >= 14, timeout=20)
    ids = [coordinator.goal_tracker.get_result_id(i) for i in (0, 1)]
    assert None not in ids
    r0, r1 = (str(i) for i in ids)
    assert attack_calls(fake_api, run_id, [r0, r1]) == expected_attack_calls(run_id, r0, r1)
    assert len(fake_api.calls) == 14
