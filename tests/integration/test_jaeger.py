"""A pipeline sends its spans straight to Jaeger over OTLP; the run's timeline is there.

The pipeline runs as its own process (``_pipeline_app.py``), pointed at Jaeger only by
the standard ``OTEL_EXPORTER_OTLP_*`` variables, and exits without flushing by hand.
"""

from __future__ import annotations

import uuid

import pytest

from hackagent_otel import semconv

from ._otel_processes import Jaeger
from ._timeline import assert_run_timeline, is_complete_run, parse_trace
from .conftest import app_env, run_pipeline_app

pytestmark = pytest.mark.integration


def _service() -> str:
    return f"pipeline-{uuid.uuid4().hex[:8]}"


def test_run_timeline_in_jaeger_over_otlp_grpc(jaeger: Jaeger) -> None:
    service = _service()
    canary = f"CANARY-{uuid.uuid4().hex}"
    env = app_env(service, jaeger.otlp_grpc_url, "grpc")

    [run] = run_pipeline_app(env, "--canary", canary)

    trace = jaeger.api.wait_for_trace(run.trace_id, until=is_complete_run)
    assert_run_timeline(
        trace, run_id=run.run_id, result_id=run.result_id, service=service, canary=canary
    )


def test_each_run_is_one_trace_found_by_its_run_id(jaeger: Jaeger) -> None:
    service = _service()
    env = app_env(service, jaeger.otlp_http_url, "http/protobuf")

    runs = run_pipeline_app(env, "--runs", "2")

    assert len(runs) == 2
    for run in runs:
        jaeger.api.wait_for_trace(run.trace_id, until=is_complete_run)
    assert service in jaeger.api.services()
    # Everything the process sent is in these two traces: no span started a trace of its own.
    all_traces = jaeger.api.find_traces(service)
    assert sorted(t["traceID"] for t in all_traces) == sorted(run.trace_id for run in runs)
    for run in runs:
        found = jaeger.api.find_traces(service, tags={semconv.RUN_ID: run.run_id})
        # The tag search finds the run's one trace (Jaeger returns each matching trace once).
        assert [t["traceID"] for t in found] == [run.trace_id]
        spans = parse_trace(found[0])
        steps = [s for s in spans if s.tags.get(semconv.KIND) == semconv.KIND_STEP]
        assert {s.tags[semconv.RUN_ID] for s in steps} == {run.run_id}
        assert len(steps) == 4
    assert jaeger.api.find_traces(service, tags={semconv.RUN_ID: str(uuid.uuid4())}) == []


def test_secret_canary_never_reaches_jaeger(jaeger: Jaeger) -> None:
    service = _service()
    canary = f"CANARY-{uuid.uuid4().hex}"
    env = app_env(service, jaeger.otlp_http_url, "http/protobuf")

    [run] = run_pipeline_app(env, "--canary", canary)

    trace = jaeger.api.wait_for_trace(run.trace_id, until=is_complete_run)
    # The secrets were sent (as redacted values), so the search below is not vacuous.
    generate = next(s for s in parse_trace(trace) if s.name == "Generate")
    assert "***REDACTED***" in generate.tags[semconv.STEP_CONFIG]
    assert canary not in jaeger.api.raw_trace(run.trace_id)
    assert canary not in jaeger.api.raw_search(service)
