"""A pipeline sends its spans to the OpenTelemetry Collector, which forwards them to Jaeger
(and to the HackAgent bridge), with collector/otelcol-config.yaml as users run it.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from hackagent_otel import semconv

from ._otel_processes import (
    LOOPBACK,
    OTELCOL_BIN,
    OTELCOL_CONFIG,
    REPO_ROOT,
    Jaeger,
    wait_until,
)
from ._pipeline_app import PHASE1_STEPS, PHASE2_STEPS, TIMELINE_STEPS
from ._timeline import assert_run_timeline, is_complete_run, parse_trace, run_span
from .conftest import PIPELINE_APP, CollectorFactory, app_env, require_binary, run_pipeline_app

pytestmark = pytest.mark.integration


def _service() -> str:
    return f"pipeline-{uuid.uuid4().hex[:8]}"


def _span_names(trace: dict[str, Any] | None) -> set[str]:
    return {span["operationName"] for span in (trace or {}).get("spans", [])}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_run_timeline_through_collector_to_jaeger(
    jaeger: Jaeger, start_collector: CollectorFactory, protocol: str
) -> None:
    collector = start_collector()
    service = _service()
    canary = f"CANARY-{uuid.uuid4().hex}"
    endpoint = collector.otlp_grpc_url if protocol == "grpc" else collector.otlp_http_url

    [run] = run_pipeline_app(app_env(service, endpoint, protocol), "--canary", canary)

    trace = jaeger.api.wait_for_trace(run.trace_id, until=is_complete_run)
    assert_run_timeline(
        trace, run_id=run.run_id, result_id=run.result_id, service=service, canary=canary
    )
    assert canary not in jaeger.api.raw_search(service)


def test_debug_exporter_prints_spans_only_when_listed(
    jaeger: Jaeger, start_collector: CollectorFactory
) -> None:
    quiet = start_collector()
    verbose = start_collector(exporters=("otlp_grpc/jaeger", "debug"))
    for collector in (quiet, verbose):
        env = app_env(_service(), collector.otlp_http_url, "http/protobuf")
        [run] = run_pipeline_app(env)
        # Jaeger has the run, so the Collector's pipeline (every exporter) has handled it.
        jaeger.api.wait_for_trace(run.trace_id, until=is_complete_run)

    # The debug exporter (verbosity detailed) prints each span's attributes.
    wait_until(
        lambda: semconv.RUN_ID in verbose.process.log_text() or None,
        timeout=30,
        what="the debug exporter's output",
    )
    assert semconv.RUN_ID not in quiet.process.log_text()


# -- the HackAgent bridge pipeline ----------------------------------------------------


@dataclass(frozen=True)
class OtlpRequest:
    """One request the stand-in bridge received."""

    path: str
    content_type: str
    content_encoding: str
    body: bytes

    def spans(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(trace id hex, span name, attributes)`` of every span in the request."""
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.body)
        out = []
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs = {a.key: a.value for a in span.attributes}
                    out.append((span.trace_id.hex(), span.name, attrs))
        return out


class StandInBridge:
    """An OTLP/HTTP endpoint in the place of ``hackagent-otel bridge``: it records what
    the Collector's bridge exporter sends (``POST /v1/traces``) and answers 200."""

    def __init__(self) -> None:
        self.requests: list[OtlpRequest] = []
        bridge = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                body = gzip.decompress(raw) if encoding == "gzip" else raw
                bridge.requests.append(
                    OtlpRequest(self.path, self.headers.get("Content-Type", ""), encoding, body)
                )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandInBridge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def spans_of_trace(self, trace_id: str) -> list[tuple[str, dict[str, Any]]]:
        """``(name, attributes)`` of every span of ``trace_id`` received so far."""
        return [
            (name, attrs)
            for request in list(self.requests)
            for tid, name, attrs in request.spans()
            if tid == trace_id
        ]


def test_collector_sends_the_same_spans_to_the_bridge_and_jaeger(
    jaeger: Jaeger, start_collector: CollectorFactory
) -> None:
    service = _service()
    canary = f"CANARY-{uuid.uuid4().hex}"
    with StandInBridge() as bridge:
        collector = start_collector(
            exporters=("otlp_grpc/jaeger", "otlp_http/bridge"), bridge_endpoint=bridge.url
        )
        env = app_env(service, collector.otlp_http_url, "http/protobuf")
        [run] = run_pipeline_app(env, "--canary", canary)

        trace = jaeger.api.wait_for_trace(run.trace_id, until=is_complete_run)
        expected = sorted(_span_names(trace))

        def all_spans_arrived() -> list[tuple[str, dict[str, Any]]] | None:
            spans = bridge.spans_of_trace(run.trace_id)
            return spans if sorted(name for name, _ in spans) == expected else None

        received = wait_until(
            all_spans_arrived, timeout=30, what="the run's spans at the stand-in bridge"
        )
    assert {r.path for r in bridge.requests} == {"/v1/traces"}
    assert {r.content_type for r in bridge.requests} == {"application/x-protobuf"}
    assert {r.content_encoding for r in bridge.requests} == {"gzip"}
    steps = {name: attrs for name, attrs in received if name in TIMELINE_STEPS}
    assert set(steps) == set(TIMELINE_STEPS)
    for attrs in steps.values():
        assert attrs[semconv.RUN_ID].string_value == run.run_id
        assert attrs[semconv.RESULT_ID].string_value == run.result_id
    assert all(canary.encode() not in r.body for r in bridge.requests)


# -- a Collector restart ----------------------------------------------------------------


class LineReader:
    """Reads a child's stdout lines on a thread, so a test can wait for one with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout: float = 30.0) -> str:
        """The next line; fails if the child closes stdout or says nothing in time."""
        line = self._lines.get(timeout=timeout)
        assert line is not None, "the pipeline app closed its stdout"
        return line


class RefusingListener:
    """Holds a port while the Collector is down and resets every connection to it.

    It counts the connections, so the test knows the app really tried to export while
    the Collector was away, instead of hoping a sleep was long enough.
    """

    def __init__(self, port: int) -> None:
        self.attempts = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, port))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.attempts += 1
            # Linger 0: close with a reset, like a crashed server.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def __enter__(self) -> RefusingListener:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def restart_app() -> Iterator[list[subprocess.Popen[str]]]:
    """Holds the restart scenario's app process; kills it if the test fails midway."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_collector_restart_while_app_runs_loses_no_spans(
    jaeger: Jaeger,
    start_collector: CollectorFactory,
    restart_app: list[subprocess.Popen[str]],
) -> None:
    collector = start_collector()
    service = _service()
    env = app_env(
        service,
        collector.otlp_http_url,
        "http/protobuf",
        {
            # Export finished spans within 0.1 s, so phase 2 is sent while the Collector
            # is down; give each export 30 s of retries, more than a restart takes.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        },
    )
    app = subprocess.Popen(
        [sys.executable, str(PIPELINE_APP), "restart"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    restart_app.append(app)
    assert app.stdin is not None
    assert app.stdout is not None
    lines = LineReader(app.stdout)
    run_id = json.loads(lines.next())["run_id"]
    trace_id = run_id.replace("-", "")

    # Phase 1 reaches Jaeger through the running Collector.
    assert lines.next() == "PHASE1"
    jaeger.api.wait_for_trace(trace_id, until=lambda t: set(PHASE1_STEPS) <= _span_names(t))

    # The Collector stops (gracefully: what it holds is drained to Jaeger).
    assert collector.stop() == 0
    with RefusingListener(collector.ports.otlp_http) as down:
        app.stdin.write("go\n")
        app.stdin.flush()
        assert lines.next() == "PHASE2"
        wait_until(
            lambda: down.attempts or None, timeout=30, what="an export attempt during the outage"
        )
    assert not set(PHASE2_STEPS) & _span_names(jaeger.api.trace(trace_id))

    # Back on the same ports: the exporter's retry delivers phase 2 while the app runs.
    collector.start()
    jaeger.api.wait_for_trace(
        trace_id, until=lambda t: set(PHASE2_STEPS) <= _span_names(t), timeout=60
    )
    assert app.poll() is None

    app.stdin.write("done\n")
    app.stdin.close()
    assert app.wait(timeout=60) == 0

    expected = [
        *PHASE1_STEPS,
        *PHASE2_STEPS,
        semconv.SPAN_RUN,
        semconv.SPAN_RUN_STATUS,
    ]
    trace = jaeger.api.wait_for_trace(
        trace_id, until=lambda t: set(expected) <= _span_names(t), timeout=30
    )
    spans = parse_trace(trace)
    # Every span exactly once: nothing lost, nothing duplicated by the retries.
    assert sorted(s.name for s in spans) == sorted(expected)
    root = run_span(spans)
    assert {s.parent_id for s in spans if s.name in PHASE2_STEPS} == {root.span_id}


# -- the config itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    "exporters",
    [
        None,  # the default: Jaeger and the bridge
        "[otlp_grpc/jaeger]",
        "[otlp_grpc/jaeger, debug]",
        "[otlp_grpc/jaeger, otlp_http/bridge, debug]",
    ],
)
def test_documented_exporter_choices_are_valid_configs(exporters: str | None) -> None:
    binary = require_binary(OTELCOL_BIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTELCOL_")}
    if exporters is not None:
        env["OTELCOL_TRACES_EXPORTERS"] = exporters
    result = subprocess.run(
        [str(binary), "validate", f"--config={OTELCOL_CONFIG}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_unknown_exporter_choice_is_rejected() -> None:
    binary = require_binary(OTELCOL_BIN)
    env = dict(os.environ, OTELCOL_TRACES_EXPORTERS="[otlp_grpc/jaeger, zipkin]")
    result = subprocess.run(
        [str(binary), "validate", f"--config={OTELCOL_CONFIG}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "zipkin" in result.stderr
