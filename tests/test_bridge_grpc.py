"""The bridge's OTLP/gRPC receiver (``grpc_port``) over a real gRPC channel.

The answers the Collector's OTLP/gRPC exporter (and so its ``load_balancing`` exporter)
bases its retries on: OK with and without partial success; INVALID_ARGUMENT and
UNAUTHENTICATED, final; RESOURCE_EXHAUSTED and UNAVAILABLE with ``RetryInfo``, retried;
and a message over the decompressed limit refused by gRPC itself. Plus gzip message
compression, the SDK's own OTLP/gRPC exporter, and a port that is taken.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from apps.scenario import SCENARIO_RECORDS, expected_result_calls, expected_run_calls
from bridge_support import ServedBridge, make_pipeline, new_ids, otlp_protobuf, scenario_spans
from hackagent_otel.bridge import BridgeSettings, build_app
from hackagent_otel.bridge._grpc import METHOD, SERVICE
from hackagent_otel.testing import FakeHackAgentAPI
from otel_fixtures import api_calls

EXPORT = f"/{SERVICE}/{METHOD}"


@pytest.fixture
def start_bridge(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> Iterator[Callable[..., ServedBridge]]:
    """A bridge serving OTLP/gRPC on a free port too; keyword arguments go to
    BridgeSettings (``pipeline=`` replaces the pipeline)."""
    from bridge_support import serve

    stack: list[AbstractContextManager[ServedBridge]] = []

    def start(pipeline: Any = None, **overrides: Any) -> ServedBridge:
        path = tmp_path / f"bridge-{len(stack)}.sqlite3"
        pipeline = pipeline or make_pipeline(path, fake_api.base_url, fake_api.api_key)
        overrides.setdefault("grpc_port", 0)
        manager = serve(BridgeSettings(outbox_path=path, **overrides), pipeline)
        stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


def grpc_target(bridge: ServedBridge) -> str:
    assert bridge.app.grpc is not None
    assert bridge.app.grpc.port
    return f"127.0.0.1:{bridge.app.grpc.port}"


def export(
    bridge: ServedBridge,
    body: bytes,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    compression: Any = None,
) -> bytes:
    """One ``TraceService/Export`` call with ``body`` as the serialized request."""
    with grpc.insecure_channel(grpc_target(bridge)) as channel:
        call = channel.unary_unary(EXPORT)  # bytes in, bytes out
        return bytes(call(body, metadata=metadata, timeout=10, compression=compression))


def refusal(bridge: ServedBridge, body: bytes, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        export(bridge, body, **kwargs)
    return raised.value


def retry_delay(error: grpc.RpcError) -> int | None:
    """The RetryInfo delay in the call's ``grpc-status-details-bin``, None without one."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            for detail in status.details:
                if detail.type_url.endswith("google.rpc.RetryInfo"):
                    info = error_details_pb2.RetryInfo.FromString(detail.value)
                    return int(info.retry_delay.seconds)
    return None


def test_an_export_is_ok_and_its_records_are_delivered_in_order(
    start_bridge: Callable[..., ServedBridge], fake_api: FakeHackAgentAPI
) -> None:
    bridge = start_bridge()
    run_id, result_id = new_ids()

    answer = export(bridge, otlp_protobuf(scenario_spans(run_id, result_id)))

    assert ExportTraceServiceResponse.FromString(answer) == ExportTraceServiceResponse()
    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=10)
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)
    assert bridge.app.metrics.value("hackagent_bridge_grpc_requests_total", code="OK") == 1
    queued = bridge.app.metrics.value("hackagent_bridge_records_queued_total")
    assert queued == SCENARIO_RECORDS


def test_gzip_message_compression_is_undone_by_grpc(
    start_bridge: Callable[..., ServedBridge], fake_api: FakeHackAgentAPI
) -> None:
    bridge = start_bridge()
    run_id, result_id = new_ids()
    body = otlp_protobuf(scenario_spans(run_id, result_id))

    export(bridge, body, compression=grpc.Compression.Gzip)

    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=10)
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)


def test_the_sdks_otlp_grpc_exporter_exports_straight_to_the_bridge_with_a_token(
    start_bridge: Callable[..., ServedBridge], fake_api: FakeHackAgentAPI
) -> None:
    bridge = start_bridge(token="grpc-token")
    run_id, result_id = new_ids()
    exporter = OTLPSpanExporter(
        endpoint=grpc_target(bridge),
        insecure=True,
        headers=(("authorization", "Bearer grpc-token"),),
    )
    try:
        assert exporter.export(scenario_spans(run_id, result_id)) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()

    assert fake_api.wait_for(SCENARIO_RECORDS, timeout=10)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)


def test_undecodable_messages_are_invalid_argument_without_retry_info(
    start_bridge: Callable[..., ServedBridge],
) -> None:
    bridge = start_bridge()

    error = refusal(bridge, b"\xff\xff\xff not protobuf")

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert retry_delay(error) is None
    assert (
        bridge.app.metrics.value("hackagent_bridge_grpc_requests_total", code="INVALID_ARGUMENT")
        == 1
    )


def test_without_the_configured_token_calls_are_unauthenticated(
    start_bridge: Callable[..., ServedBridge], fake_api: FakeHackAgentAPI
) -> None:
    bridge = start_bridge(token="grpc-token")
    body = otlp_protobuf(scenario_spans(*new_ids()))

    assert refusal(bridge, body).code() == grpc.StatusCode.UNAUTHENTICATED
    wrong = refusal(bridge, body, metadata=(("authorization", "Bearer nope"),))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake_api.calls == []


def test_a_full_outbox_is_resource_exhausted_with_retry_info_until_it_drains(
    start_bridge: Callable[..., ServedBridge], fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.stop()
    pipeline = make_pipeline(tmp_path / "full.sqlite3", fake_api.base_url, max_pending_records=5)
    bridge = start_bridge(pipeline=pipeline, retry_after_seconds=7)
    body = otlp_protobuf(scenario_spans(*new_ids()))

    export(bridge, body)
    error = refusal(bridge, body)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(error) == 7  # so the Collector retries it, after 7 s


def test_shutting_down_is_unavailable_with_retry_info(
    start_bridge: Callable[..., ServedBridge],
) -> None:
    bridge = start_bridge(retry_after_seconds=3)
    bridge.app.state = "stopping"  # what begin_shutdown sets, without stopping the server

    error = refusal(bridge, otlp_protobuf(scenario_spans(*new_ids())))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay(error) == 3


def test_a_message_over_the_decompressed_limit_is_refused_by_grpc_for_good(
    start_bridge: Callable[..., ServedBridge], fake_api: FakeHackAgentAPI
) -> None:
    bridge = start_bridge(max_decompressed_bytes=64 * 1024)

    error = refusal(bridge, b"\x0a" + b"\x00" * (128 * 1024))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(error) is None  # the Collector does not retry it
    assert fake_api.calls == []


def test_a_taken_grpc_port_fails_the_start(fake_api: FakeHackAgentAPI, tmp_path: Path) -> None:
    from bridge_support import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "taken.sqlite3"
        settings = BridgeSettings(outbox_path=path, grpc_port=port)
        with (
            pytest.raises(AssertionError, match="did not start"),
            serve(settings, make_pipeline(path, fake_api.base_url, fake_api.api_key)),
        ):
            pass


def test_without_grpc_port_there_is_no_grpc_server(tmp_path: Path) -> None:
    path = tmp_path / "none.sqlite3"
    app = build_app(BridgeSettings(outbox_path=path), make_pipeline(path, None))
    assert app.grpc is None
