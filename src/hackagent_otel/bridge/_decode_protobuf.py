"""Binary protobuf OTLP trace requests (``application/x-protobuf``) -> span views.

Parsing into the generated OTLP classes is fast (about 1M spans/s); reading them back is
not: every ``KeyValue`` and ``AnyValue`` read from Python is a wrapper object and a few
calls (``json_format.MessageToDict`` manages about 9k spans/s here, this decoder about
seven times that). So the body is parsed with a private, wire-compatible view of the
request (:data:`_ViewRequest`) that declares only the fields read here (the parser skips
the rest) and each ``attributes`` list as ``map<string, bytes>``: protobuf defines a map
as exactly a repeated message of (key = 1, value = 2), which is what ``KeyValue`` is.
Looking for ``hackagent.kind`` is then one dict lookup in C, and a value is its raw
``AnyValue`` bytes: a string under 128 bytes (the usual attribute: a tag byte, a length
byte, the text) is read as it stands, anything else is parsed by the generated
``AnyValue`` (:func:`_pb_value`); the first is worth 40% of spans per second here.
An int or a bool of one varint byte (tag and byte) is read as it stands too: 80 ns
against 600 through the generated class; longer ints, doubles and longer strings by
hand gained nothing measurable. The view is declared as
a table (:data:`_VIEW_SCHEMA`) and built once, at import, in a descriptor pool of its
own, as generated ``_pb2`` modules build theirs; it never touches the default pool.
``string_value_strindex`` (an index into a profile's string table, meaningless here)
reads as empty, as unknown fields of OTLP/JSON do.

The rules both encodings keep are in :mod:`._decoded`. Pure: no I/O but the decoders'
throttled log.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf.message import DecodeError as _ProtobufDecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from hackagent_otel._spanview import EventView, SpanView
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
    span_label,
)

__all__ = ["decode_protobuf"]

_PB_SCALARS: Final = frozenset({"string_value", "bool_value", "int_value", "double_value"})
#: The rest of the ``AnyValue`` kinds a span attribute can hold. Others (newer OTLP has
#: ``string_value_strindex``) read as empty.
_PB_OTHERS: Final = frozenset({"array_value", "kvlist_value", "bytes_value"})

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
_ZERO_TRACE_ID: Final = bytes(16)
_ZERO_SPAN_ID: Final = bytes(8)
_NOT_UTF8: Final = "a string attribute is not valid UTF-8"
#: ``AnyValue`` tags of ``int_value`` (field 3) and ``bool_value`` (field 2), varints.
_INT_TAG: Final = 0x18
_ONE_BYTE_VARINTS: Final = frozenset({_INT_TAG, 0x10})


def decode_protobuf(body: bytes, *, max_spans: int | None = None) -> DecodedTraces:
    """Decode a binary protobuf ``ExportTraceServiceRequest`` (at most ``max_spans`` of
    our spans)."""
    request = _ViewRequest()
    try:
        request.ParseFromString(body)
    except (_ProtobufDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"not an OTLP protobuf trace request: {exc}") from None
    out = Tally(max_spans)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = span.attributes
                if KIND not in attributes:
                    out.ignored += 1
                    continue
                if not out.room():
                    continue
                try:
                    out.spans.append(_pb_span(span, attributes))
                except Rejected as exc:
                    out.reject(span_label(span.span_id.hex(), span.name), exc)
                except UnicodeDecodeError:
                    out.reject(span_label(span.span_id.hex(), span.name), _NOT_UTF8)
                except Exception as exc:
                    out.reject_unexpected(span_label(span.span_id.hex(), span.name), exc)
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
        None if parent in NO_PARENT else _pb_id(parent, 8, "parent span id"),
        span.end_time_unix_nano or None,
        tuple(
            [
                EventView(event.name, event.time_unix_nano, _pb_attributes(event.attributes))
                for event in events
            ]
        )
        if events
        else (),
        STATUS_BY_CODE.get(status.code, "UNSET"),
        status.message or None,
    )


def _pb_id(raw: bytes, size: int, what: str) -> int:
    if len(raw) != size:
        raise Rejected(f"{what} is {len(raw)} bytes, not {size}")
    value = int.from_bytes(raw, "big")
    if not value:
        raise Rejected(f"{what} is all zeros")
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
        elif size == 2 and value[0] in _ONE_BYTE_VARINTS and value[1] < 0x80:
            # An int or a bool of one varint byte (a step's sequence numbers): read as
            # it stands, a tenth of what the generated class takes.
            attributes[key] = value[1] if value[0] == _INT_TAG else value[1] != 0
        else:
            converted = _pb_value(key, value)
            if converted is not None:
                attributes[key] = converted
    return attributes


def _pb_value(key: str, raw: bytes) -> Any:
    """One encoded ``AnyValue`` -> an attribute value (None when it is empty), parsed by
    the generated class (as fast here as reading an int's or a bool's bytes by hand)."""
    try:
        value = AnyValue.FromString(raw)
    except (_ProtobufDecodeError, ValueError, RecursionError):
        raise Rejected(f"attribute {key[:64]!r} is not a valid AnyValue") from None
    which = value.WhichOneof("value")
    if which in _PB_SCALARS:
        return getattr(value, which)
    return flat(_pb_plain(value, 0)) if which in _PB_OTHERS else None


def _pb_plain(value: AnyValue, depth: int) -> Any:
    """An ``AnyValue`` as plain data (bytes as base64), at most MAX_VALUE_DEPTH deep."""
    which = value.WhichOneof("value")
    if which == "array_value":
        if depth >= MAX_VALUE_DEPTH:
            return TOO_DEEP
        return [_pb_plain(item, depth + 1) for item in value.array_value.values]
    if which == "kvlist_value":
        if depth >= MAX_VALUE_DEPTH:
            return TOO_DEEP
        return {kv.key: _pb_plain(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if which in _PB_SCALARS:
        return getattr(value, which)
    return None  # empty, or a kind that holds no value by itself (see _PB_OTHERS)
