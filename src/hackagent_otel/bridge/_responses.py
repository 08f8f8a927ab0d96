"""OTLP/HTTP response bodies, in the encoding of the request.

* success: an ``ExportTraceServiceResponse``, empty, or with ``partial_success``
  (``rejected_spans``, ``error_message``) when some spans could not be used;
* failure (4xx/5xx): a ``google.rpc.Status`` (``code``, ``message``);
* an OTLP/gRPC failure's ``grpc-status-details-bin`` trailer: the same
  ``google.rpc.Status``, with a ``google.rpc.RetryInfo`` detail when a retry can
  succeed (:func:`grpc_status_details`).

A protobuf request gets protobuf, a JSON request JSON; a request whose content type is
neither gets JSON (it is the readable choice, and no OTLP client sent it). The two
protobuf messages are small enough to encode by hand, so this module needs no
generated code.
"""

from __future__ import annotations

import json

__all__ = [
    "JSON",
    "PROTOBUF",
    "export_response",
    "grpc_code_for",
    "grpc_status_details",
    "status_response",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

#: ``google.rpc.Code`` for each HTTP status the receiver answers with.
_GRPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED
    413: 3,  # INVALID_ARGUMENT
    415: 3,  # INVALID_ARGUMENT
    429: 8,  # RESOURCE_EXHAUSTED
    503: 14,  # UNAVAILABLE
}
_MAX_MESSAGE = 1000
RETRY_INFO_TYPE_URL = "type.googleapis.com/google.rpc.RetryInfo"


def grpc_code_for(http_status: int) -> int:
    """The ``google.rpc.Code`` that goes with an HTTP status (2 UNKNOWN otherwise)."""
    return _GRPC_CODES.get(http_status, 2)


def export_response(
    media_type: str, rejected_spans: int = 0, error_message: str = ""
) -> tuple[bytes, str]:
    """``(body, content type)`` of a successful export, with partial success if any."""
    message = error_message[:_MAX_MESSAGE]
    if media_type == PROTOBUF:
        if not rejected_spans and not message:
            return b"", PROTOBUF
        partial = _varint_field(1, rejected_spans) + _bytes_field(2, message.encode())
        return _bytes_field(1, partial), PROTOBUF
    if not rejected_spans and not message:
        return b"{}", JSON
    body = {"partialSuccess": {"rejectedSpans": rejected_spans, "errorMessage": message}}
    return json.dumps(body, separators=(",", ":")).encode(), JSON


def status_response(media_type: str, http_status: int, message: str) -> tuple[bytes, str]:
    """``(body, content type)`` of a failed request: a ``google.rpc.Status``."""
    code = grpc_code_for(http_status)
    text = message[:_MAX_MESSAGE]
    if media_type == PROTOBUF:
        return _varint_field(1, code) + _bytes_field(2, text.encode()), PROTOBUF
    return json.dumps({"code": code, "message": text}, separators=(",", ":")).encode(), JSON


def grpc_status_details(code: int, message: str, retry_after_seconds: int | None) -> bytes:
    """A ``google.rpc.Status`` for the ``grpc-status-details-bin`` trailer.

    With ``retry_after_seconds`` (even 0) it carries a ``RetryInfo`` detail whose
    ``retry_delay`` is that many seconds: the Collector's OTLP/gRPC exporter retries
    RESOURCE_EXHAUSTED only when RetryInfo is there, and waits ``retry_delay`` first.
    """
    status = _varint_field(1, code) + _bytes_field(2, message[:_MAX_MESSAGE].encode())
    if retry_after_seconds is not None:
        duration = _varint_field(1, retry_after_seconds)  # google.protobuf.Duration.seconds
        retry_info = _always_bytes_field(1, duration)  # RetryInfo.retry_delay
        any_detail = _bytes_field(1, RETRY_INFO_TYPE_URL.encode()) + _bytes_field(2, retry_info)
        status += _always_bytes_field(3, any_detail)  # Status.details
    return status


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return _always_bytes_field(number, value) if value else b""


def _always_bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited field even when empty: a message field that must be present."""
    return _varint((number << 3) | 2) + _varint(len(value)) + value
