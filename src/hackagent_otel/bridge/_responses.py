"""OTLP/HTTP response bodies, in the encoding of the request.

* success: an ``ExportTraceServiceResponse``, empty, or with ``partial_success``
  (``rejected_spans``, ``error_message``) when some spans could not be used;
* failure (4xx/5xx): a ``google.rpc.Status`` (``code``, ``message``);
* an OTLP/gRPC failure's ``grpc-status-details-bin`` trailer: the same
  ``google.rpc.Status``, with a ``google.rpc.RetryInfo`` detail when a retry can
  succeed (:func:`grpc_status_details`).

A protobuf request gets protobuf, made by the generated messages (OTLP's own, and
``google.rpc``'s from googleapis-common-protos, which the OTLP exporters depend on); a
JSON request gets the same fields as JSON; a request whose content type is neither gets
JSON (it is the readable choice, and no OTLP client sent it). The JSON keeps
``rejectedSpans`` a number, as the Collector sends it. Pure: builds bytes, touches
nothing.
"""

from __future__ import annotations

import json

from google.protobuf.any_pb2 import Any as AnyMessage  # type: ignore[import-untyped]
from google.protobuf.duration_pb2 import Duration  # type: ignore[import-untyped]
from google.rpc import code_pb2  # type: ignore[import-untyped]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped]
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from hackagent_otel.bridge._decoded import JSON, PROTOBUF

__all__ = [
    "JSON",
    "PROTOBUF",
    "export_response",
    "grpc_code_for",
    "grpc_status_details",
    "status_response",
]

#: ``google.rpc.Code`` for each HTTP status the receiver answers with.
_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    408: code_pb2.DEADLINE_EXCEEDED,
    413: code_pb2.INVALID_ARGUMENT,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}
_MAX_MESSAGE = 1000


def grpc_code_for(http_status: int) -> int:
    """The ``google.rpc.Code`` that goes with an HTTP status (UNKNOWN otherwise)."""
    return int(_GRPC_CODES.get(http_status, code_pb2.UNKNOWN))


def export_response(
    media_type: str, rejected_spans: int = 0, error_message: str = ""
) -> tuple[bytes, str]:
    """``(body, content type)`` of a successful export, with partial success if any."""
    message = error_message[:_MAX_MESSAGE]
    partial = rejected_spans or message
    if media_type == PROTOBUF:
        response = ExportTraceServiceResponse()
        if partial:  # an empty partial_success would still be sent: leave it out
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=rejected_spans, error_message=message)
            )
        return response.SerializeToString(), PROTOBUF
    if not partial:
        return b"{}", JSON
    body = {"partialSuccess": {"rejectedSpans": rejected_spans, "errorMessage": message}}
    return json.dumps(body, separators=(",", ":")).encode(), JSON


def status_response(media_type: str, http_status: int, message: str) -> tuple[bytes, str]:
    """``(body, content type)`` of a failed request: a ``google.rpc.Status``."""
    status = Status(code=grpc_code_for(http_status), message=message[:_MAX_MESSAGE])
    if media_type == PROTOBUF:
        return status.SerializeToString(), PROTOBUF
    body = {"code": status.code, "message": status.message}
    return json.dumps(body, separators=(",", ":")).encode(), JSON


def grpc_status_details(code: int, message: str, retry_after_seconds: int | None) -> bytes:
    """A ``google.rpc.Status`` for the ``grpc-status-details-bin`` trailer.

    With ``retry_after_seconds`` (even 0) it carries a ``RetryInfo`` detail whose
    ``retry_delay`` is that many seconds: the Collector's OTLP/gRPC exporter retries
    RESOURCE_EXHAUSTED only when RetryInfo is there, and waits ``retry_delay`` first.
    """
    status = Status(code=code, message=message[:_MAX_MESSAGE])
    if retry_after_seconds is not None:
        retry = RetryInfo()
        retry.retry_delay.CopyFrom(Duration(seconds=retry_after_seconds))  # set, even if 0
        detail = AnyMessage()
        detail.Pack(retry)
        status.details.append(detail)
    return bytes(status.SerializeToString())
