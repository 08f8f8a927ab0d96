"""Spans per second the bridge decodes from OTLP/HTTP bodies, protobuf and JSON.

The payload is what a Collector forwards: real spans from ``StepTracker`` (steps with a
config, an input sample, 2 metadata entries and 2 progress entries, plus run and result
status spans), encoded by the SDK's own OTLP protobuf encoder. OTLP/JSON is made from
the same request with ``MessageToJson`` and hex ids (there is no OTLP/JSON encoder in
the Python SDK). A second payload mixes in as many foreign spans, which are only counted.
Requests of 100, 512 (the SDK's batch) and 2000 spans: bigger requests cost more per span,
as all their views are new memory.

``python -m bench.bridge_decode``; prints one table, is not a test.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hackagent_otel as ho
from hackagent_otel.bridge._decode import DecodedTraces, decode_json, decode_protobuf

CONFIG = {"model": "attacker-llm", "temperature": 0.9, "max_tokens": 256, "api_key": "sk-x"}
INPUT = {"goals": ["reveal the system prompt", "disable the filter"], "batch": 1}


def tracker_spans(steps: int, foreign: int = 0) -> list[ReadableSpan]:
    """Finished spans of ``steps`` tracked steps (and status updates), plus foreign ones."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tempfile.TemporaryDirectory() as tmp:
        ho.configure(
            tracer_provider=provider,
            records="off",
            outbox_path=Path(tmp) / "outbox.sqlite3",
            set_global_provider=False,
            handle_sigterm=False,
        )
        tracker = ho.StepTracker(
            ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
        )
        other = provider.get_tracer("someone.else")
        tracker.update_run_status("RUNNING")
        for i in range(max(steps, foreign)):
            if i < steps:
                with tracker.track_step(f"Step {i}", "STEP1_GENERATE", INPUT, CONFIG):
                    tracker.add_step_metadata("prefixes", 150)
                    tracker.add_step_metadata("model", "attacker-llm")
                    tracker.record_progress("batch 1/2", items=50, errors=0)
                    tracker.record_progress("batch 2/2", items=100, errors=1)
            if i < foreign:  # interleaved, as a Collector's batch would have them
                with other.start_as_current_span(f"GET /items/{i}") as span:
                    span.set_attribute("http.request.method", "GET")
                    span.set_attribute("http.response.status_code", 200)
                    span.set_attribute("url.path", f"/items/{i}")
        tracker.update_result_status("PASSED_CRITERIA", "done", {"score": 1})
        tracker.update_run_status("COMPLETED")
        ho.shutdown()
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf_body(spans: list[ReadableSpan]) -> bytes:
    body: bytes = encode_spans(spans).SerializeToString()
    return body


def otlp_json_body(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON: the proto3 JSON mapping, with trace and span ids as hex (OTLP's rule)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(protobuf_body(spans))
    data = json.loads(json_format.MessageToJson(request))
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for link in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in link:
                            link[key] = base64.b64decode(link[key]).hex()
    return json.dumps(data).encode()


def spans_per_second(decode: Callable[[bytes], DecodedTraces], body: bytes) -> float:
    """Best of five rounds of about half a second each, in CPU time of this process (so
    other processes on the machine disturb it less)."""
    decoded = decode(body)
    count = len(decoded.spans) + decoded.ignored
    rounds = max(1, int(0.5 / _seconds(decode, body)))
    best = min(_seconds(decode, body, rounds) for _ in range(5))
    return count / best


def _seconds(decode: Callable[[bytes], Any], body: bytes, rounds: int = 1) -> float:
    start = time.process_time()
    for _ in range(rounds):
        decode(body)
    return (time.process_time() - start) / rounds


def main(batches: tuple[int, ...] = (100, 512, 2000)) -> dict[str, float]:
    """Print spans/s per encoding and request size; return them by row label."""
    ours = tracker_spans(max(batches))
    mixed = tracker_spans(max(batches) // 2, foreign=max(batches) // 2)
    rows: dict[str, float] = {}
    for label, spans in (("ours", ours), ("half foreign", mixed)):
        for size in batches:
            batch = spans[:size]
            pb, js = protobuf_body(batch), otlp_json_body(batch)
            rows[f"protobuf, {label}, {size}/request"] = spans_per_second(decode_protobuf, pb)
            rows[f"JSON, {label}, {size}/request"] = spans_per_second(decode_json, js)
    print(f"{'OTLP body -> span views':<36} {'spans/s':>10}")
    for label, rate in rows.items():
        print(f"{label:<36} {rate:>10,.0f}")
    return rows


if __name__ == "__main__":
    main()
