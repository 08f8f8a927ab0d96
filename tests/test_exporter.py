"""HackAgentSpanExporter: finished spans -> start + summary records, from OTel's plumbing."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk._configuration import _import_exporters
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult as Result
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

import hackagent_otel
from apps.scenario import (
    SCENARIO_RECORDS,
    expected_result_calls,
    expected_run_calls,
    run_seed_scenario,
)
from hackagent_otel import HackAgentSpanExporter, StepTracker, TrackingContext, _tracer, semconv
from hackagent_otel._processor import LIVE_PROCESSORS
from hackagent_otel.testing import FakeHackAgentAPI
from otel_fixtures import ListSink, OTel, api_calls

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture
def exporting_provider(clean_env: None) -> Iterator[TracerProvider]:
    """A provider our tracker draws from, with no HackAgentSpanProcessor anywhere."""
    gc.collect()
    assert not LIVE_PROCESSORS, "a previous test left a live HackAgentSpanProcessor"
    provider = TracerProvider()
    _tracer.source.use_provider(provider)
    yield provider
    provider.shutdown()
    _tracer.source.reset()


def new_ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def test_finished_spans_in_a_batch_processor_become_the_originals_calls(
    exporting_provider: TracerProvider,
) -> None:
    sink = ListSink()
    exporting_provider.add_span_processor(BatchSpanProcessor(HackAgentSpanExporter(sink)))
    run_id, result_id = new_ids()

    run_seed_scenario(StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id)))
    assert exporting_provider.force_flush(5_000)

    assert sink.calls(f"/result/{result_id}") == expected_result_calls(result_id)
    assert sink.calls(f"/run/{run_id}") == expected_run_calls(run_id)


def test_span_limits_cut_the_exported_spans_but_not_their_records(
    exporting_provider: TracerProvider,
) -> None:
    """The exporter takes what the tracker kept whole, as the processor does: the
    tracker keeps it while an exporter of ours is alive, with no processor anywhere."""
    sink = ListSink()
    limited = TracerProvider(span_limits=SpanLimits(max_attribute_length=64))
    limited.add_span_processor(SimpleSpanProcessor(HackAgentSpanExporter(sink)))
    spans = InMemorySpanExporter()
    limited.add_span_processor(SimpleSpanProcessor(spans))
    _tracer.source.use_provider(limited)
    run_id, result_id = new_ids()
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))

    with tracker.track_step("Long", "STEP", config={"prompt": "x" * 200}):
        pass
    limited.force_flush()

    (start, _) = sink.records
    assert start.body["content"]["config_snapshot"] == {"prompt": "x" * 200}
    (span,) = spans.get_finished_spans()
    assert len(str((span.attributes or {})[semconv.STEP_CONFIG])) == 64  # the span was cut
    limited.shutdown()


def test_export_never_raises_and_maps_the_rest_of_the_batch(
    exporting_provider: TracerProvider,
) -> None:
    sink = ListSink()
    exporter = HackAgentSpanExporter(sink)
    finished = InMemorySpanExporter()
    exporting_provider.add_span_processor(SimpleSpanProcessor(finished))
    run_id, result_id = new_ids()
    with StepTracker(TrackingContext(None, run_id, result_id)).track_step("Good", "STEP"):
        pass
    (good,) = [s for s in finished.get_finished_spans() if s.name == "Good"]
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    bad_sequence = ReadableSpan(
        name="Bad sequence",
        context=context,
        attributes={
            semconv.KIND: semconv.KIND_STEP,
            semconv.RUN_ID: str(uuid.uuid4()),
            semconv.RESULT_ID: str(uuid.uuid4()),
            semconv.STEP_SEQUENCE_START: "one",
        },
    )

    class Exploding:
        name = "exploding"

        @property
        def attributes(self) -> Any:
            raise RuntimeError("attributes unavailable")

    result = exporter.export([bad_sequence, Exploding(), good])  # type: ignore[list-item]

    assert result is Result.SUCCESS
    assert [r.body["content"]["step_name"] for r in sink.records] == ["Good", "Good (Summary)"]
    assert exporter.counters.snapshot()["unmappable"] == 2


def test_export_after_shutdown_fails_without_raising(exporting_provider: TracerProvider) -> None:
    sink = ListSink()
    exporter = HackAgentSpanExporter(sink)
    exporter.shutdown()
    exporter.shutdown()

    assert exporter.export([]) is Result.FAILURE
    assert sink.shut_down == 1


def test_with_configure_in_the_process_the_exporter_leaves_spans_to_the_processor(
    configure_api: Any, fake_api: FakeHackAgentAPI
) -> None:
    sink = ListSink()
    exporter = HackAgentSpanExporter(sink)
    otel: OTel = configure_api(processors=[SimpleSpanProcessor(exporter)])
    run_id, result_id = new_ids()

    run_seed_scenario(StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id)))
    assert hackagent_otel.force_flush(5_000)

    assert sink.records == []
    assert len(fake_api.calls) == SCENARIO_RECORDS
    assert fake_api.duplicate_traces() == []
    assert otel.steps()  # the spans themselves still went to the user's exporters


def test_the_entry_point_loads_the_exporter_and_env_vars_alone_configure_it(
    exporting_provider: TracerProvider,
    fake_api: FakeHackAgentAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (entry_point,) = importlib.metadata.entry_points(
        group="opentelemetry_traces_exporter", name="hackagent"
    )
    assert entry_point.load() is HackAgentSpanExporter
    span_exporters, _, _ = _import_exporters(["hackagent"], [], [])
    assert span_exporters == {"hackagent": HackAgentSpanExporter}
    monkeypatch.setenv("HACKAGENT_BASE_URL", fake_api.base_url)
    monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)

    exporter = span_exporters["hackagent"]()
    exporting_provider.add_span_processor(BatchSpanProcessor(exporter))
    run_id, result_id = new_ids()
    run_seed_scenario(StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id)))
    assert exporting_provider.force_flush(5_000)

    assert fake_api.wait_for(SCENARIO_RECORDS, 5.0)
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)


def test_otel_traces_exporter_hackagent_delivers_from_a_process_configured_by_env_vars(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HACKAGENT_", "OTEL_"))}
    env.update(
        OTEL_TRACES_EXPORTER="hackagent",
        HACKAGENT_BASE_URL=fake_api.base_url,
        HACKAGENT_API_KEY=fake_api.api_key,
        HACKAGENT_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"),
    )
    run_id, result_id = new_ids()

    done = subprocess.run(
        [sys.executable, str(APPS / "pipeline.py"), "env-exporter", run_id, result_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert fake_api.wait_for(SCENARIO_RECORDS, 2.0)
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)


# -- our own HTTP calls are never traced ------------------------------------------------


class HttpxInstrumentation:
    """What an httpx instrumentation does: a client span per request, unless the
    context says instrumentation is suppressed."""

    def __init__(self, provider: TracerProvider, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tracer = provider.get_tracer("fake.httpx.instrumentation")
        self.seen: list[tuple[str, bool, str]] = []
        self.lock = threading.Lock()
        original = httpx.Client.send

        def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            suppressed = bool(
                otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY)
                and otel_context.get_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY)
            )
            with self.lock:
                self.seen.append((str(request.url), suppressed, threading.current_thread().name))
            if suppressed:
                return original(client, request, **kwargs)
            with self.tracer.start_as_current_span(f"HTTP {request.method}"):
                return original(client, request, **kwargs)

        monkeypatch.setattr(httpx.Client, "send", send)


def test_deliverys_http_calls_are_made_with_instrumentation_suppressed(
    configure_api: Any, fake_api: FakeHackAgentAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    otel: OTel = configure_api()
    instrumentation = HttpxInstrumentation(otel.provider, monkeypatch)
    headers = {"Authorization": f"Bearer {fake_api.api_key}"}
    user_client = httpx.Client(base_url=fake_api.base_url, headers=headers)
    default_ids, client_ids = new_ids(), new_ids()

    run_seed_scenario(StepTracker(TrackingContext(None, *default_ids)))
    run_seed_scenario(StepTracker(TrackingContext(user_client, *client_ids)))
    assert hackagent_otel.force_flush(5_000)
    user_client.get("/_user/own/call")  # the user's own calls are traced as usual
    user_client.close()

    ours = [s for s in instrumentation.seen if "/_user/" not in s[0]]
    assert len(ours) == 2 * SCENARIO_RECORDS
    assert all(suppressed for _, suppressed, _ in ours)
    http_spans = [s for s in otel.recorder.ended if s.name.startswith("HTTP ")]
    assert [s.name for s in http_spans] == ["HTTP GET"]
