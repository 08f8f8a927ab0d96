"""HackAgentSpanProcessor: live start records, off the pipeline's thread, never lost."""

from __future__ import annotations

import gc
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler

from hackagent_otel import (
    HackAgentClient,
    HackAgentSpanExporter,
    StepTracker,
    TrackingContext,
    _tracer,
    semconv,
)
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.outcome import Transient
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._processor import LIVE_PROCESSORS, HackAgentSpanProcessor, RecordSink
from hackagent_otel._records import Request
from hackagent_otel._runs import runs
from hackagent_otel.testing import FakeHackAgentAPI, Fault
from otel_fixtures import ListSink


class Route:
    """Every run to one sink (what SinkRouter does for a single target)."""

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink

    def __call__(self, run_id: str) -> RecordSink:
        return self.sink

    def sinks(self) -> list[RecordSink]:
        return [self.sink]


MakeProcessor = Callable[..., HackAgentSpanProcessor]


@pytest.fixture
def make_processor(clean_env: None) -> Iterator[MakeProcessor]:
    """A processor on a fresh provider that our tracker draws its spans from."""
    made: list[tuple[TracerProvider, HackAgentSpanProcessor]] = []

    def make(
        sink_for_run: Callable[[str], RecordSink | None],
        sampler: Sampler | None = None,
        **kwargs: int,
    ) -> HackAgentSpanProcessor:
        provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
        processor = HackAgentSpanProcessor(sink_for_run, **kwargs)
        provider.add_span_processor(processor)
        _tracer.source.use_provider(provider)
        made.append((provider, processor))
        return processor

    yield make
    for provider, processor in made:
        processor.shutdown(1_000)
        provider.shutdown()
    _tracer.source.reset()


def new_tracker(result_id: str | None = None) -> StepTracker:
    return StepTracker(
        TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=result_id or str(uuid.uuid4()))
    )


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_steps_start_record_is_submitted_while_the_step_runs(
    make_processor: MakeProcessor,
) -> None:
    sink = ListSink()
    make_processor(sink)
    tracker = new_tracker()

    with tracker.track_step("Long", "STEP", config={"k": 1}):
        assert wait_until(lambda: sink.contents() == ["Long"], timeout=1.0)

    assert wait_until(lambda: sink.contents() == ["Long", "Long (Summary)"])
    assert [r.body["sequence"] for r in sink.records] == [1, 2]


def test_records_of_one_result_are_submitted_in_sequence_order(
    make_processor: MakeProcessor,
) -> None:
    sink = ListSink()
    processor = make_processor(sink)
    tracker = new_tracker()
    with tracker.track_step("Outer", "STEP"):
        for i in range(20):
            with tracker.track_step(f"Inner {i}", "STEP"):
                pass
    assert processor.force_flush(2_000)

    sequences = [r.body["sequence"] for r in sink.records]
    assert sequences == sorted(sequences) == list(range(1, 43))


def test_spans_keep_a_whole_copy_only_while_a_processor_or_exporter_of_ours_is_alive(
    make_processor: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With records off (made by a Collector and the bridge, or nowhere) a copy of each
    span kept for the records would only cost the step and hold memory for no one."""
    monkeypatch.setattr(_tracer, "_takers", weakref.WeakSet())  # none of other tests'
    _tracer.source.use_provider(TracerProvider())
    tracker = new_tracker()
    with tracker.track_step("Alone", "STEP"):
        assert _tracer.kept_for(trace.get_current_span()) is None

    processor = make_processor(ListSink())
    with tracker.track_step("Taken", "STEP", config={"k": 1}):
        kept = _tracer.kept_for(trace.get_current_span())
        assert kept is not None
        assert kept.attributes[semconv.STEP_NAME] == "Taken"

    processor.shutdown(1_000)
    with tracker.track_step("Alone again", "STEP"):
        assert _tracer.kept_for(trace.get_current_span()) is None


def test_records_do_not_depend_on_the_users_sampler(make_processor: MakeProcessor) -> None:
    sink = ListSink()
    processor = make_processor(sink, sampler=ALWAYS_OFF)

    with new_tracker().track_step("Dropped by the sampler", "STEP"):
        pass
    assert processor.force_flush(2_000)

    assert sink.contents() == ["Dropped by the sampler", "Dropped by the sampler (Summary)"]


def test_spans_that_are_not_ours_are_ignored(make_processor: MakeProcessor) -> None:
    sink = ListSink()
    processor = make_processor(sink)

    with _tracer.source.provider.get_tracer("user").start_as_current_span("user work"):
        pass
    assert processor.force_flush(2_000)

    assert sink.records == []
    assert processor.stats()["spans"] == 0


def test_a_run_routed_to_no_sink_makes_no_records(make_processor: MakeProcessor) -> None:
    processor = make_processor(lambda run_id: None)

    with new_tracker().track_step("Elsewhere", "STEP"):
        pass
    assert processor.force_flush(2_000)

    assert processor.stats()["records"] == 0
    assert processor.stats()["spans"] == 1


def test_a_span_that_cannot_be_mapped_is_counted_not_raised(
    make_processor: MakeProcessor,
) -> None:
    sink = ListSink()
    processor = make_processor(sink)
    tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4()), parent_result_id="not-a-uuid"))

    with tracker.track_step("Bad result id", "STEP"):
        pass
    assert processor.force_flush(2_000)

    assert sink.records == []
    assert processor.stats()["unmappable"] == 2  # its start and its end


def test_a_full_backlog_maps_on_the_callers_thread_without_losing_records(
    make_processor: MakeProcessor,
) -> None:
    sink = ListSink()
    processor = make_processor(sink, max_backlog=0)

    with new_tracker().track_step("Inline", "STEP"):
        pass

    assert sink.contents() == ["Inline", "Inline (Summary)"]  # no flush needed
    # The caller maps what the mapping thread has not already taken (the thread starts
    # with the first span and may take it first).
    assert processor.stats()["mapped_inline"] >= 1


def test_steps_in_many_threads_all_reach_the_sink_before_shutdown_returns(
    make_processor: MakeProcessor,
) -> None:
    sink = ListSink()
    processor = make_processor(sink)

    def work() -> None:
        tracker = new_tracker()
        for i in range(50):
            with tracker.track_step(f"Step {i}", "STEP"):
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    processor.shutdown(5_000)

    assert len(sink.records) == 8 * 50 * 2
    assert processor.stats()["backlog"] == 0


def test_a_processor_dropped_without_shutdown_maps_its_spans_is_collected_and_no_longer_deferred_to(
    clean_env: None,
) -> None:
    # Neither its mapping thread nor its fork hook keeps a processor alive.
    gc.collect()
    assert not LIVE_PROCESSORS, "a previous test left a live HackAgentSpanProcessor"
    sink, finished = ListSink(), InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(finished))
    processor = HackAgentSpanProcessor(sink)
    provider.add_span_processor(processor)
    dropped = weakref.ref(processor)
    _tracer.source.use_provider(provider)
    try:
        tracker = new_tracker()
        for i in range(50):
            with tracker.track_step(f"Step {i}", "STEP"):
                pass
        runs.end_all("test")  # an open run's root span holds the provider
    finally:
        _tracer.source.reset()
    del processor, provider

    assert wait_until(lambda: gc.collect() >= 0 and dropped() is None, timeout=5.0)
    assert len(sink.contents()) == 50 * 2  # what it was given was mapped first
    assert not LIVE_PROCESSORS
    late = ListSink()
    HackAgentSpanExporter(late).export(finished.get_finished_spans())
    assert late.contents() == sink.contents()  # the exporter maps them itself now


def test_shutdown_hands_the_time_left_to_the_sinks(make_processor: MakeProcessor) -> None:
    sink = ListSink()
    processor = make_processor(sink)
    with new_tracker().track_step("Step", "STEP"):
        pass

    processor.shutdown(2_000)

    assert sink.shut_down_with is not None
    assert sink.shut_down_with > 1.5
    assert processor not in LIVE_PROCESSORS


def test_shutdown_with_a_hanging_api_returns_within_its_timeout_and_keeps_the_records(
    make_processor: MakeProcessor, fake_api: FakeHackAgentAPI, outbox_path: Path
) -> None:
    fake_api.inject(Fault.hang(), times=None)
    service = DeliveryService(
        HackAgentClient(fake_api.base_url, fake_api.api_key), outbox_path=outbox_path
    )
    processor = make_processor(Route(service))
    tracker = new_tracker()
    for i in range(3):
        with tracker.track_step(f"Step {i}", "STEP"):
            pass
    assert fake_api.wait_for(1, 2.0)

    started = time.monotonic()
    processor.shutdown(1_000)
    took = time.monotonic() - started

    assert took < 1.5
    with Outbox(outbox_path) as outbox:
        assert outbox.counts().pending == 6
    fake_api.clear_faults()


def test_force_flush_returns_only_once_records_are_in_the_outbox_when_the_api_is_down(
    make_processor: MakeProcessor, outbox_path: Path
) -> None:
    writing = threading.Event()

    class Down:
        def send(self, request: Request) -> Transient:
            time.sleep(0.1)  # the summary record queues up behind the start meanwhile
            return Transient("connection refused")

        def close(self) -> None:
            pass

    class SlowOutbox(Outbox):
        def put_many(self, calls: Any, *args: Any, **kwargs: Any) -> list[int]:
            if len(calls) == 2:
                writing.set()
            time.sleep(0.3)
            return super().put_many(calls, *args, **kwargs)

    outbox = SlowOutbox(outbox_path)
    service = DeliveryService(Down(), outbox, policy=RetryPolicy(max_elapsed=0.0))
    processor = make_processor(Route(service))
    with new_tracker().track_step("Step", "STEP"):
        pass
    assert writing.wait(2.0)  # both records are on their way to the outbox now

    assert processor.force_flush(5_000)
    committed = Outbox(outbox_path)
    try:
        assert committed.counts().pending == 2
    finally:
        committed.close()
        service.shutdown(2.0)
        outbox.close()
