"""SDK hooks: run trace ids, and HackAgent spans recorded whatever the user's sampler says."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from hackagent_otel import StatusEnum, StepTracker, TrackingContext, _tracer, semconv
from hackagent_otel._sdk_hooks import RecordHackAgentSpans, RunTraceIdGenerator, adapt_tracer
from otel_fixtures import ConfigureOTel, attrs, metadata_of, trace_id

DROPPING_SAMPLERS = {
    "always_off": ALWAYS_OFF,
    "ratio_0": TraceIdRatioBased(0),
    "parent_based_off": ParentBased(ALWAYS_OFF),
}


def test_pinned_trace_id_is_used_only_inside_the_pin() -> None:
    generator = RunTraceIdGenerator(RandomIdGenerator())

    with _tracer.pinned_trace_id(0xABC):
        assert generator.generate_trace_id() == 0xABC
        assert generator.is_trace_id_random() is False
    assert generator.generate_trace_id() != 0xABC
    assert generator.is_trace_id_random() is True
    assert generator.generate_span_id() != 0


def test_record_hackagent_spans_keeps_only_our_dropped_spans_as_record_only() -> None:
    sampler = RecordHackAgentSpans(ALWAYS_OFF)
    ours = {semconv.KIND: semconv.KIND_STEP, semconv.STEP_NAME: "s"}

    kept = sampler.should_sample(None, 1, "step", attributes=ours)
    dropped = sampler.should_sample(None, 1, "user span", attributes={"http.method": "GET"})

    assert kept.decision is Decision.RECORD_ONLY
    assert dict(kept.attributes) == ours
    assert dropped.decision is Decision.DROP
    sampled = RecordHackAgentSpans(ALWAYS_ON).should_sample(None, 1, "s", attributes=ours)
    assert sampled.decision is Decision.RECORD_AND_SAMPLE
    assert sampler.get_description() == "RecordHackAgentSpans{AlwaysOffSampler}"


def test_adapt_tracer_wraps_once_and_leaves_other_tracers_alone() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer = provider.get_tracer("ours")
    adapt_tracer(tracer)
    adapt_tracer(tracer)

    assert isinstance(tracer.sampler, RecordHackAgentSpans)  # type: ignore[attr-defined]
    assert not isinstance(tracer.sampler.inner, RecordHackAgentSpans)  # type: ignore[attr-defined]
    assert isinstance(tracer.id_generator, RunTraceIdGenerator)  # type: ignore[attr-defined]
    assert provider.sampler is ALWAYS_OFF
    assert not isinstance(provider.get_tracer("user").sampler, RecordHackAgentSpans)  # type: ignore[attr-defined]
    adapt_tracer(trace.NoOpTracer())  # not an SDK tracer: nothing to do, no error


@pytest.mark.parametrize("sampler", DROPPING_SAMPLERS.values(), ids=DROPPING_SAMPLERS.keys())
def test_our_spans_reach_processors_when_the_user_sampler_drops_them(
    configure_otel: ConfigureOTel, sampler: Sampler
) -> None:
    batch_exporter = InMemorySpanExporter()
    otel = configure_otel(sampler=sampler, processors=[BatchSpanProcessor(batch_exporter)])
    run_id = str(uuid.uuid4())
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=str(uuid.uuid4())))
    user_tracer = otel.provider.get_tracer("user.app")

    with tracker.track_step("Sampled out", "STEP", config={"model": "m"}):
        tracker.add_step_metadata("count", 3)
        with user_tracer.start_as_current_span("user span inside"):
            pass
    with user_tracer.start_as_current_span("user span outside"):
        pass
    tracker.update_run_status(StatusEnum.COMPLETED)
    otel.provider.force_flush()

    # Processors see our spans, complete: routing attributes, events, run trace id.
    recorded = {s.name: s for s in otel.recorder.ended}
    assert set(recorded) == {"Sampled out", semconv.SPAN_RUN_STATUS, semconv.SPAN_RUN}
    step = recorded["Sampled out"]
    assert attrs(step)[semconv.KIND] == semconv.KIND_STEP
    assert attrs(step)[semconv.RUN_ID] == run_id
    assert attrs(step)[semconv.STEP_SEQUENCE_START] == 1
    assert attrs(step)[semconv.STEP_CONFIG] == '{"model":"m"}'
    assert metadata_of(step) == {"count": 3}
    assert attrs(recorded[semconv.SPAN_RUN_STATUS])[semconv.RUN_STATUS] == "COMPLETED"
    assert {trace_id(s) for s in recorded.values()} == {uuid.UUID(run_id).int}
    assert all(not s.context.trace_flags.sampled for s in recorded.values())
    # Exporters behind the SDK's processors export only what the user sampled: nothing.
    assert otel.spans() == []
    assert batch_exporter.get_finished_spans() == ()


def test_user_spans_are_unaffected_by_our_sampler(configure_otel: ConfigureOTel) -> None:
    otel = configure_otel(sampler=ALWAYS_OFF)
    tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4())))
    with tracker.track_step("Ours", "STEP"):
        pass
    user_span = otel.provider.get_tracer("user.app").start_span("user")

    assert not user_span.is_recording()
    user_span.end()
    assert [s.name for s in otel.recorder.ended] == ["Ours"]


def test_sampled_runs_are_exported_as_usual(configure_otel: ConfigureOTel) -> None:
    otel = configure_otel(sampler=ALWAYS_ON)
    tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4())))
    with tracker.track_step("Kept", "STEP"):
        pass

    assert [s.name for s in otel.spans()] == ["Kept"]
    assert otel.spans()[0].context.trace_flags.sampled
