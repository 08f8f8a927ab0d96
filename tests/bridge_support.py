"""Helpers for the bridge tests: real spans as OTLP bodies, and a bridge served by uvicorn.

* :func:`scenario_spans` runs the seed scenario (optionally with a nested step) with
  our tracker on a private SDK provider and returns the finished spans;
* :func:`otlp_protobuf` / :func:`otlp_json` encode spans as the SDK's OTLP exporter does
  (and as OTLP/JSON, hex ids and all);
* :class:`ServedBridge` serves :func:`hackagent_otel.bridge.build_app` with uvicorn, as
  ``hackagent-otel bridge`` configures it, on a free loopback port in a background
  thread: the app is driven over real HTTP.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apps.attack_scenario import run_attack_scenario
from apps.scenario import run_seed_scenario
from hackagent_otel import StepTracker, TrackingContext, _tracer
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel.bridge import BridgeApp, BridgePipeline, BridgeSettings, build_app
from hackagent_otel.bridge._server import uvicorn_config, uvicorn_server

#: Retries fast enough for tests.
FAST = RetryPolicy(initial_backoff=0.01, multiplier=2, max_backoff=0.05, max_elapsed=0.2)


@contextmanager
def private_provider() -> Iterator[InMemorySpanExporter]:
    """Our tracker draws from a fresh provider whose finished spans land in memory."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracer.source.use_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _tracer.source.reset()


def scenario_spans(run_id: str, result_id: str, *, nested: bool = False) -> list[ReadableSpan]:
    """Finished spans of the seed scenario (plus, with ``nested``, a step inside a step)."""
    with private_provider() as exporter:
        tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
        if nested:
            with tracker.track_step("Outer", "STEP0_OUTER"):  # noqa: SIM117
                with tracker.track_step("Inner", "STEP0_INNER"):
                    tracker.add_step_metadata("depth", 2)
        run_seed_scenario(tracker)
        return list(exporter.get_finished_spans())


def attack_spans(run_id: str) -> list[ReadableSpan]:
    """Finished spans of the per-goal attack scenario, made by an app with no client."""
    with private_provider() as exporter:
        run_attack_scenario(None, run_id)
        return list(exporter.get_finished_spans())


def foreign_spans(count: int) -> list[ReadableSpan]:
    """Spans of someone else's instrumentation: no ``hackagent.*`` attributes."""
    with private_provider() as exporter:
        tracer = _tracer.source.provider.get_tracer("someone.else")
        for i in range(count):
            with tracer.start_as_current_span(f"GET /items/{i}") as span:
                span.set_attribute("http.method", "GET")
        return list(exporter.get_finished_spans())


def otlp_protobuf(spans: Sequence[ReadableSpan]) -> bytes:
    """An ``ExportTraceServiceRequest`` as the SDK's OTLP/HTTP exporter sends it."""
    return bytes(encode_spans(spans).SerializeToString())


def otlp_json_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The same request as OTLP/JSON: lowerCamelCase fields, hex trace and span ids."""
    data: dict[str, Any] = MessageToDict(encode_spans(spans))
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return data


def new_ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def make_pipeline(
    outbox_path: Path,
    api_url: str | None,
    api_key: str = "test-key",
    *,
    max_pending_records: int = 10_000,
) -> BridgePipeline:
    """A pipeline delivering to ``api_url`` (``None``: outbox only) with fast retries."""
    outbox = Outbox(outbox_path)
    sender = HackAgentClient(api_url, api_key, timeout=2.0) if api_url else None
    delivery = DeliveryService(sender, outbox, policy=FAST)
    return BridgePipeline(delivery, outbox, max_pending_records=max_pending_records)


@dataclass
class ServedBridge:
    """A bridge app served by uvicorn on a free loopback port in a background thread."""

    app: BridgeApp
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.server.should_exit

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@contextmanager
def serve(settings: BridgeSettings, pipeline: BridgePipeline) -> Iterator[ServedBridge]:
    """Serve ``build_app(settings, pipeline)`` until the block ends (lifespan included)."""
    app = build_app(settings, pipeline)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(settings, app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn_server(config, app)
    served = ServedBridge(app, server, threading.Thread(), port)

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported by the test
            served.errors.append(exc)

    served.thread = threading.Thread(target=target, name=f"bridge:{port}", daemon=True)
    served.thread.start()
    wait_for(lambda: server.started or not served.thread.is_alive(), "uvicorn to start")
    assert server.started, f"uvicorn did not start: {served.errors}"
    try:
        yield served
    finally:
        served.stop()
        sock.close()
        pipeline.close(2.0)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
