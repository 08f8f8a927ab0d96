"""The bridge's ASGI app over real HTTP: uvicorn on a free loopback port, httpx as client.

Every OTLP answer a client's retries depend on (200 with and without partial success,
400, 401, 413, 415, 429, 503 with Retry-After), the probes and metrics, the limits (a
gzip bomb included), and a fuzz of bodies, headers and encodings that never yields a
500 or stops the server.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.trace import ReadableSpan

from apps.scenario import SCENARIO_RECORDS
from bridge_support import (
    ServedBridge,
    foreign_spans,
    make_pipeline,
    new_ids,
    otlp_json_dict,
    otlp_protobuf,
    private_provider,
    scenario_spans,
    serve,
)
from hackagent_otel import _tracer, semconv
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel.bridge import BridgePipeline, BridgeSettings, _decoded
from hackagent_otel.bridge._decode import DecodedTraces, decode
from hackagent_otel.bridge._decode_protobuf import _ViewRequest
from hackagent_otel.bridge._throttle import ThrottledLog
from hackagent_otel.testing import FakeHackAgentAPI

PROTOBUF = {"Content-Type": "application/x-protobuf"}
GZIP_PROTOBUF = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
JSON = {"Content-Type": "application/json"}
KIB = 1024
MIB = 1024 * KIB

Serve = Callable[..., AbstractContextManager[ServedBridge]]


@pytest.fixture
def start_bridge(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> Iterator[Callable[..., ServedBridge]]:
    """Serve a bridge delivering to ``fake_api``; keyword arguments go to BridgeSettings
    (``pipeline=`` replaces the pipeline). Stopped at teardown."""
    stack: list[AbstractContextManager[ServedBridge]] = []

    def start(pipeline: BridgePipeline | None = None, **overrides: Any) -> ServedBridge:
        path = tmp_path / f"bridge-{len(stack)}.sqlite3"
        pipeline = pipeline or make_pipeline(path, fake_api.base_url, fake_api.api_key)
        manager = serve(BridgeSettings(outbox_path=path, **overrides), pipeline)
        stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
def bridge(start_bridge: Callable[..., ServedBridge]) -> ServedBridge:
    return start_bridge()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def seed_spans() -> list[ReadableSpan]:
    run_id, result_id = new_ids()
    return scenario_spans(run_id, result_id)


def result_of(spans: list[ReadableSpan]) -> str:
    return next(
        str(s.attributes[semconv.RESULT_ID])
        for s in spans
        if s.attributes and semconv.RESULT_ID in s.attributes
    )


def bad_result_spans() -> list[ReadableSpan]:
    """A span that says it is one of our steps but names no valid result."""
    with private_provider() as exporter:
        tracer = _tracer.source.provider.get_tracer("hackagent_otel")
        with tracer.start_as_current_span("broken step") as span:
            span.set_attribute(semconv.KIND, semconv.KIND_STEP)
            span.set_attribute(semconv.RESULT_ID, "not-a-uuid")
        return list(exporter.get_finished_spans())


# -- 200 --------------------------------------------------------------------------------


def test_gzip_protobuf_export_is_200_with_an_empty_protobuf_response_and_is_delivered(
    bridge: ServedBridge, http: httpx.Client, fake_api: FakeHackAgentAPI, seed_spans: list[Any]
) -> None:
    response = http.post(
        bridge.traces_url, content=gzip.compress(otlp_protobuf(seed_spans)), headers=GZIP_PROTOBUF
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    result_id = result_of(seed_spans)
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 4, timeout=5)
    assert [t["sequence"] for t in fake_api.traces_for(result_id)] == [1, 2, 3, 4]


def test_json_export_is_200_with_a_json_response(
    bridge: ServedBridge, http: httpx.Client, fake_api: FakeHackAgentAPI, seed_spans: list[Any]
) -> None:
    response = http.post(bridge.traces_url, json=otlp_json_dict(seed_spans))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=5)


def test_an_empty_export_is_200(bridge: ServedBridge, http: httpx.Client) -> None:
    assert http.post(bridge.traces_url, content=b"", headers=PROTOBUF).status_code == 200
    assert http.post(bridge.traces_url, content=b"{}", headers=JSON).status_code == 200


def test_foreign_spans_are_ignored_and_counted(
    bridge: ServedBridge, http: httpx.Client, fake_api: FakeHackAgentAPI
) -> None:
    response = http.post(
        bridge.traces_url, content=otlp_protobuf(foreign_spans(5)), headers=PROTOBUF
    )

    assert response.status_code == 200
    assert response.content == b""
    assert bridge.app.metrics.value("hackagent_bridge_spans_ignored_total") == 5
    assert bridge.app.metrics.value("hackagent_bridge_records_queued_total") == 0
    time.sleep(0.1)
    assert fake_api.calls == []


def test_unusable_spans_get_a_protobuf_partial_success_and_the_rest_is_delivered(
    bridge: ServedBridge, http: httpx.Client, fake_api: FakeHackAgentAPI, seed_spans: list[Any]
) -> None:
    body = otlp_protobuf(seed_spans + bad_result_spans())

    response = http.post(bridge.traces_url, content=body, headers=PROTOBUF)

    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "not-a-uuid" in partial.error_message
    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=5)


def test_unusable_spans_get_a_json_partial_success(
    bridge: ServedBridge, http: httpx.Client, seed_spans: list[Any]
) -> None:
    response = http.post(bridge.traces_url, json=otlp_json_dict(seed_spans + bad_result_spans()))

    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == 1
    assert "not-a-uuid" in partial["errorMessage"]


def with_a_span_whose_attribute_is_no_anyvalue(body: bytes) -> bytes:
    """``body`` with a copy of its first span of ours whose step name is the lone byte
    0x0A on the wire (an ``AnyValue`` cut short after its tag)."""
    request = _ViewRequest.FromString(body)
    scope = request.resource_spans[0].scope_spans[0]
    ours = next(s for s in scope.spans if semconv.KIND in s.attributes)
    broken = scope.spans.add()
    broken.CopyFrom(ours)
    broken.span_id = b"\x0b" * 8
    broken.attributes[semconv.STEP_NAME] = b"\x0a"
    return bytes(request.SerializeToString())


def test_a_span_with_an_undecodable_attribute_is_rejected_and_the_rest_delivered(
    bridge: ServedBridge, http: httpx.Client, fake_api: FakeHackAgentAPI, seed_spans: list[Any]
) -> None:
    body = with_a_span_whose_attribute_is_no_anyvalue(otlp_protobuf(seed_spans))

    response = http.post(bridge.traces_url, content=body, headers=PROTOBUF)

    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "is not a valid AnyValue" in partial.error_message
    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=5)


# -- 400 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff not protobuf"),
        (JSON, b"{not json"),
        (JSON, b"[1, 2]"),
        (GZIP_PROTOBUF, b"not gzip at all"),
        (GZIP_PROTOBUF, gzip.compress(b"\x0a\x05abc")[:-9]),  # truncated
    ],
    ids=["protobuf", "json", "json-not-object", "gzip", "truncated-gzip"],
)
def test_undecodable_bodies_are_400_with_a_status_message(
    bridge: ServedBridge, http: httpx.Client, headers: dict[str, str], body: bytes
) -> None:
    response = http.post(bridge.traces_url, content=body, headers=headers)

    assert response.status_code == 400
    assert "retry-after" not in response.headers
    if response.headers["content-type"] == "application/json":
        assert response.json()["code"] == 3  # google.rpc INVALID_ARGUMENT
    else:
        assert response.content.startswith(b"\x08\x03")  # Status.code = 3


def test_an_unexpected_error_while_decoding_is_400_logged_once_never_503(
    bridge: ServedBridge,
    http: httpx.Client,
    seed_spans: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: Any) -> DecodedTraces:
        raise IndexError("a bug in the decoder")

    monkeypatch.setattr(_decoded, "log", ThrottledLog(logging.getLogger("hackagent_otel.bridge")))
    monkeypatch.setattr(_decoded.Tally, "result", broken)
    body = otlp_protobuf(seed_spans)

    answers = [http.post(bridge.traces_url, content=body, headers=PROTOBUF) for _ in range(5)]

    assert [a.status_code for a in answers] == [400] * 5
    assert all("retry-after" not in a.headers for a in answers)
    assert b"IndexError" in answers[0].content
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]


# -- 413 --------------------------------------------------------------------------------


def test_a_body_over_the_limit_as_sent_is_413(
    start_bridge: Callable[..., ServedBridge], http: httpx.Client
) -> None:
    bridge = start_bridge(max_body_bytes=64 * KIB)

    response = http.post(bridge.traces_url, content=b"\x00" * (64 * KIB + 1), headers=PROTOBUF)

    assert response.status_code == 413
    assert http.get(f"{bridge.url}/healthz").status_code == 200


def test_a_streamed_body_over_the_limit_is_413_without_content_length(
    start_bridge: Callable[..., ServedBridge], http: httpx.Client
) -> None:
    bridge = start_bridge(max_body_bytes=64 * KIB)

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"\x00" * (20 * KIB)

    response = http.post(bridge.traces_url, content=chunks(), headers=PROTOBUF)

    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_a_body_over_the_limit_once_decompressed_is_413(
    start_bridge: Callable[..., ServedBridge], http: httpx.Client
) -> None:
    bridge = start_bridge(max_decompressed_bytes=1 * MIB)
    body = gzip.compress(b"\x0a" * (MIB + 1))

    response = http.post(bridge.traces_url, content=body, headers=GZIP_PROTOBUF)

    assert response.status_code == 413
    assert "inflates" in response.content.decode(errors="replace")


def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzip-compressed (about a thousandth of the size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * MIB
    parts = [compressor.compress(chunk) for _ in range(inflated // MIB)]
    return b"".join([*parts, compressor.flush()])


def test_a_gzip_bomb_is_413_quickly_and_the_bridge_keeps_serving(
    bridge: ServedBridge, http: httpx.Client, seed_spans: list[Any]
) -> None:
    bomb = gzip_bomb(256 * MIB)  # 256 MiB inflated, about 250 KiB sent
    assert len(bomb) < bridge.app.settings.max_body_bytes

    started = time.monotonic()
    response = http.post(bridge.traces_url, content=bomb, headers=GZIP_PROTOBUF)
    elapsed = time.monotonic() - started

    assert response.status_code == 413
    assert elapsed < 2.0, f"the bomb took {elapsed:.2f} s"
    ok = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=PROTOBUF)
    assert ok.status_code == 200


# -- 415 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {},
        {"Content-Type": "application/grpc"},
        {**PROTOBUF, "Content-Encoding": "br"},
        {**PROTOBUF, "Content-Encoding": "deflate"},
        {**PROTOBUF, "Content-Encoding": "gzip, br"},
    ],
    ids=["text", "none", "grpc", "brotli", "deflate", "stacked"],
)
def test_wrong_content_type_or_encoding_is_415(
    bridge: ServedBridge, http: httpx.Client, headers: dict[str, str]
) -> None:
    response = http.post(bridge.traces_url, content=b"\x00", headers=headers)

    assert response.status_code == 415
    assert "retry-after" not in response.headers


# -- 429 and 503 ------------------------------------------------------------------------


def test_a_full_outbox_is_429_with_retry_after_until_it_drains(
    fake_api: FakeHackAgentAPI,
    tmp_path: Path,
    start_bridge: Callable[..., ServedBridge],
    http: httpx.Client,
    seed_spans: list[Any],
) -> None:
    fake_api.stop()
    pipeline = make_pipeline(tmp_path / "full.sqlite3", fake_api.base_url, max_pending_records=5)
    bridge = start_bridge(pipeline=pipeline, retry_after_seconds=7)
    body = otlp_protobuf(seed_spans)

    assert http.post(bridge.traces_url, content=body, headers=PROTOBUF).status_code == 200
    refused = http.post(bridge.traces_url, content=body, headers=PROTOBUF)

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert refused.content.startswith(b"\x08\x08")  # google.rpc.Status RESOURCE_EXHAUSTED
    fake_api.start()
    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=10)
    deadline = time.monotonic() + 10
    while http.post(bridge.traces_url, content=body, headers=PROTOBUF).status_code != 200:
        assert time.monotonic() < deadline, "still 429 after the outbox drained"
        time.sleep(0.1)


def many_small_steps(count: int, result_id: str) -> bytes:
    """One export of ``count`` minimal step spans of one result (two records each):
    they compress to almost nothing."""
    attributes = [
        KeyValue(key=semconv.KIND, value=AnyValue(string_value=semconv.KIND_STEP)),
        KeyValue(key=semconv.RESULT_ID, value=AnyValue(string_value=result_id)),
        KeyValue(key=semconv.STEP_SEQUENCE_START, value=AnyValue(int_value=1)),
        KeyValue(key=semconv.STEP_SEQUENCE_END, value=AnyValue(int_value=2)),
    ]
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(count):
        spans.add(
            trace_id=b"\x01" * 16,
            span_id=(i + 1).to_bytes(8, "big"),
            name="s",
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_001_000_000_000,
            attributes=attributes,
        )
    return gzip.compress(request.SerializeToString())


def rss_bytes() -> int:
    """This process's resident set size, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_growth(action: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    """``action()``, and how far this process's RSS rose above where it was (sampled)."""
    before = peak = rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return result, max(peak, rss_bytes()) - before


def test_one_request_adds_at_most_its_span_limit_in_bounded_time_and_memory(
    tmp_path: Path, start_bridge: Callable[..., ServedBridge], http: httpx.Client
) -> None:
    pipeline = make_pipeline(tmp_path / "big.sqlite3", None, max_pending_records=1_000)
    bridge = start_bridge(pipeline=pipeline, max_spans_per_request=1_000)
    body = many_small_steps(76_000, new_ids()[1])  # about 200 KiB, 15 MiB inflated
    headers = GZIP_PROTOBUF

    started = time.monotonic()
    response, growth = peak_rss_growth(
        lambda: http.post(bridge.traces_url, content=body, headers=headers)
    )
    took = time.monotonic() - started
    again = http.post(bridge.traces_url, content=body, headers=headers)

    print(
        f"\n76,000 spans of ours in {len(body) // 1024} KiB: {took:.2f} s, "
        f"RSS +{growth / MIB:.0f} MiB, {pipeline.pending()} records queued"
    )
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 75_000
    assert "past the limit of 1000 per request" in partial.error_message
    assert pipeline.pending() == 2_000
    assert again.status_code == 429  # the pending limit holds the next one back
    assert took < 5.0
    assert growth < 128 * MIB


def test_shutting_down_is_503_with_retry_after_and_not_ready(
    bridge: ServedBridge, http: httpx.Client, seed_spans: list[Any]
) -> None:
    assert http.get(f"{bridge.url}/readyz").status_code == 200

    bridge.app.begin_shutdown()
    response = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=PROTOBUF)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    ready = http.get(f"{bridge.url}/readyz")
    assert (ready.status_code, ready.text) == (503, "shutting down\n")
    assert http.get(f"{bridge.url}/healthz").status_code == 200


def test_an_unwritable_outbox_is_503_with_retry_after_and_not_ready(
    fake_api: FakeHackAgentAPI,
    tmp_path: Path,
    start_bridge: Callable[..., ServedBridge],
    http: httpx.Client,
    seed_spans: list[Any],
) -> None:
    outbox = Outbox(tmp_path / "broken.sqlite3")
    delivery = DeliveryService(HackAgentClient(fake_api.base_url, fake_api.api_key), outbox)
    bridge = start_bridge(pipeline=BridgePipeline(delivery, outbox, max_pending_records=100))
    outbox.close()  # as good as a vanished disk: every use raises OutboxError

    response = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=PROTOBUF)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    ready = http.get(f"{bridge.url}/readyz")
    assert (ready.status_code, ready.text) == (503, "outbox unreadable\n")


def test_requests_beyond_the_waiting_line_are_429(
    fake_api: FakeHackAgentAPI,
    tmp_path: Path,
    start_bridge: Callable[..., ServedBridge],
    seed_spans: list[Any],
) -> None:
    release = threading.Event()

    def slow_decode(body: bytes, content_type: str, **options: Any) -> DecodedTraces:
        release.wait(10)
        return decode(body, content_type, **options)

    outbox = Outbox(tmp_path / "slow.sqlite3")
    delivery = DeliveryService(HackAgentClient(fake_api.base_url, fake_api.api_key), outbox)
    pipeline = BridgePipeline(delivery, outbox, max_pending_records=100, decoder=slow_decode)
    bridge = start_bridge(pipeline=pipeline, max_concurrent_requests=1, max_waiting_requests=1)
    body = otlp_protobuf(seed_spans)
    answers: list[int] = []

    def post() -> None:
        answers.append(httpx.post(bridge.traces_url, content=body, headers=PROTOBUF).status_code)

    first, second = threading.Thread(target=post), threading.Thread(target=post)
    first.start()
    time.sleep(0.2)  # the first holds the only slot
    second.start()
    time.sleep(0.2)  # the second waits in line
    third = httpx.post(bridge.traces_url, content=body, headers=PROTOBUF)
    release.set()
    first.join(10)
    second.join(10)

    assert third.status_code == 429
    assert third.headers["retry-after"] == "5"
    assert answers == [200, 200]


# -- 401 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic s3cr3t-token", "s3cr3t-token", "Bearer s3cr3t-token2"],
    ids=["missing", "wrong", "basic-scheme", "no-scheme", "longer"],
)
def test_with_a_token_configured_exports_without_it_are_401(
    start_bridge: Callable[..., ServedBridge],
    http: httpx.Client,
    seed_spans: list[Any],
    authorization: str | None,
) -> None:
    bridge = start_bridge(token="s3cr3t-token")
    headers = dict(PROTOBUF)
    if authorization is not None:
        headers["Authorization"] = authorization

    response = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert bridge.app.metrics.value("hackagent_bridge_records_queued_total") == 0


def test_with_a_token_configured_the_right_bearer_token_is_200(
    start_bridge: Callable[..., ServedBridge], http: httpx.Client, seed_spans: list[Any]
) -> None:
    bridge = start_bridge(token="s3cr3t-token")
    headers = {**PROTOBUF, "Authorization": "Bearer s3cr3t-token"}

    response = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=headers)

    assert response.status_code == 200


def test_without_a_token_configured_no_authorization_is_needed(
    bridge: ServedBridge, http: httpx.Client, seed_spans: list[Any]
) -> None:
    response = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=PROTOBUF)
    assert response.status_code == 200


def test_the_settings_repr_does_not_show_the_token_or_api_key() -> None:
    shown = repr(BridgeSettings(token="s3cr3t-token", hackagent_api_key="api-key-123"))
    assert "s3cr3t-token" not in shown
    assert "api-key-123" not in shown


# -- probes, metrics, routes ------------------------------------------------------------


def test_healthz_and_readyz_answer_200_while_serving(
    bridge: ServedBridge, http: httpx.Client
) -> None:
    assert http.get(f"{bridge.url}/healthz").text == "ok\n"
    assert http.get(f"{bridge.url}/readyz").text == "ready\n"


def test_metrics_count_requests_spans_records_and_outbox_depth(
    bridge: ServedBridge, http: httpx.Client, fake_api: FakeHackAgentAPI, seed_spans: list[Any]
) -> None:
    body = otlp_protobuf(seed_spans + foreign_spans(2) + bad_result_spans())
    assert http.post(bridge.traces_url, content=body, headers=PROTOBUF).status_code == 200
    assert http.post(bridge.traces_url, content=b"junk", headers=PROTOBUF).status_code == 400
    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=5)

    def sample(name: str, text: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} missing from:\n{text}")

    deadline = time.monotonic() + 5
    while True:
        response = http.get(f"{bridge.url}/metrics")
        text = response.text
        if sample("hackagent_bridge_records_sent_total", text) == SCENARIO_RECORDS:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'hackagent_bridge_requests_total{code="200"} 1' in text
    assert 'hackagent_bridge_requests_total{code="400"} 1' in text
    assert sample("hackagent_bridge_spans_received_total", text) == len(seed_spans) + 3
    assert sample("hackagent_bridge_spans_ignored_total", text) == 2
    assert sample("hackagent_bridge_spans_rejected_total", text) == 1
    assert sample("hackagent_bridge_records_queued_total", text) == SCENARIO_RECORDS
    assert sample("hackagent_bridge_records_retried_total", text) == 0
    assert sample("hackagent_bridge_outbox_pending", text) == 0
    assert sample("hackagent_bridge_ready", text) == 1
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith("hackagent_bridge_"), line


def test_unknown_paths_are_404_and_wrong_methods_405(
    bridge: ServedBridge, http: httpx.Client
) -> None:
    assert http.get(f"{bridge.url}/v1/metrics").status_code == 404
    wrong = http.get(bridge.traces_url)
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert http.post(f"{bridge.url}/healthz").status_code == 405


# -- fuzz -------------------------------------------------------------------------------

CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/x-protobuf",
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/X-PROTOBUF",
            "application/protobuf",
            "text/plain",
            "",
            "multipart/form-data; boundary=x",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip),
)
ENCODINGS = st.one_of(
    st.sampled_from([None, "gzip", "identity", "GZIP", "x-gzip", "br", "deflate", "gzip, gzip"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
)
HEADER_NAMES = st.sampled_from(
    ["authorization", "x-forwarded-for", "transfer-encoding-x", "x-junk", "expect-x", "accept"]
)
# Values a client can send at all (h11 refuses surrounding whitespace before sending).
HEADER_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    str.strip
)


def mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` with some bytes overwritten, cut short or extended."""

    def mutate(edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(base)
        for position, value in edits:
            data[position % len(data)] = value
        return bytes(data[: max(0, len(data) - cut)]) + tail

    return st.builds(
        mutate,
        st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
        st.integers(0, 32),
        st.binary(max_size=16),
    )


@pytest.fixture(scope="module")
def fuzz_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBridge]:
    """One bridge for the whole fuzz run (outbox only: no API to hammer)."""
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite3"
    with serve(
        BridgeSettings(outbox_path=path, max_body_bytes=256 * KIB, max_decompressed_bytes=MIB),
        make_pipeline(path, None, max_pending_records=10**9),
    ) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


class Bodies(dict[str, bytes]):
    """Real export bodies by encoding (a short repr keeps failure reports readable)."""

    def __repr__(self) -> str:
        return f"<{len(self)} real OTLP bodies>"


@pytest.fixture(scope="module")
def real_bodies() -> Bodies:
    run_id, result_id = new_ids()
    spans = scenario_spans(run_id, result_id, nested=True)
    return Bodies(protobuf=otlp_protobuf(spans), json=json.dumps(otlp_json_dict(spans)).encode())


ALLOWED = {200, 400, 401, 404, 405, 413, 415, 429, 503}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_bodies_headers_and_encodings_never_get_500_and_the_bridge_survives(
    fuzz_bridge: ServedBridge,
    fuzz_client: httpx.Client,
    real_bodies: Bodies,
    data: st.DataObject,
) -> None:
    base = data.draw(st.sampled_from(sorted(real_bodies)))
    body = data.draw(
        st.one_of(st.binary(max_size=2048), mutated(real_bodies[base]), st.just(real_bodies[base]))
    )
    if data.draw(st.booleans()):
        body = gzip.compress(body)
        if data.draw(st.booleans()):
            body = data.draw(mutated(body))
    headers = {"content-type": data.draw(CONTENT_TYPES)}
    encoding = data.draw(ENCODINGS)
    if encoding is not None:
        headers["content-encoding"] = encoding
    headers.update(data.draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3)))
    path = data.draw(st.sampled_from(["/v1/traces", "/v1/traces", "/v1/traces/", "/"]))

    response = fuzz_client.post(f"{fuzz_bridge.url}{path}", content=body, headers=headers)

    assert response.status_code in ALLOWED, (response.status_code, response.text)
    assert response.status_code != 500
    assert fuzz_bridge.alive
    assert fuzz_bridge.errors == []


def test_after_the_fuzz_the_bridge_still_serves_and_is_ready(
    fuzz_bridge: ServedBridge, fuzz_client: httpx.Client, real_bodies: Bodies
) -> None:
    assert fuzz_client.get(f"{fuzz_bridge.url}/readyz").status_code == 200
    response = fuzz_client.post(
        fuzz_bridge.traces_url, content=real_bodies["protobuf"], headers=PROTOBUF
    )
    assert response.status_code == 200
    assert fuzz_bridge.app.metrics.value("hackagent_bridge_requests_total", code="500") == 0


def test_an_outbox_locked_by_another_process_is_503_then_ready_again_without_a_restart(
    fake_api: FakeHackAgentAPI,
    tmp_path: Path,
    start_bridge: Callable[..., ServedBridge],
    http: httpx.Client,
    seed_spans: list[Any],
) -> None:
    path = tmp_path / "bridge.sqlite3"
    outbox = Outbox(path, busy_timeout=0.1)
    probe = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, max_elapsed=None)
    client = HackAgentClient(fake_api.base_url, fake_api.api_key)
    delivery = DeliveryService(client, outbox, probe_policy=probe)
    bridge = start_bridge(pipeline=BridgePipeline(delivery, outbox, max_pending_records=100))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other_process:
        other_process.execute("BEGIN IMMEDIATE")  # held far past the busy timeout
        refused = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=PROTOBUF)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        not_ready = http.get(f"{bridge.url}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.text.startswith("outbox retrying: ")
        other_process.execute("COMMIT")
    deadline = time.monotonic() + 10
    while http.get(f"{bridge.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the bridge never became ready again"
        time.sleep(0.05)
    accepted = http.post(bridge.traces_url, content=otlp_protobuf(seed_spans), headers=PROTOBUF)
    assert accepted.status_code == 200
    assert fake_api.wait_for(lambda: len(fake_api.calls) > 0, timeout=10)
