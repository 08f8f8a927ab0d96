"""OTLP/JSON trace requests (``application/json``) -> span views.

OTLP/JSON follows the proto3 JSON mapping with the OTLP exceptions: trace and span ids
are hex (either case), never base64; 64-bit integers may be strings or numbers; enums
may be numbers or names. Field names may be lowerCamelCase (what OTLP emitters send) or
the proto field names in snake_case, since proto3 JSON parsers must accept both;
``null`` means absent; unknown fields are ignored. The body must be a JSON object (an
empty body is not); lone UTF-16 surrogates in strings become U+FFFD.

``json.loads`` parses the whole body; each span of ours is then converted by hand,
never through ``json_format``, so one span of the wrong shape is rejected alone
(partial success) where ``json_format`` would refuse the whole request, and the wrong
shape on the way to the spans is a :class:`DecodeError`. The rules both encodings keep
are in :mod:`._decoded`. Pure: no I/O but the decoders' throttled log.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from hackagent_otel._spanview import EventView, SpanView, StatusName
from hackagent_otel.bridge._decoded import (
    KIND,
    MAX_VALUE_DEPTH,
    NO_PARENT,
    STATUS_BY_CODE,
    TOO_DEEP,
    DecodedTraces,
    DecodeError,
    Rejected,
    Tally,
    flat,
    short,
    span_label,
)

__all__ = ["decode_json"]

_STATUS_BY_NAME: Final[dict[str, StatusName]] = {
    "STATUS_CODE_UNSET": "UNSET",
    "STATUS_CODE_OK": "OK",
    "STATUS_CODE_ERROR": "ERROR",
}
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_DECIMAL: Final = re.compile(r"-?[0-9]{1,20}")
#: After ``json.loads`` joined the valid pairs, any surrogate left is a lone one.
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_UINT64: Final = 1 << 64
_INT64: Final = 1 << 63


def decode_json(body: bytes, *, max_spans: int | None = None) -> DecodedTraces:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest`` (UTF-8; at most ``max_spans``
    of our spans)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise DecodeError("an OTLP/JSON request is a JSON object")
    out = Tally(max_spans)
    for resource_spans in _list(request, "resourceSpans", "resource_spans"):
        for scope_spans in _list(_object(resource_spans), "scopeSpans", "scope_spans"):
            for span in _list(_object(scope_spans), "spans", "spans"):
                _json_span_into(out, _object(span))
    return out.result()


def _json_span_into(out: Tally, span: dict[str, Any]) -> None:
    kvs = span.get("attributes")
    if not isinstance(kvs, list) or not any(
        isinstance(kv, dict) and kv.get("key") == KIND for kv in kvs
    ):
        out.ignored += 1
        return
    if not out.room():
        return
    try:
        out.spans.append(_json_span(span, kvs))
    except Exception as exc:
        span_id = _get(span, "spanId", "span_id")
        where = span_label(span_id if isinstance(span_id, str) else "?", span.get("name"))
        if isinstance(exc, Rejected):
            out.reject(where, exc)
        else:
            out.reject_unexpected(where, exc)


def _json_span(span: dict[str, Any], kvs: list[Any]) -> SpanView:
    name = _get(span, "name", "name")
    parent = _get(span, "parentSpanId", "parent_span_id")
    end = _json_uint64(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "end time")
    events = _get(span, "events", "events")
    status = _get(span, "status", "status")
    if status is not None and not isinstance(status, dict):
        raise Rejected("status is not an object")
    status = status or {}
    message = _get(status, "message", "message")
    description = _json_text(message, "status message")
    return SpanView(
        name=_json_text(name, "name"),
        trace_id=_json_id(_get(span, "traceId", "trace_id"), 32, "trace id"),
        span_id=_json_id(_get(span, "spanId", "span_id"), 16, "span id"),
        start_time_ns=_json_uint64(
            _get(span, "startTimeUnixNano", "start_time_unix_nano"), "start time"
        ),
        attributes=_json_attributes(kvs),
        parent_span_id=None if parent in NO_PARENT else _json_id(parent, 16, "parent span id"),
        end_time_ns=end or None,
        events=tuple(_json_event(event) for event in _json_list(events, "events")),
        status=_json_status(_get(status, "code", "code")),
        status_description=description or None,
    )


def _json_event(event: Any) -> EventView:
    if not isinstance(event, dict):
        raise Rejected("an event is not an object")
    name = _get(event, "name", "name")
    return EventView(
        _json_text(name, "event name"),
        _json_uint64(_get(event, "timeUnixNano", "time_unix_nano"), "event time"),
        _json_attributes(_json_list(_get(event, "attributes", "attributes"), "attributes")),
    )


def _json_attributes(kvs: list[Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for kv in kvs:
        if not isinstance(kv, dict):
            raise Rejected("an attribute is not an object")
        key = _json_text(kv.get("key"), "attribute key")
        value = _json_plain(kv.get("value"), 0, top=True)
        if value is not None:
            attributes[key] = value
    return attributes


def _json_plain(value: Any, depth: int, *, top: bool = False) -> Any:
    """An ``AnyValue`` object as plain data; at the top, flattened to an attribute value.

    Nested values turn non-finite doubles into text so the JSON made of them is valid.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Rejected("an attribute value is not an AnyValue object")
    for key, item in value.items():
        if item is not None and key in _JSON_VALUE_FIELDS:
            break
    else:
        return None  # an empty AnyValue
    convert = _JSON_VALUE_FIELDS[key]
    if convert is None:  # array or kvlist
        if depth >= MAX_VALUE_DEPTH:
            return TOO_DEEP
        if not isinstance(item, dict):
            raise Rejected(f"{key} is not an object")
        items = _json_list(item.get("values"), f"{key}.values")
        if key in ("arrayValue", "array_value"):
            plain: Any = [_json_plain(v, depth + 1) for v in items]
        else:
            plain = {}
            for kv in items:
                if not isinstance(kv, dict):
                    raise Rejected("a key-value list entry is not an object")
                plain[_json_text(kv.get("key"), "key")] = _json_plain(kv.get("value"), depth + 1)
        return flat(plain) if top else plain
    result = convert(item)
    if not top and isinstance(result, float) and not math.isfinite(result):
        return str(result)
    return result


def _json_string(item: Any) -> str:
    return _json_text(item, "stringValue")


def _json_bool(item: Any) -> bool:
    if not isinstance(item, bool):
        raise Rejected(f"boolValue {short(item)} is not a boolean")
    return item


def _json_int(item: Any) -> int:
    return _json_integer(item, -_INT64, _INT64, "intValue")


def _json_double(item: Any) -> float:
    if isinstance(item, bool):
        raise Rejected("doubleValue is a boolean")
    if isinstance(item, (int, float)) or (isinstance(item, str) and len(item) <= 64):
        try:
            return float(item)
        except (ValueError, OverflowError):
            pass
    raise Rejected(f"doubleValue {short(item)} is not a number")


def _json_bytes(item: Any) -> str:
    """Bytes stay base64 text, checked to be base64 (the proto3 JSON form of bytes)."""
    if isinstance(item, str):
        try:
            base64.b64decode(item, validate=True)
        except ValueError:
            pass
        else:
            return item
    raise Rejected("bytesValue is not base64 text")


#: The ``AnyValue`` oneof in JSON, both spellings: converter, or None for the containers.
_JSON_VALUE_FIELDS: Final[dict[str, Callable[[Any], Any] | None]] = {
    "stringValue": _json_string,
    "intValue": _json_int,
    "boolValue": _json_bool,
    "doubleValue": _json_double,
    "arrayValue": None,
    "kvlistValue": None,
    "bytesValue": _json_bytes,
    "string_value": _json_string,
    "int_value": _json_int,
    "bool_value": _json_bool,
    "double_value": _json_double,
    "array_value": None,
    "kvlist_value": None,
    "bytes_value": _json_bytes,
}


def _json_status(code: Any) -> StatusName:
    """Status code as a number or an enum name; unknown codes read as ``UNSET``."""
    if isinstance(code, str):
        return _STATUS_BY_NAME.get(code, "UNSET")
    if isinstance(code, int) and not isinstance(code, bool):
        return STATUS_BY_CODE.get(code, "UNSET")
    if code is None:
        return "UNSET"
    raise Rejected(f"status code {short(code)} is not an enum value")


def _json_id(value: Any, digits: int, what: str) -> int:
    """A hex id (the OTLP/JSON exception to proto3's base64 for bytes)."""
    if not isinstance(value, str) or len(value) != digits or not _HEX.fullmatch(value):
        raise Rejected(f"{what} {short(value)} is not {digits} hex digits")
    number = int(value, 16)
    if not number:
        raise Rejected(f"{what} is all zeros")
    return number


def _json_uint64(value: Any, what: str) -> int:
    if value is None:
        return 0
    return _json_integer(value, 0, _UINT64, what)


def _json_integer(value: Any, low: int, high: int, what: str) -> int:
    """A proto3 JSON 64-bit integer: a number, or decimal digits in a string."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, str) and _DECIMAL.fullmatch(value)) or (
        isinstance(value, float) and value.is_integer()
    ):
        number = int(value)
    if number is None or not low <= number < high:
        raise Rejected(f"{what} {short(value)} is not a 64-bit integer")
    return number


def _json_text(value: Any, what: str) -> str:
    """A string (absent: empty), lone surrogates (valid JSON escapes, not UTF-8) replaced."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Rejected(f"{what} {short(value)} is not a string")
    if value.isascii():
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)


def _json_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Rejected(f"{what} is not a list")
    return value


def _get(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    if value is None and snake != camel:
        value = obj.get(snake)
    return value


def _list(obj: dict[str, Any], camel: str, snake: str) -> list[Any]:
    """A repeated field along the path to the spans; a wrong type there is a bad body."""
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"{camel} is not a list")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"expected an object, got {type(value).__name__}")
    return value
