"""Carrying the current step and span into threads."""

from __future__ import annotations

import contextvars
import threading

from opentelemetry import trace

from hackagent_otel import ContextPropagatingExecutor, StepTracker, with_current_context
from otel_fixtures import OTel, metadata_of, parent_id, span_id

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def test_with_current_context_binds_the_context_at_wrap_time() -> None:
    token = marker.set("at wrap time")
    wrapped = with_current_context(marker.get)
    marker.reset(token)
    results: list[str] = []

    thread = threading.Thread(target=lambda: results.append(wrapped()))
    thread.start()
    thread.join()

    assert results == ["at wrap time"]
    assert marker.get() == "unset"


def test_with_current_context_runs_each_call_in_a_fresh_copy() -> None:
    def bump() -> str:
        value = marker.get() + "+"
        marker.set(value)
        return value

    token = marker.set("v")
    wrapped = with_current_context(bump)
    marker.reset(token)

    assert wrapped() == "v+"
    assert wrapped() == "v+"
    assert wrapped.__name__ == "bump"


def test_executor_tasks_run_in_the_submitters_context() -> None:
    token = marker.set("submitter")
    try:
        with ContextPropagatingExecutor(2) as pool:
            assert pool.submit(marker.get).result() == "submitter"
            assert list(pool.map(lambda _: marker.get(), range(3))) == ["submitter"] * 3
    finally:
        marker.reset(token)


def test_a_plain_thread_does_not_see_the_step_but_a_wrapped_one_does(
    otel: OTel, tracker: StepTracker
) -> None:
    seen: dict[str, bool] = {}

    def probe(name: str) -> None:
        seen[name] = trace.get_current_span().get_span_context().is_valid
        tracker.add_step_metadata(name, True)

    with tracker.track_step("Step", "STEP"):
        plain = threading.Thread(target=probe, args=("plain",))
        wrapped = threading.Thread(target=with_current_context(probe), args=("wrapped",))
        for thread in (plain, wrapped):
            thread.start()
            thread.join()

    assert seen == {"plain": False, "wrapped": True}
    assert metadata_of(otel.step("Step")) == {"wrapped": True}


def test_spans_started_in_executor_tasks_nest_under_the_step(
    otel: OTel, tracker: StepTracker
) -> None:
    user_tracer = otel.provider.get_tracer("user.app")

    def call(n: int) -> None:
        with user_tracer.start_as_current_span(f"call {n}"):
            pass

    with tracker.track_step("Fan out", "STEP"), ContextPropagatingExecutor(4) as pool:
        list(pool.map(call, range(4)))

    step = otel.step("Fan out")
    calls = [s for s in otel.spans() if s.name.startswith("call ")]
    assert len(calls) == 4
    assert all(parent_id(c) == span_id(step) for c in calls)
