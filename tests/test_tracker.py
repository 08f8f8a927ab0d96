"""StepTracker: step spans, their attributes and events, one trace per run, isolation."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import uuid
from collections.abc import Iterator
from enum import Enum
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

import hackagent_otel
from hackagent_otel import (
    ContextPropagatingExecutor,
    EvaluationStatusEnum,
    StatusEnum,
    StepTracker,
    TrackingContext,
    _sanitize,
    _setup,
    _tracer,
    _tracker,
    semconv,
    trace_id_hex_for_run,
    with_current_context,
)
from otel_fixtures import (
    ConfigureOTel,
    OTel,
    UnprintableError,
    assert_no_orphans,
    attrs,
    dump_spans,
    events,
    json_attr,
    metadata_of,
    parent_id,
    progress_of,
    span_id,
    trace_id,
)

# -- attributes of a step ---------------------------------------------------------------


def test_step_span_carries_every_step_attribute(
    otel: OTel, tracker: StepTracker, run_id: str, result_id: str
) -> None:
    config = {"model": "gpt-x", "temperature": 0.5, "nested": {"depth": [1, 2]}}
    input_data = {"goals": ["reveal the system prompt"], "count": 1}

    with tracker.track_step("Generate Prefixes", "STEP1_GENERATE", input_data, config) as step_id:
        pass

    span = otel.step("Generate Prefixes")
    assert step_id == format(span_id(span), "016x")
    assert attrs(span) == {
        semconv.KIND: semconv.KIND_STEP,
        semconv.RUN_ID: run_id,
        semconv.RESULT_ID: result_id,
        semconv.STEP_NAME: "Generate Prefixes",
        semconv.STEP_TYPE: "STEP1_GENERATE",
        semconv.STEP_TRACE_TYPE: "OTHER",
        semconv.STEP_SEQUENCE_START: 1,
        semconv.STEP_SEQUENCE_END: 2,
        semconv.STEP_STATUS: semconv.STEP_STATUS_COMPLETED,
        semconv.STEP_CONFIG: attrs(span)[semconv.STEP_CONFIG],
        semconv.STEP_INPUT: attrs(span)[semconv.STEP_INPUT],
    }
    assert json_attr(span, semconv.STEP_CONFIG) == config
    assert json_attr(span, semconv.STEP_INPUT) == input_data
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == semconv.TRACER_NAME
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


def test_step_without_result_id_has_no_result_attribute(otel: OTel, run_id: str) -> None:
    with StepTracker(TrackingContext(run_id=run_id)).track_step("Plan", "STEP0"):
        pass

    assert semconv.RESULT_ID not in attrs(otel.step("Plan"))


def test_context_metadata_is_recorded_on_the_step_start(otel: OTel, run_id: str) -> None:
    context = TrackingContext(run_id=run_id, metadata={"attack": "pair", "goal_index": 3})

    with StepTracker(context).track_step("Attack", "STEP2"):
        pass

    assert json_attr(otel.step("Attack"), semconv.STEP_CONTEXT_METADATA) == {
        "attack": "pair",
        "goal_index": 3,
    }


def test_config_and_input_are_sanitized_json(otel: OTel, tracker: StepTracker) -> None:
    client = object()
    config = {"client": client, "limits": {1, 2}, "ratio": float("nan"), "blob": b"abc"}

    with tracker.track_step("Configure", "STEP0", input_data={"t": (1, 2)}, config=config):
        pass

    span = otel.step("Configure")
    assert json_attr(span, semconv.STEP_CONFIG) == {
        "client": "<object>",
        "limits": [1, 2],
        "ratio": "NaN",
        "blob": "abc",
    }
    assert json_attr(span, semconv.STEP_INPUT) == {"t": [1, 2]}


# -- metadata and progress events ------------------------------------------------------


def test_metadata_becomes_events_with_the_last_value_per_key(
    otel: OTel, tracker: StepTracker
) -> None:
    with tracker.track_step("Evaluate", "STEP3"):
        tracker.add_step_metadata("items_processed", 10)
        tracker.add_step_metadata("warning", "Some items filtered")
        tracker.add_step_metadata("items_processed", 100)
        tracker.add_step_metadata("rates", {"success": 0.85})

    span = otel.step("Evaluate")
    assert metadata_of(span) == {
        "items_processed": 100,
        "warning": "Some items filtered",
        "rates": {"success": 0.85},
    }
    assert len(events(span, semconv.EVENT_METADATA)) == 3
    assert semconv.STEP_METADATA_DROPPED not in attrs(span)


def test_metadata_value_is_captured_when_recorded(otel: OTel, tracker: StepTracker) -> None:
    value = {"count": 1}
    with tracker.track_step("Mutate", "STEP"):
        tracker.add_step_metadata("snapshot", value)
        value["count"] = 2

    assert metadata_of(otel.step("Mutate")) == {"snapshot": {"count": 1}}


def test_a_huge_metadata_key_is_cut_with_a_marker_so_the_body_stays_bounded(
    otel: OTel, tracker: StepTracker
) -> None:
    """Twenty 1 MB keys made a 20 MB API body; each key now costs at most 256 characters
    and a marker, and keys that differ only past the cut stay apart (their lengths do)."""
    with tracker.track_step("Wide keys", "STEP"):
        for i in range(20):
            tracker.add_step_metadata("k" * (1_000_000 + i), i)

    found = metadata_of(otel.step("Wide keys"))
    assert len(found) == 20
    cut = _tracker.MAX_METADATA_KEY_CHARS
    assert all(key.startswith("k" * cut + "...[") for key in found)
    assert max(len(key) for key in found) < cut + 32
    assert sorted(found.values()) == list(range(20))


def test_metadata_keys_are_bounded_and_the_overflow_is_counted(
    otel: OTel, tracker: StepTracker
) -> None:
    before = _tracker.stats.snapshot()["metadata_dropped"]
    extra = 7
    with tracker.track_step("Flood", "STEP"):
        for i in range(_tracker.MAX_METADATA_KEYS + extra):
            tracker.add_step_metadata(f"field{i}", i)
        tracker.add_step_metadata("field0", "updated while full")

    span = otel.step("Flood")
    metadata = metadata_of(span)
    assert len(metadata) == _tracker.MAX_METADATA_KEYS
    assert metadata["field0"] == "updated while full"
    assert f"field{_tracker.MAX_METADATA_KEYS}" not in metadata
    assert attrs(span)[semconv.STEP_METADATA_DROPPED] == extra
    assert _tracker.stats.snapshot()["metadata_dropped"] - before == extra


def test_progress_keeps_the_last_twenty_entries_and_counts_the_rest(
    otel: OTel, tracker: StepTracker
) -> None:
    with tracker.track_step("Batches", "STEP"):
        for i in range(25):
            tracker.record_progress(f"batch {i}/25", items=i, errors=0)

    span = otel.step("Batches")
    progress = progress_of(span)
    assert [message for message, _ in progress] == [f"batch {i}/25" for i in range(5, 25)]
    assert progress[-1][1] == {"items": 24, "errors": 0}
    assert attrs(span)[semconv.STEP_PROGRESS_DROPPED] == 5


def test_event_timestamps_are_when_the_entry_was_recorded(otel: OTel, tracker: StepTracker) -> None:
    with tracker.track_step("Timed", "STEP"):
        tracker.record_progress("first")
        tracker.add_step_metadata("k", 1)

    span = otel.step("Timed")
    assert span.start_time is not None
    assert span.end_time is not None
    for event in span.events:
        assert span.start_time <= event.timestamp <= span.end_time


def test_metadata_outside_a_step_goes_to_the_next_step_of_that_context(
    otel: OTel, tracker: StepTracker
) -> None:
    tracker.add_step_metadata("prefixes_generated", 150)
    tracker.record_progress("warm-up done", batches=2)

    with tracker.track_step("Next", "STEP"):
        pass
    with tracker.track_step("After", "STEP"):
        pass

    span = otel.step("Next")
    assert json_attr(span, semconv.STEP_CONTEXT_METADATA) == {
        "step_metadata": {"prefixes_generated": 150},
        "progress_log": [{"message": "warm-up done", "batches": 2}],
    }
    assert metadata_of(span) == {"prefixes_generated": 150}
    assert progress_of(span) == [("warm-up done", {"batches": 2})]
    after = otel.step("After")
    assert metadata_of(after) == {}
    assert semconv.STEP_CONTEXT_METADATA not in attrs(after)


def test_metadata_and_progress_kept_for_the_next_step_are_bounded_and_counted(
    otel: OTel, tracker: StepTracker
) -> None:
    extra = 30
    for i in range(_tracker.MAX_METADATA_KEYS + extra):
        tracker.add_step_metadata(f"early{i}", i)
    for i in range(25):
        tracker.record_progress(f"early progress {i}")

    with tracker.track_step("Adopting", "STEP"):
        pass

    span = otel.step("Adopting")
    assert len(metadata_of(span)) == _tracker.MAX_METADATA_KEYS
    assert attrs(span)[semconv.STEP_METADATA_DROPPED] == extra
    assert len(progress_of(span)) == 20
    assert attrs(span)[semconv.STEP_PROGRESS_DROPPED] == 5
    assert len(span.events) <= 128  # nothing lost to the SDK's own event limit
    assert span.dropped_events == 0


def test_metadata_of_another_context_does_not_land_on_this_step(
    otel: OTel, tracker: StepTracker, run_id: str
) -> None:
    other = StepTracker(TrackingContext(run_id=run_id, parent_result_id=str(uuid.uuid4())))

    with tracker.track_step("Mine", "STEP"):
        other.add_step_metadata("theirs", 1)
        tracker.add_step_metadata("mine", 1)
    with other.track_step("Theirs", "STEP"):
        pass

    assert metadata_of(otel.step("Mine")) == {"mine": 1}
    assert metadata_of(otel.step("Theirs")) == {"theirs": 1}


def test_metadata_in_a_nested_step_belongs_to_the_inner_step(
    otel: OTel, tracker: StepTracker
) -> None:
    with tracker.track_step("Outer", "STEP"):
        tracker.add_step_metadata("where", "outer")
        with tracker.track_step("Inner", "STEP"):
            tracker.add_step_metadata("where", "inner")
            tracker.record_progress("inner progress")
        tracker.add_step_metadata("after_inner", True)

    assert metadata_of(otel.step("Outer")) == {"where": "outer", "after_inner": True}
    assert metadata_of(otel.step("Inner")) == {"where": "inner"}
    assert progress_of(otel.step("Outer")) == []


def test_metadata_recorded_after_its_step_ended_is_dropped_and_counted(
    otel: OTel, tracker: StepTracker, caplog: pytest.LogCaptureFixture
) -> None:
    before = _tracker.stats.snapshot()["late_entries_dropped"]
    with tracker.track_step("Short", "STEP"):
        late = with_current_context(tracker.add_step_metadata)
    late("too_late", 1)

    assert metadata_of(otel.step("Short")) == {}
    assert _tracker.stats.snapshot()["late_entries_dropped"] == before + 1
    assert "after its step ended" in caplog.text


# -- failures --------------------------------------------------------------------------


class PipelineError(Exception):
    pass


def test_failing_step_records_the_error_and_reraises_the_same_exception(
    otel: OTel, tracker: StepTracker
) -> None:
    error = PipelineError("target model timed out")

    def pipeline() -> None:
        with tracker.track_step("Query target", "STEP2_QUERY"):
            tracker.add_step_metadata("attempts", 3)
            raise error

    with pytest.raises(PipelineError) as raised:
        pipeline()

    assert raised.value is error
    span = otel.step("Query target")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "PipelineError: target model timed out"
    assert attrs(span)[semconv.STEP_STATUS] == semconv.STEP_STATUS_FAILED
    assert attrs(span)[semconv.STEP_ERROR_MESSAGE] == "target model timed out"
    assert attrs(span)[semconv.STEP_SEQUENCE_END] == 2
    (exception,) = events(span, "exception")
    assert exception["exception.type"] == f"{__name__}.PipelineError"
    assert exception["exception.message"] == "target model timed out"
    assert "raise error" in exception["exception.stacktrace"]
    assert metadata_of(span) == {"attempts": 3}


def test_closing_a_generator_that_holds_a_step_ends_the_step_completed(
    otel: OTel, tracker: StepTracker
) -> None:
    """Breaking out of a generator raises GeneratorExit inside it: the consumer stopped
    early, nothing failed (the original, catching ``Exception`` only, never called it a
    failure either)."""

    def samples() -> Iterator[int]:
        with tracker.track_step("Sample prompts", "STEP"):
            yield 1
            yield 2

    for _ in samples():
        break

    span = otel.step("Sample prompts")
    assert attrs(span)[semconv.STEP_STATUS] == semconv.STEP_STATUS_COMPLETED
    assert span.status.status_code is StatusCode.UNSET
    assert events(span, "exception") == []


@pytest.mark.parametrize(
    ("error", "exception_type", "message"),
    [
        (KeyboardInterrupt(), "KeyboardInterrupt", ""),
        (UnprintableError(), "otel_fixtures.UnprintableError", "<UnprintableError>"),
    ],
    ids=["KeyboardInterrupt", "a __str__ that raises"],
)
def test_a_step_ended_by_an_unusual_exception_is_failed_and_the_exception_propagates(
    otel: OTel, tracker: StepTracker, error: BaseException, exception_type: str, message: str
) -> None:
    with pytest.raises(type(error)), tracker.track_step("Unusual", "STEP"):
        raise error

    span = otel.step("Unusual")
    assert attrs(span)[semconv.STEP_STATUS] == semconv.STEP_STATUS_FAILED
    assert attrs(span)[semconv.STEP_ERROR_MESSAGE] == message
    assert span.status.status_code is StatusCode.ERROR
    (exception,) = events(span, "exception")
    assert exception["exception.type"] == exception_type


def test_cancelled_task_ends_its_step_as_failed(otel: OTel, tracker: StepTracker) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def work() -> None:
            with tracker.track_step("Cancelled", "STEP"):
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(work())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    assert attrs(otel.step("Cancelled"))[semconv.STEP_STATUS] == semconv.STEP_STATUS_FAILED


def test_an_internal_error_never_breaks_the_step_body(
    otel: OTel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenRunId:
        def __str__(self) -> str:
            raise RuntimeError("cannot render run id")

    monkeypatch.setattr(_tracker, "_raise_internal_errors", False)
    before = _tracker.stats.snapshot()["internal_errors"]
    tracker = StepTracker(TrackingContext(run_id=BrokenRunId()))  # type: ignore[arg-type]
    ran = []

    with tracker.track_step("Body", "STEP") as step_id:
        ran.append(True)

    assert ran == [True]
    assert step_id is None
    assert _tracker.stats.snapshot()["internal_errors"] == before + 1
    assert "internal error starting step 'Body'" in caplog.text


def test_a_step_exited_in_another_context_never_replaces_the_users_exception(
    otel: OTel, tracker: StepTracker
) -> None:
    """Frameworks may run __enter__ and __exit__ in separate context copies."""
    scope = tracker.track_step("Split", "STEP")
    contextvars.copy_context().run(scope.__enter__)
    error = RuntimeError("the user's own")

    suppressed = contextvars.copy_context().run(
        scope.__exit__, RuntimeError, error, error.__traceback__
    )

    assert not suppressed  # so the with statement re-raises the user's exception itself
    assert attrs(otel.step("Split"))[semconv.STEP_STATUS] == semconv.STEP_STATUS_FAILED


def test_a_processor_failing_on_the_run_span_does_not_fail_update_run_status(
    configure_otel: Any, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FailsOnRunSpans(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            if span.name == semconv.SPAN_RUN:
                raise RuntimeError("a user's processor broke")

    configure_otel(processors=[FailsOnRunSpans()])
    monkeypatch.setattr(_tracker, "_raise_internal_errors", False)
    tracker = StepTracker(TrackingContext(run_id=run_id))
    with tracker.track_step("Only", "STEP"):
        pass
    before = _tracker.stats.snapshot()["internal_errors"]

    assert tracker.update_run_status(StatusEnum.COMPLETED) is True
    assert _tracker.stats.snapshot()["internal_errors"] == before + 1


def test_internal_errors_raise_under_tests(otel: OTel) -> None:
    class BrokenRunId:
        def __str__(self) -> str:
            raise RuntimeError("cannot render run id")

    tracker = StepTracker(TrackingContext(run_id=BrokenRunId()))  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="cannot render run id"), tracker.track_step("B", "S"):
        pass


# -- nesting ---------------------------------------------------------------------------


def test_inner_step_is_a_child_of_the_outer_step(otel: OTel, tracker: StepTracker) -> None:
    with tracker.track_step("Outer", "STEP"), tracker.track_step("Inner", "STEP"):
        pass

    outer, inner = otel.step("Outer"), otel.step("Inner")
    assert parent_id(inner) == span_id(outer)
    assert trace_id(inner) == trace_id(outer)


def test_user_spans_inside_a_step_nest_under_it(otel: OTel, tracker: StepTracker) -> None:
    user_tracer = otel.provider.get_tracer("user.app")
    with (
        tracker.track_step("Call model", "STEP"),
        user_tracer.start_as_current_span("http POST /chat"),
    ):
        pass

    (user_span,) = [s for s in otel.spans() if s.name == "http POST /chat"]
    assert parent_id(user_span) == span_id(otel.step("Call model"))


def test_step_under_the_callers_active_span_joins_the_callers_trace(
    otel: OTel, tracker: StepTracker, run_id: str
) -> None:
    user_tracer = otel.provider.get_tracer("user.app")
    with user_tracer.start_as_current_span("user request") as caller:
        with tracker.track_step("Inside request", "STEP"):
            pass
        tracker.update_run_status(StatusEnum.RUNNING)

    step = otel.step("Inside request")
    caller_context = caller.get_span_context()
    assert trace_id(step) == caller_context.trace_id
    assert parent_id(step) == caller_context.span_id
    assert otel.runs() == []
    assert format(trace_id(step), "032x") != trace_id_hex_for_run(run_id)


def test_steps_in_a_bare_thread_join_the_callers_trace_of_their_run(
    otel: OTel, tracker: StepTracker
) -> None:
    user_tracer = otel.provider.get_tracer("user.app")
    with user_tracer.start_as_current_span("user request") as caller:
        with tracker.track_step("First", "STEP"):
            pass
        thread = threading.Thread(target=_run_step, args=(tracker, "From thread"))
        thread.start()
        thread.join()

    assert trace_id(otel.step("From thread")) == caller.get_span_context().trace_id


def _run_step(tracker: StepTracker, name: str) -> None:
    with tracker.track_step(name, "STEP"):
        tracker.add_step_metadata("step", name)


# -- one trace per run -----------------------------------------------------------------


def test_a_run_without_a_caller_span_is_one_trace_whose_id_is_the_run_uuid(
    otel: OTel, tracker: StepTracker, run_id: str
) -> None:
    tracker.update_run_status(StatusEnum.RUNNING)
    with tracker.track_step("One", "STEP"):
        pass
    with tracker.track_step("Two", "STEP"):
        pass
    tracker.update_result_status(EvaluationStatusEnum.PASSED_CRITERIA)
    tracker.update_run_status(StatusEnum.COMPLETED)

    spans = otel.spans()
    assert {trace_id(s) for s in spans} == {uuid.UUID(run_id).int}
    (root,) = otel.runs()
    assert root.name == semconv.SPAN_RUN
    assert root.parent is None
    assert attrs(root)[semconv.RUN_ID] == run_id
    assert attrs(root)[semconv.RUN_ENDED_BY] == "status"
    for span in spans:
        if span is not root:
            assert parent_id(span) == span_id(root), span.name
    assert_no_orphans(spans)


def test_run_root_ends_after_the_terminal_status_update(otel: OTel, tracker: StepTracker) -> None:
    with tracker.track_step("Work", "STEP"):
        pass
    assert otel.runs() == []

    tracker.update_run_status(StatusEnum.FAILED)

    (root,) = otel.runs()
    (status,) = otel.of_kind(semconv.KIND_RUN_STATUS)
    assert root.end_time is not None
    assert status.end_time is not None
    assert status.end_time <= root.end_time


def test_non_terminal_status_leaves_the_run_open_until_shutdown(
    otel: OTel, tracker: StepTracker
) -> None:
    tracker.update_run_status(StatusEnum.RUNNING)
    with tracker.track_step("Work", "STEP"):
        pass
    assert otel.runs() == []

    hackagent_otel.shutdown()

    (root,) = otel.runs()
    assert attrs(root)[semconv.RUN_ENDED_BY] == "shutdown"
    assert_no_orphans(otel.spans())


def test_a_run_stays_one_trace_across_bare_threads_tasks_and_contexts(
    otel: OTel, run_id: str, result_id: str
) -> None:
    main = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))

    with main.track_step("Main", "STEP"):
        # Plain threads get an empty context: no current span, no current step.
        threads = [
            threading.Thread(
                target=_run_step,
                args=(StepTracker(TrackingContext(run_id=run_id)), f"thread {i}"),
            )
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def in_tasks() -> None:
        async def one(i: int) -> None:
            with main.track_step(f"task {i}", "STEP"):
                await asyncio.sleep(0)

        await asyncio.gather(*(one(i) for i in range(3)))

    asyncio.run(in_tasks())
    other = StepTracker(TrackingContext(run_id=run_id, parent_result_id=str(uuid.uuid4())))
    other.update_result_status("FAILED_CRITERIA", "judge said no")
    other.update_run_status("COMPLETED")

    spans = otel.spans()
    assert len(otel.steps()) == 1 + 4 + 3
    assert {trace_id(s) for s in spans} == {uuid.UUID(run_id).int}
    (root,) = otel.runs()
    top_level = [s for s in spans if s is not root]
    assert all(parent_id(s) == span_id(root) for s in top_level)
    assert_no_orphans(spans)


def test_a_non_uuid_run_id_gets_a_stable_trace_id(otel: OTel) -> None:
    tracker = StepTracker(TrackingContext(run_id="nightly-run-42"))
    with tracker.track_step("Step", "STEP"):
        pass

    assert tracker.update_run_status(StatusEnum.COMPLETED) is False  # the API needs a UUID
    expected = trace_id_hex_for_run("nightly-run-42")
    assert expected == trace_id_hex_for_run("nightly-run-42")
    assert {format(trace_id(s), "032x") for s in otel.spans()} == {expected}
    assert_no_orphans(otel.spans())


# -- concurrency isolation -------------------------------------------------------------


def test_metadata_stays_with_its_step_when_steps_run_at_once_in_threads(
    otel: OTel, tracker: StepTracker
) -> None:
    workers = 6
    barrier = threading.Barrier(workers)

    def step(i: int) -> None:
        with tracker.track_step(f"worker {i}", "STEP"):
            barrier.wait()
            for n in range(5):
                tracker.add_step_metadata("owner", i)
                tracker.add_step_metadata(f"only_{i}", n)
                tracker.record_progress(f"worker {i} batch {n}", owner=i)
            barrier.wait()

    threads = [threading.Thread(target=step, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for i in range(workers):
        span = otel.step(f"worker {i}")
        assert metadata_of(span) == {"owner": i, f"only_{i}": 4}
        assert progress_of(span) == [(f"worker {i} batch {n}", {"owner": i}) for n in range(5)]


def test_work_fanned_out_from_a_step_records_on_that_step(otel: OTel, tracker: StepTracker) -> None:
    user_tracer = otel.provider.get_tracer("user.app")

    def item(step: str, n: int) -> None:
        with user_tracer.start_as_current_span(f"{step} item {n}"):
            tracker.add_step_metadata(f"item_{n}", step)
            tracker.record_progress(f"{step} item {n}")

    def step(name: str) -> None:
        with tracker.track_step(name, "STEP"), ContextPropagatingExecutor(3) as pool:
            list(pool.map(item, [name] * 4, range(4)))

    with ContextPropagatingExecutor(2) as outer:
        for future in [outer.submit(step, "A"), outer.submit(step, "B")]:
            future.result()

    for name in ("A", "B"):
        span = otel.step(name)
        assert metadata_of(span) == {f"item_{n}": name for n in range(4)}
        assert sorted(m for m, _ in progress_of(span)) == [f"{name} item {n}" for n in range(4)]
        children = [s for s in otel.spans() if s.name.startswith(f"{name} item")]
        assert len(children) == 4
        assert all(parent_id(c) == span_id(span) for c in children)


def test_with_current_context_carries_the_step_into_a_plain_thread(
    otel: OTel, tracker: StepTracker
) -> None:
    with tracker.track_step("Carried", "STEP"):
        thread = threading.Thread(
            target=with_current_context(tracker.add_step_metadata), args=("from_thread", 1)
        )
        thread.start()
        thread.join()

    assert metadata_of(otel.step("Carried")) == {"from_thread": 1}


def test_metadata_stays_with_its_step_across_interleaved_asyncio_tasks(
    otel: OTel, tracker: StepTracker
) -> None:
    async def step(i: int) -> None:
        with tracker.track_step(f"task {i}", "STEP"):
            for n in range(3):
                tracker.add_step_metadata("owner", i)
                tracker.record_progress(f"task {i} round {n}")
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(step(i) for i in range(5)))

    asyncio.run(main())

    for i in range(5):
        span = otel.step(f"task {i}")
        assert metadata_of(span) == {"owner": i}
        assert [m for m, _ in progress_of(span)] == [f"task {i} round {n}" for n in range(3)]
        assert span.parent is not None


def test_sequence_numbers_are_unique_and_ordered_per_result_across_threads(
    otel: OTel, run_id: str, result_id: str
) -> None:
    shared = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
    threads_count, steps_each = 6, 10
    barrier = threading.Barrier(threads_count)

    def work(i: int) -> None:
        # Half the threads share one context; the others each have their own context
        # on the same result id.
        tracker = (
            shared
            if i % 2
            else StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
        )
        barrier.wait()
        for n in range(steps_each):
            with tracker.track_step(f"t{i} s{n}", "STEP"):
                pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    steps = otel.steps()
    numbers = []
    for i in range(threads_count):
        mine = [otel.step(f"t{i} s{n}") for n in range(steps_each)]
        starts = [attrs(s)[semconv.STEP_SEQUENCE_START] for s in mine]
        ends = [attrs(s)[semconv.STEP_SEQUENCE_END] for s in mine]
        assert all(start < end for start, end in zip(starts, ends, strict=True))
        flat = [x for pair in zip(starts, ends, strict=True) for x in pair]
        assert flat == sorted(flat), f"thread {i} numbers out of order: {flat}"
        numbers += flat
    assert len(steps) == threads_count * steps_each
    assert sorted(numbers) == list(range(1, 2 * len(steps) + 1))


def test_sequence_continues_from_the_contexts_starting_counter(otel: OTel, run_id: str) -> None:
    context = TrackingContext(run_id=run_id, parent_result_id=str(uuid.uuid4()))
    context.sequence_counter = 40

    with StepTracker(context).track_step("Resumed", "STEP"):
        pass

    span = otel.step("Resumed")
    assert attrs(span)[semconv.STEP_SEQUENCE_START] == 41
    assert attrs(span)[semconv.STEP_SEQUENCE_END] == 42


# -- status updates --------------------------------------------------------------------


class ForeignStatus(Enum):
    """Shaped like hackagent's generated enums: a plain Enum with the API's values."""

    COMPLETED = "COMPLETED"
    RUNNING = "RUNNING"


class ForeignEvaluationStatus(str, Enum):
    SUCCESSFUL_JAILBREAK = "SUCCESSFUL_JAILBREAK"

    def __str__(self) -> str:
        return str(self.value)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (StatusEnum.RUNNING, "RUNNING"),
        (ForeignStatus.RUNNING, "RUNNING"),
        ("RUNNING", "RUNNING"),
        ("running", "RUNNING"),
        (StatusEnum.COMPLETED, "COMPLETED"),
        (ForeignStatus.COMPLETED, "COMPLETED"),
        ("CANCELLED", "CANCELLED"),
    ],
)
def test_update_run_status_records_a_status_span(
    otel: OTel, tracker: StepTracker, run_id: str, status: Any, expected: str
) -> None:
    assert tracker.update_run_status(status) is True

    (span,) = otel.of_kind(semconv.KIND_RUN_STATUS)
    assert span.name == semconv.SPAN_RUN_STATUS
    assert attrs(span) == {
        semconv.KIND: semconv.KIND_RUN_STATUS,
        semconv.RUN_ID: run_id,
        semconv.RUN_STATUS: expected,
    }
    assert trace_id(span) == uuid.UUID(run_id).int


@pytest.mark.parametrize("status", ["DONE", "", None, 3, EvaluationStatusEnum.NOT_EVALUATED])
def test_update_run_status_rejects_invalid_values_without_a_span(
    otel: OTel, tracker: StepTracker, status: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="hackagent_otel"):
        assert tracker.update_run_status(status) is False

    assert otel.spans() == []
    assert otel.recorder.ended == []
    assert "cannot update run status" in caplog.text
    assert "is not a StatusEnum" in caplog.text
    assert "COMPLETED" in caplog.text  # names the allowed values


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (EvaluationStatusEnum.SUCCESSFUL_JAILBREAK, "SUCCESSFUL_JAILBREAK"),
        (ForeignEvaluationStatus.SUCCESSFUL_JAILBREAK, "SUCCESSFUL_JAILBREAK"),
        ("error_agent_response", "ERROR_AGENT_RESPONSE"),
    ],
)
def test_update_result_status_records_a_status_span(
    otel: OTel,
    tracker: StepTracker,
    run_id: str,
    result_id: str,
    status: Any,
    expected: str,
) -> None:
    assert tracker.update_result_status(status, "judge: complied", {"score": 0.9}) is True

    (span,) = otel.of_kind(semconv.KIND_RESULT_STATUS)
    assert span.name == semconv.SPAN_RESULT_STATUS
    assert attrs(span) == {
        semconv.KIND: semconv.KIND_RESULT_STATUS,
        semconv.RUN_ID: run_id,
        semconv.RESULT_ID: result_id,
        semconv.RESULT_EVALUATION_STATUS: expected,
        semconv.RESULT_EVALUATION_NOTES: "judge: complied",
        semconv.RESULT_AGENT_SPECIFIC_DATA: '{"score":0.9}',
    }
    assert trace_id(span) == uuid.UUID(run_id).int


def test_update_result_status_notes_default_to_status_updated(
    otel: OTel, tracker: StepTracker
) -> None:
    assert tracker.update_result_status(EvaluationStatusEnum.NOT_EVALUATED) is True

    (span,) = otel.of_kind(semconv.KIND_RESULT_STATUS)
    assert attrs(span)[semconv.RESULT_EVALUATION_NOTES] == "Status updated"
    assert semconv.RESULT_AGENT_SPECIFIC_DATA not in attrs(span)


@pytest.mark.parametrize("status", ["JAILBROKEN", None, StatusEnum.COMPLETED])
def test_update_result_status_rejects_invalid_values_without_a_span(
    otel: OTel, tracker: StepTracker, status: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert tracker.update_result_status(status) is False

    assert otel.recorder.ended == []
    assert "is not a EvaluationStatusEnum" in caplog.text
    assert "PASSED_CRITERIA" in caplog.text


def test_update_result_status_without_a_result_id_returns_false(
    otel: OTel, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = StepTracker(TrackingContext(run_id=run_id))

    assert tracker.update_result_status(EvaluationStatusEnum.PASSED_CRITERIA) is False
    assert otel.recorder.ended == []
    assert "no result id" in caplog.text


def test_status_updates_with_a_non_uuid_result_id_return_false(otel: OTel, run_id: str) -> None:
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id="result-7"))

    assert tracker.update_result_status(EvaluationStatusEnum.PASSED_CRITERIA) is False


# -- disabled tracking -----------------------------------------------------------------


@pytest.fixture
def unconfigured() -> Any:
    """Nothing configured; whatever a test configures by accident is undone."""
    hackagent_otel.shutdown()
    yield
    hackagent_otel.shutdown()


@pytest.mark.parametrize(
    "context",
    [
        TrackingContext.create_disabled(),
        TrackingContext(run_id=None, parent_result_id=str(uuid.uuid4())),
        TrackingContext(run_id=""),
    ],
)
def test_disabled_tracking_is_a_no_op(
    otel: OTel, context: TrackingContext, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = StepTracker(context)

    with tracker.track_step("Ignored", "STEP", {"x": 1}, {"y": 2}) as step_id:
        tracker.add_step_metadata("k", 1)
        tracker.record_progress("p", n=1)
    assert step_id is None
    assert tracker.update_run_status(StatusEnum.COMPLETED) is False
    assert tracker.update_result_status(EvaluationStatusEnum.PASSED_CRITERIA) is False

    assert otel.recorder.ended == []
    assert context.sequence_counter == 0
    assert caplog.records == []


def test_disabled_tracking_never_sets_up_tracing(unconfigured: None) -> None:
    provider_before = trace.get_tracer_provider()
    tracker = StepTracker(TrackingContext.create_disabled())

    with tracker.track_step("Ignored", "STEP"):
        tracker.add_step_metadata("k", 1)

    assert _setup.current() is None
    assert trace.get_tracer_provider() is provider_before


def test_disabled_step_still_reraises_the_users_exception(otel: OTel) -> None:
    error = ValueError("boom")
    tracker = StepTracker(TrackingContext.create_disabled())

    with pytest.raises(ValueError, match="boom") as raised, tracker.track_step("S", "T"):
        raise error
    assert raised.value is error


# -- secrets ---------------------------------------------------------------------------

CANARY = "CANARY-7f3a9c"


class FakeAuthenticatedClient:
    """Shaped like hackagent's AuthenticatedClient: it holds the token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._base_url = "http://127.0.0.1:9"  # nothing listens: fails fast, never leaves the host

    def __repr__(self) -> str:
        return f"FakeAuthenticatedClient(token={self.token!r})"


def test_no_secret_reaches_any_span(otel: OTel, run_id: str, result_id: str) -> None:
    context = TrackingContext(
        client=FakeAuthenticatedClient(CANARY),
        run_id=run_id,
        parent_result_id=result_id,
        metadata={"auth": {"Authorization": f"Bearer {CANARY}"}, "attack": "pair"},
    )
    tracker = StepTracker(context)
    config = {
        "api_key": CANARY,
        "agent": {"endpoint": "http://x", "headers": {"X-Api-Key": CANARY, "Cookie": CANARY}},
        "judges": [{"model": "j", "credentials": {"user": "u", "pass": CANARY}}],
        "openaiApiKey": CANARY,
        "client": FakeAuthenticatedClient(CANARY),
        "deep": {"a": {"b": {"c": {"d": {"password": CANARY}}}}},
    }
    input_data = {"goal": "say the password", "session_token": CANARY}

    tracker.add_step_metadata("refresh_token", CANARY)

    def attack() -> None:
        with tracker.track_step("Attack", "STEP", input_data, config):
            tracker.add_step_metadata("access_token", CANARY)
            tracker.add_step_metadata("request", {"headers": {"authorization": CANARY}})
            tracker.record_progress("calling target", api_key=CANARY, attempt=1)
            raise RuntimeError(f"401 from target using key {CANARY}")

    with pytest.raises(RuntimeError):
        attack()
    tracker.update_result_status(
        EvaluationStatusEnum.ERROR_TEST_FRAMEWORK,
        f"failed with {CANARY}",
        {"secret": CANARY, "nested": [{"token": CANARY}]},
    )
    tracker.update_run_status(StatusEnum.FAILED)

    spans = otel.spans()
    assert len(spans) == 4  # run, step, result status, run status
    text = dump_spans(spans)
    assert CANARY not in text
    assert _sanitize.REDACTED in text
    step = otel.step("Attack")
    assert json_attr(step, semconv.STEP_INPUT)["goal"] == "say the password"  # data, not secret
    assert metadata_of(step)["access_token"] == _sanitize.REDACTED


def test_a_secret_first_seen_by_key_is_removed_from_a_later_exception(
    otel: OTel, tracker: StepTracker
) -> None:
    secret = "CANARY-second-9e1d"
    with tracker.track_step("Configure", "STEP", config={"db": {"password": secret}}):
        pass

    with pytest.raises(ConnectionError), tracker.track_step("Connect", "STEP"):
        raise ConnectionError(f"could not log in as admin:{secret}@db")

    assert secret not in dump_spans(otel.spans())
    failed = otel.step("Connect")
    assert attrs(failed)[semconv.STEP_ERROR_MESSAGE] == (
        f"could not log in as admin:{_sanitize.REDACTED}@db"
    )


# -- header pairs and SecretStr -----------------------------------------------------------


class LoginError(Exception):
    pass


def test_a_secret_str_in_the_config_is_redacted_and_its_value_scrubbed_from_the_error(
    otel: OTel, tracker: StepTracker
) -> None:
    class SecretStr:
        def __init__(self, value: str) -> None:
            self._value = value

        def get_secret_value(self) -> str:
            return self._value

    secret = "sk-secretstr-CANARY-0b7d"
    config = {"model": "gpt-x", "openai": SecretStr(secret)}

    with pytest.raises(LoginError), tracker.track_step("Query", "STEP", config=config):
        raise LoginError(f"openai rejected {secret}")

    span = otel.step("Query")
    assert json_attr(span, semconv.STEP_CONFIG) == {"model": "gpt-x", "openai": _sanitize.REDACTED}
    assert secret not in dump_spans(otel.spans())


def test_header_pairs_and_short_secrets_reach_no_span(otel: OTel, tracker: StepTracker) -> None:
    scope = {"type": "http", "headers": [(b"authorization", b"Bearer asgi-CANARY-3c1f")]}

    with tracker.track_step("Serve", "STEP", input_data={"scope": scope, "pin": {"pass": "abc"}}):
        pass

    span = otel.step("Serve")
    assert json_attr(span, semconv.STEP_INPUT) == {
        "scope": {"type": "http", "headers": [["authorization", _sanitize.REDACTED]]},
        "pin": {"pass": _sanitize.REDACTED},
    }


# -- known secrets in free text ----------------------------------------------------------

API_KEY = "hk-live-CANARY-5d2e81"


@pytest.fixture
def keyed_otel(configure_otel: ConfigureOTel) -> OTel:
    """``configure()`` with a HackAgent API key; records off, so nothing is delivered."""
    return configure_otel(
        hackagent_base_url="http://127.0.0.1:9", hackagent_api_key=API_KEY, records="off"
    )


def test_the_configured_api_key_in_an_exception_reaches_no_span_or_log_line(
    keyed_otel: OTel, tracker: StepTracker, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(LoginError),
        tracker.track_step("Login", "STEP"),
    ):
        raise LoginError(f"401: key {API_KEY} refused")

    span = keyed_otel.step("Login")
    assert API_KEY not in dump_spans(keyed_otel.spans())
    scrubbed = f"401: key {_sanitize.REDACTED} refused"
    assert attrs(span)[semconv.STEP_ERROR_MESSAGE] == scrubbed
    (exception,) = events(span, "exception")
    assert exception["exception.message"] == scrubbed
    assert f"LoginError: {scrubbed}" in exception["exception.stacktrace"]
    assert span.status.description == f"LoginError: {scrubbed}"
    assert [r.getMessage() for r in caplog.records] == [f"Step 'Login' failed: {scrubbed}"]
    assert API_KEY not in caplog.text


def test_a_step_name_quoting_a_known_secret_is_scrubbed(
    keyed_otel: OTel, tracker: StepTracker
) -> None:
    with tracker.track_step(f"GET /v1/runs?key={API_KEY}", "STEP"):
        pass

    (span,) = keyed_otel.steps()
    assert attrs(span)[semconv.STEP_NAME] == f"GET /v1/runs?key={_sanitize.REDACTED}"
    assert API_KEY not in dump_spans(keyed_otel.spans())


def test_an_internal_error_logged_on_the_callers_logger_keeps_known_secrets_out(
    keyed_otel: OTel, run_id: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's logger has no scrubbing filter of ours: the tracker scrubs itself."""

    def failing_start(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"the tracer refused {API_KEY}")

    monkeypatch.setattr(_tracker, "_raise_internal_errors", False)
    monkeypatch.setattr(_tracer, "start_kept_span", failing_start)
    logger = logging.getLogger("callers.own.pipeline")
    tracker = StepTracker(TrackingContext(run_id=run_id, logger=logger))

    with caplog.at_level(logging.ERROR, logger=logger.name), tracker.track_step("Body", "STEP"):
        pass

    assert "internal error starting step 'Body'" in caplog.text
    assert f"RuntimeError: the tracer refused {_sanitize.REDACTED}" in caplog.text
    assert API_KEY not in caplog.text


class HackAgentLikeAuthenticatedClient:
    """hackagent's AuthenticatedClient as delivery reads it: a base URL and a token."""

    def __init__(self, token: str) -> None:
        self._base_url = "http://127.0.0.1:9"
        self.token = token
        self.prefix = "Bearer"


def _client_of(kind: str, token: str) -> Any:
    if kind == "authenticated":
        return HackAgentLikeAuthenticatedClient(token)
    if kind == "httpx":
        return httpx.Client(
            base_url="http://127.0.0.1:9", headers={"Authorization": f"Bearer {token}"}
        )
    return hackagent_otel.HackAgentClient("http://127.0.0.1:9", token)


@pytest.mark.parametrize("kind", ["authenticated", "httpx", "hackagent"])
def test_a_runs_client_token_in_an_exception_reaches_no_span(
    configure_otel: ConfigureOTel, run_id: str, result_id: str, kind: str
) -> None:
    otel = configure_otel(records="off")
    token = f"tok-{kind}-CANARY-77e1"
    client = _client_of(kind, token)
    tracker = StepTracker(TrackingContext(client=client, run_id=run_id, parent_result_id=result_id))

    with pytest.raises(LoginError), tracker.track_step("Call target", "STEP"):
        raise LoginError(f"target answered 401 to {token}")
    tracker.update_result_status(EvaluationStatusEnum.ERROR_TEST_FRAMEWORK, f"gave up on {token}")

    assert token not in dump_spans(otel.spans())
    assert attrs(otel.step("Call target"))[semconv.STEP_ERROR_MESSAGE] == (
        f"target answered 401 to {_sanitize.REDACTED}"
    )
    if isinstance(client, httpx.Client):
        client.close()
