"""OTLP/HTTP trace request bodies -> :class:`SpanView` s, the one shape the mapping reads.

Both OTLP/HTTP encodings of ``ExportTraceServiceRequest`` are read: binary protobuf
(``application/x-protobuf``) and OTLP/JSON (``application/json``, parameters such as
``charset`` allowed). Bodies arrive already decompressed and size-checked (the app's job).

Only our spans matter: a span is ours when it carries ``hackagent.kind``. That key is
looked for first (one dict lookup for protobuf), so other spans cost next to nothing, are
not validated, and are only counted (``ignored``). Ours are converted by hand, never with
``json_format`` (``MessageToDict`` manages about 9k spans/s here, this about seven times
that). One of ours that cannot be used (bad ids, an attribute that is not UTF-8 or not an
``AnyValue``, in JSON a field of the wrong type) is ``rejected`` with a short reason, for
OTLP partial success; a body that is not a request at all (not protobuf, not JSON, the
wrong shape on the way to the spans) raises :class:`DecodeError` (HTTP 400).

One request may bring at most ``max_spans`` spans of ours (when given): those past it
are rejected unread, with one reason saying how many, so what a request costs to decode,
map and store is bounded whatever its size. Other spans cost a lookup each.

Nothing else comes out of :func:`decode`, whatever the bytes: an unexpected exception
while converting one span (a bug here, met by data no test had) rejects that span
only, and one anywhere else becomes a :class:`DecodeError`; both are logged with their
traceback at most once per 5 s (:mod:`._throttle`). Bad data is a 400 or a partial
success, never a transient error the client would retry with the same bytes forever.

Ids: a trace id is 16 bytes, a span id 8, neither all zeros. An empty or all-zero parent
span id means no parent (OTLP's root; the SDK's invalid id). Times are kept as given;
an end time of 0 reads as "not ended" (``None``).

Attribute values are flattened to what SDK spans hold: ``str``, ``bool``, ``int``,
``float`` and tuples of those. What an SDK attribute cannot be (key-value lists, byte
strings, arrays holding either) becomes text: base64 for bytes, compact JSON for the
rest (non-finite doubles inside as text), nested at most :data:`MAX_VALUE_DEPTH` deep.
Empty values are left out, and so are ``AnyValue`` kinds that no span attribute holds
(``string_value_strindex`` indexes a profile's string table), as OTLP/JSON's unknown
fields are; a repeated key keeps its last value. Views are
``sanitized=False``: the mapping sanitizes values from other processes again. Status
codes other than 0, 1, 2 (or their names) read as ``UNSET``.

OTLP/JSON follows the proto3 JSON mapping with the OTLP exceptions: trace and span ids
are hex (either case), never base64; 64-bit integers may be strings or numbers; enums
may be numbers or names. Field names may be lowerCamelCase (what OTLP emitters send) or
the proto field names in snake_case, since proto3 JSON parsers must accept both; ``null``
means absent; unknown fields are ignored. The body must be a JSON object (an empty body
is not); lone UTF-16 surrogates in strings become U+FFFD.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError as _ProtobufDecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from hackagent_otel import semconv
from hackagent_otel._spanview import EventView, SpanView, StatusName
from hackagent_otel.bridge._throttle import ThrottledLog

__all__ = [
    "MAX_ERRORS",
    "MAX_VALUE_DEPTH",
    "DecodeError",
    "DecodedTraces",
    "UnsupportedMediaType",
    "decode",
    "decode_json",
    "decode_protobuf",
]

#: At most this many rejection reasons are kept (``rejected`` counts them all).
MAX_ERRORS: Final = 10
#: Key-value lists and arrays nested deeper than this become ``"<too deeply nested>"``.
MAX_VALUE_DEPTH: Final = 12

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"

_KIND: Final = semconv.KIND
_TOO_DEEP: Final = "<too deeply nested>"
_STATUS_BY_CODE: Final[dict[int, StatusName]] = {0: "UNSET", 1: "OK", 2: "ERROR"}
_STATUS_BY_NAME: Final[dict[str, StatusName]] = {
    "STATUS_CODE_UNSET": "UNSET",
    "STATUS_CODE_OK": "OK",
    "STATUS_CODE_ERROR": "ERROR",
}
_PB_SCALARS: Final = frozenset({"string_value", "bool_value", "int_value", "double_value"})
#: The rest of the ``AnyValue`` kinds a span attribute can hold. Others (newer OTLP has
#: ``string_value_strindex``, an index into a profile's string table, meaningless here)
#: read as empty, as unknown fields of OTLP/JSON do.
_PB_OTHERS: Final = frozenset({"array_value", "kvlist_value", "bytes_value"})
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_DECIMAL: Final = re.compile(r"-?[0-9]{1,20}")
#: After ``json.loads`` joined the valid pairs, any surrogate left is a lone one.
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_UINT64: Final = 1 << 64
_INT64: Final = 1 << 63
_log: Final = ThrottledLog(logging.getLogger("hackagent_otel.bridge"))


class DecodeError(ValueError):
    """The body is not an ``ExportTraceServiceRequest`` in the claimed encoding (HTTP 400)."""


class UnsupportedMediaType(Exception):
    """The content type is neither OTLP protobuf nor OTLP/JSON (HTTP 415)."""


@dataclass(frozen=True, slots=True)
class DecodedTraces:
    """What one request held: our spans as views, and counts of everything else."""

    #: Every usable span that carries ``hackagent.kind``, in request order.
    spans: list[SpanView]
    #: Spans without ``hackagent.kind``: someone else's, skipped.
    ignored: int
    #: Spans of ours that cannot be used (OTLP partial success ``rejected_spans``).
    rejected: int
    #: One short reason per rejected span, the first :data:`MAX_ERRORS` of them.
    errors: list[str]


class _Rejected(Exception):
    """One of our spans cannot be used; the message says why."""


def decode(body: bytes, content_type: str, *, max_spans: int | None = None) -> DecodedTraces:
    """Decode by ``Content-Type`` (parameters such as ``charset`` are allowed); at most
    ``max_spans`` of our spans are taken, the rest rejected.

    Raises :class:`DecodeError` or :class:`UnsupportedMediaType`, nothing else (but
    ``MemoryError``, which says nothing about the data).
    """
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == PROTOBUF:
        decoder = decode_protobuf
    elif media_type == JSON:
        decoder = decode_json
    else:
        raise UnsupportedMediaType(
            f"content type {content_type[:100]!r} is not {PROTOBUF} or {JSON}"
        )
    try:
        return decoder(body, max_spans=max_spans)
    except (DecodeError, MemoryError):
        raise
    except Exception as exc:
        _log.warning(
            "could not decode a request: %r", exc, key=("request", type(exc)), exc_info=True
        )
        raise DecodeError(f"the request cannot be decoded ({type(exc).__name__})") from None


class _Collector:
    """Accumulates the outcome of one request."""

    __slots__ = ("errors", "ignored", "limit", "over", "rejected", "spans")

    def __init__(self, limit: int | None) -> None:
        self.spans: list[SpanView] = []
        self.ignored = 0
        self.rejected = 0
        self.errors: list[str] = []
        #: Spans of ours that may be read; those past it are only counted in ``over``.
        self.limit = limit
        self.over = 0

    def room(self) -> bool:
        """Whether one more of our spans may be read (else it is counted as over)."""
        if self.limit is None or len(self.spans) + self.rejected < self.limit:
            return True
        self.over += 1
        return False

    def reject(self, where: str, reason: object) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{where}: {reason}")

    def reject_unexpected(self, where: str, exc: Exception) -> None:
        """A span whose conversion raised what no check here expected: a bug, met by
        this span's data. Only that span is lost; the traceback is logged (throttled)."""
        if isinstance(exc, MemoryError):
            raise exc
        _log.warning("could not decode %s: %r", where, exc, key=("span", type(exc)), exc_info=True)
        self.reject(where, f"cannot be decoded ({type(exc).__name__})")

    def result(self) -> DecodedTraces:
        if not self.over:
            return DecodedTraces(self.spans, self.ignored, self.rejected, self.errors)
        over = (
            f"{self.over} span(s) of ours past the limit of {self.limit} per request"
            " were not taken; send smaller batches"
        )
        errors = [over, *self.errors[: MAX_ERRORS - 1]]
        return DecodedTraces(self.spans, self.ignored, self.rejected + self.over, errors)


# -- protobuf ---------------------------------------------------------------------------
#
# Parsing into the generated OTLP classes is fast (about 1M spans/s); reading them back is
# not: every KeyValue and AnyValue read from Python is a wrapper object and a few calls.
# So the body is parsed with a private, wire-compatible view of the request that declares
# only the fields we read (the parser skips the rest) and declares each ``attributes``
# list as ``map<string, bytes>``: protobuf defines a map as exactly a repeated message of
# (key = 1, value = 2), which is what ``KeyValue`` is. Looking for ``hackagent.kind`` is
# then one dict lookup in C, and a value is its raw ``AnyValue`` bytes, which
# :func:`_pb_value` reads directly for the canonical one-field encodings of strings,
# ints, bools and doubles and hands to the generated ``AnyValue`` for anything else.
# Duplicate keys keep the last value, as they would in a dict built from the list.

_VIEW_PACKAGE: Final = "hackagent_otel.otlp_trace_view"
#: Message -> fields (name, number, type): a scalar type, ``*Message`` for repeated
#: messages, ``Message`` for one, ``map`` for ``map<string, bytes>``.
_VIEW_SCHEMA: Final[dict[str, tuple[tuple[str, int, str], ...]]] = {
    "Request": (("resource_spans", 1, "*ResourceSpans"),),
    "ResourceSpans": (("scope_spans", 2, "*ScopeSpans"),),
    "ScopeSpans": (("spans", 2, "*Span"),),
    "Span": (
        ("trace_id", 1, "bytes"),
        ("span_id", 2, "bytes"),
        ("parent_span_id", 4, "bytes"),
        ("name", 5, "string"),
        ("start_time_unix_nano", 7, "fixed64"),
        ("end_time_unix_nano", 8, "fixed64"),
        ("attributes", 9, "map"),
        ("events", 11, "*Event"),
        ("status", 15, "Status"),
    ),
    "Event": (("time_unix_nano", 1, "fixed64"), ("name", 2, "string"), ("attributes", 3, "map")),
    "Status": (("message", 2, "string"), ("code", 3, "int32")),  # an open enum is an int32
}


def _view_request_class() -> Any:
    """Build the view schema above in a private descriptor pool; return its request class."""
    from google.protobuf import (  # type: ignore[import-untyped]
        descriptor_pb2,
        descriptor_pool,
        message_factory,
    )

    types = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="hackagent_otel/otlp_trace_view.proto", package=_VIEW_PACKAGE, syntax="proto3"
    )
    optional, repeated = types.LABEL_OPTIONAL, types.LABEL_REPEATED
    for message_name, fields in _VIEW_SCHEMA.items():
        message = file.message_type.add(name=message_name)
        for name, number, kind in fields:
            field = message.field.add(name=name, number=number, label=optional)
            target = kind.lstrip("*")
            if kind == "map":  # map<string, bytes>: a repeated nested entry message
                entry = message.nested_type.add(name=f"{name.title()}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=optional, type=types.TYPE_STRING)
                entry.field.add(name="value", number=2, label=optional, type=types.TYPE_BYTES)
                target = f"{message_name}.{entry.name}"
            if target[0].isupper():
                field.type = types.TYPE_MESSAGE
                field.type_name = f".{_VIEW_PACKAGE}.{target}"
                field.label = repeated if kind[0] == "*" or kind == "map" else optional
            else:
                field.type = getattr(types, f"TYPE_{kind.upper()}")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    descriptor = pool.FindMessageTypeByName(f"{_VIEW_PACKAGE}.Request")
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is None:
        return message_factory.MessageFactory(pool).GetPrototype(descriptor)
    return get_class(descriptor)


_ViewRequest: Final = _view_request_class()
_DOUBLE: Final = struct.Struct("<d")
#: A parent span id that means "no parent": empty (OTLP's root) or the invalid all zeros.
_NO_PARENT: Final = (None, b"", bytes(8), "", "0" * 16)
_ZERO_TRACE_ID: Final = bytes(16)
_ZERO_SPAN_ID: Final = bytes(8)
_NOT_UTF8: Final = "a string attribute is not valid UTF-8"


def decode_protobuf(body: bytes, *, max_spans: int | None = None) -> DecodedTraces:
    """Decode a binary protobuf ``ExportTraceServiceRequest`` (at most ``max_spans`` of
    our spans)."""
    request = _ViewRequest()
    try:
        request.ParseFromString(body)
    except (_ProtobufDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"not an OTLP protobuf trace request: {exc}") from None
    out = _Collector(max_spans)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = span.attributes
                if _KIND not in attributes:
                    out.ignored += 1
                    continue
                if not out.room():
                    continue
                try:
                    out.spans.append(_pb_span(span, attributes))
                except _Rejected as exc:
                    out.reject(_where(span.span_id.hex(), span.name), exc)
                except UnicodeDecodeError:
                    out.reject(_where(span.span_id.hex(), span.name), _NOT_UTF8)
                except Exception as exc:
                    out.reject_unexpected(_where(span.span_id.hex(), span.name), exc)
    return out.result()


def _pb_span(span: Any, attributes: Mapping[str, bytes]) -> SpanView:
    """One of our spans as a view (positional arguments and inlined id checks: this runs
    once per span, and every call and keyword here shows in spans per second)."""
    trace_raw, span_raw, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_raw) != 16 or trace_raw == _ZERO_TRACE_ID:
        _pb_id(trace_raw, 16, "trace id")  # raises, saying why
    if len(span_raw) != 8 or span_raw == _ZERO_SPAN_ID:
        _pb_id(span_raw, 8, "span id")
    status = span.status
    events = span.events
    return SpanView(
        span.name,
        int.from_bytes(trace_raw, "big"),
        int.from_bytes(span_raw, "big"),
        span.start_time_unix_nano,
        _pb_attributes(attributes),
        None if parent in _NO_PARENT else _pb_id(parent, 8, "parent span id"),
        span.end_time_unix_nano or None,
        tuple(
            [
                EventView(event.name, event.time_unix_nano, _pb_attributes(event.attributes))
                for event in events
            ]
        )
        if events
        else (),
        _STATUS_BY_CODE.get(status.code, "UNSET"),
        status.message or None,
    )


def _pb_id(raw: bytes, size: int, what: str) -> int:
    if len(raw) != size:
        raise _Rejected(f"{what} is {len(raw)} bytes, not {size}")
    value = int.from_bytes(raw, "big")
    if not value:
        raise _Rejected(f"{what} is all zeros")
    return value


def _pb_attributes(raw: Mapping[str, bytes]) -> dict[str, Any]:
    """Raw ``AnyValue`` bytes by key -> attribute values; empty values are left out."""
    attributes: dict[str, Any] = {}
    for key in raw:  # faster than .items(), which the map only has as a Python mixin
        value = raw[key]
        size = len(value)
        # Inlined fast path: a string shorter than 128 bytes, the usual attribute (tag,
        # one length byte, the text; a lone tag byte is a truncated AnyValue, left to
        # the parser to refuse). Invalid UTF-8 raises UnicodeDecodeError: the span is
        # rejected.
        if size > 1 and value[0] == 0x0A and value[1] == size - 2:
            attributes[key] = value[2:].decode()
        else:
            converted = _pb_value(key, value)
            if converted is not None:
                attributes[key] = converted
    return attributes


def _pb_value(key: str, raw: bytes) -> Any:
    """One encoded ``AnyValue`` -> an attribute value (None when it is empty)."""
    size = len(raw)
    tag = raw[0] if raw else 0
    if tag == 0x0A and size > 3 and raw[1] & 0x80 and raw[2] < 0x80:  # 2-byte length
        if (raw[1] & 0x7F | raw[2] << 7) == size - 3:
            return raw[3:].decode()
    elif tag == 0x18 and 2 <= size <= 10 and raw[-1] < 0x80:  # non-negative int_value
        number = 0
        for shift, byte in enumerate(raw[1:]):
            number |= (byte & 0x7F) << (7 * shift)
        if all(byte & 0x80 for byte in raw[1:-1]):
            return number
    elif tag == 0x10 and size == 2 and raw[1] < 2:
        return raw[1] == 1
    elif tag == 0x21 and size == 9:
        return _DOUBLE.unpack_from(raw, 1)[0]
    try:
        value = AnyValue.FromString(raw)
    except (_ProtobufDecodeError, ValueError, RecursionError):
        raise _Rejected(f"attribute {key[:64]!r} is not a valid AnyValue") from None
    which = value.WhichOneof("value")
    if which in _PB_SCALARS:
        return getattr(value, which)
    return _flat(_pb_plain(value, 0)) if which in _PB_OTHERS else None


def _pb_plain(value: AnyValue, depth: int) -> Any:
    """An ``AnyValue`` as plain data (bytes as base64), at most MAX_VALUE_DEPTH deep."""
    which = value.WhichOneof("value")
    if which == "array_value":
        if depth >= MAX_VALUE_DEPTH:
            return _TOO_DEEP
        return [_pb_plain(item, depth + 1) for item in value.array_value.values]
    if which == "kvlist_value":
        if depth >= MAX_VALUE_DEPTH:
            return _TOO_DEEP
        return {kv.key: _pb_plain(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if which in _PB_SCALARS:
        return getattr(value, which)
    return None  # empty, or a kind that holds no value by itself (see _PB_OTHERS)


# -- JSON -------------------------------------------------------------------------------


def decode_json(body: bytes, *, max_spans: int | None = None) -> DecodedTraces:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest`` (UTF-8; at most ``max_spans``
    of our spans)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise DecodeError("an OTLP/JSON request is a JSON object")
    out = _Collector(max_spans)
    for resource_spans in _list(request, "resourceSpans", "resource_spans"):
        for scope_spans in _list(_object(resource_spans), "scopeSpans", "scope_spans"):
            for span in _list(_object(scope_spans), "spans", "spans"):
                _json_span_into(out, _object(span))
    return out.result()


def _json_span_into(out: _Collector, span: dict[str, Any]) -> None:
    kvs = span.get("attributes")
    if not isinstance(kvs, list) or not any(
        isinstance(kv, dict) and kv.get("key") == _KIND for kv in kvs
    ):
        out.ignored += 1
        return
    if not out.room():
        return
    try:
        out.spans.append(_json_span(span, kvs))
    except Exception as exc:
        span_id = _get(span, "spanId", "span_id")
        where = _where(span_id if isinstance(span_id, str) else "?", span.get("name"))
        if isinstance(exc, _Rejected):
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
        raise _Rejected("status is not an object")
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
        parent_span_id=None if parent in _NO_PARENT else _json_id(parent, 16, "parent span id"),
        end_time_ns=end or None,
        events=tuple(_json_event(event) for event in _json_list(events, "events")),
        status=_json_status(_get(status, "code", "code")),
        status_description=description or None,
    )


def _json_event(event: Any) -> EventView:
    if not isinstance(event, dict):
        raise _Rejected("an event is not an object")
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
            raise _Rejected("an attribute is not an object")
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
        raise _Rejected("an attribute value is not an AnyValue object")
    for key, item in value.items():
        if item is not None and key in _JSON_VALUE_FIELDS:
            break
    else:
        return None  # an empty AnyValue
    convert = _JSON_VALUE_FIELDS[key]
    if convert is None:  # array or kvlist
        if depth >= MAX_VALUE_DEPTH:
            return _TOO_DEEP
        if not isinstance(item, dict):
            raise _Rejected(f"{key} is not an object")
        items = _json_list(item.get("values"), f"{key}.values")
        if key in ("arrayValue", "array_value"):
            plain: Any = [_json_plain(v, depth + 1) for v in items]
        else:
            plain = {}
            for kv in items:
                if not isinstance(kv, dict):
                    raise _Rejected("a key-value list entry is not an object")
                plain[_json_text(kv.get("key"), "key")] = _json_plain(kv.get("value"), depth + 1)
        return _flat(plain) if top else plain
    result = convert(item)
    if not top and isinstance(result, float) and not math.isfinite(result):
        return str(result)
    return result


def _json_string(item: Any) -> str:
    return _json_text(item, "stringValue")


def _json_bool(item: Any) -> bool:
    if not isinstance(item, bool):
        raise _Rejected(f"boolValue {_short(item)} is not a boolean")
    return item


def _json_int(item: Any) -> int:
    return _json_integer(item, -_INT64, _INT64, "intValue")


def _json_double(item: Any) -> float:
    if isinstance(item, bool):
        raise _Rejected("doubleValue is a boolean")
    if isinstance(item, (int, float)) or (isinstance(item, str) and len(item) <= 64):
        try:
            return float(item)
        except (ValueError, OverflowError):
            pass
    raise _Rejected(f"doubleValue {_short(item)} is not a number")


def _json_bytes(item: Any) -> str:
    """Bytes stay base64 text, checked to be base64 (the proto3 JSON form of bytes)."""
    if isinstance(item, str):
        try:
            base64.b64decode(item, validate=True)
        except ValueError:
            pass
        else:
            return item
    raise _Rejected("bytesValue is not base64 text")


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
        return _STATUS_BY_CODE.get(code, "UNSET")
    if code is None:
        return "UNSET"
    raise _Rejected(f"status code {_short(code)} is not an enum value")


def _json_id(value: Any, digits: int, what: str) -> int:
    """A hex id (the OTLP/JSON exception to proto3's base64 for bytes)."""
    if not isinstance(value, str) or len(value) != digits or not _HEX.fullmatch(value):
        raise _Rejected(f"{what} {_short(value)} is not {digits} hex digits")
    number = int(value, 16)
    if not number:
        raise _Rejected(f"{what} is all zeros")
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
        raise _Rejected(f"{what} {_short(value)} is not a 64-bit integer")
    return number


def _json_text(value: Any, what: str) -> str:
    """A string (absent: empty), lone surrogates (valid JSON escapes, not UTF-8) replaced."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Rejected(f"{what} {_short(value)} is not a string")
    if value.isascii():
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)


def _json_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Rejected(f"{what} is not a list")
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


# -- shared -----------------------------------------------------------------------------


def _flat(plain: Any) -> Any:
    """A converted non-scalar attribute value as an SDK-style attribute value.

    Arrays of scalars become tuples (as the SDK holds them); key-value lists and arrays
    holding anything else become compact JSON text; bytes are already base64 text.
    """
    if isinstance(plain, list) and all(isinstance(item, (str, bool, int, float)) for item in plain):
        return tuple(plain)
    if isinstance(plain, (dict, list)):
        return json.dumps(plain, separators=(",", ":"), ensure_ascii=False, default=str)
    return plain


def _where(span_id: str, name: Any) -> str:
    label = name[:64] if isinstance(name, str) else "?"
    return f"span {span_id[:32] or '?'} ({label!r})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
