"""The bridge's OTLP/HTTP decoder: SDK-encoded bodies in, span views that map like the originals.

Payloads are made by the SDK's own OTLP protobuf encoder from real tracker spans; OTLP/JSON
is the proto3 JSON of the same request with hex ids (the Python SDK has no JSON encoder).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import ReadableSpan

from apps.scenario import run_seed_scenario
from bridge_support import new_ids, otlp_json_dict, otlp_protobuf, scenario_spans
from hackagent_otel import StepTracker, _tracer, semconv
from hackagent_otel._mapping import map_end
from hackagent_otel._spanview import SpanView, from_sdk_span
from hackagent_otel.bridge import _decode_protobuf, _decoded
from hackagent_otel.bridge._decode import (
    MAX_ERRORS,
    MAX_VALUE_DEPTH,
    DecodedTraces,
    DecodeError,
    UnsupportedMediaType,
    decode,
    decode_json,
    decode_protobuf,
)
from hackagent_otel.bridge._decode_protobuf import _ViewRequest
from hackagent_otel.bridge._throttle import ThrottledLog
from otel_fixtures import OTel

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")

# -- payloads ------------------------------------------------------------------------------


def protobuf_body(spans: Iterable[ReadableSpan]) -> bytes:
    body: bytes = encode_spans(list(spans)).SerializeToString()
    return body


def json_of(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON of a request: proto3 JSON, except that ids are hex, as OTLP requires."""
    data: dict[str, Any] = json.loads(json_format.MessageToJson(request))
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for item in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return data


def json_body(spans: Iterable[ReadableSpan]) -> bytes:
    return json.dumps(json_of(encode_spans(list(spans)))).encode()


def request_of(*spans: Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.extend(spans)
    return request


def span_pb(
    attributes: dict[str, AnyValue] | None = None,
    *,
    trace_id: bytes = TRACE_ID,
    span_id: bytes = SPAN_ID,
    parent_span_id: bytes = b"",
    ours: bool = True,
) -> Span:
    """A span made by hand (for what the SDK never sends); ``ours`` adds hackagent.kind."""
    kvs = [KeyValue(key=key, value=value) for key, value in (attributes or {}).items()]
    if ours:
        kvs.insert(0, KeyValue(key=semconv.KIND, value=AnyValue(string_value="step")))
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name="hand-made",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_000_000_000,
        attributes=kvs,
    )


def both(
    request: ExportTraceServiceRequest, max_spans: int | None = None
) -> tuple[DecodedTraces, DecodedTraces]:
    """A request decoded from protobuf and from OTLP/JSON."""
    return (
        decode_protobuf(request.SerializeToString(), max_spans=max_spans),
        decode_json(json.dumps(json_of(request)).encode(), max_spans=max_spans),
    )


def by_span_id(views: Iterable[SpanView]) -> dict[int, SpanView]:
    return {view.span_id: view for view in views}


def ours(otel: OTel) -> list[ReadableSpan]:
    return [s for s in otel.spans() if semconv.KIND in (s.attributes or {})]


# -- the property the bridge relies on -----------------------------------------------------


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_sdk_encoded_spans_decode_to_views_that_map_like_the_originals(
    otel: OTel, tracker: StepTracker, encoding: str
) -> None:
    run_seed_scenario(tracker)
    spans = ours(otel)
    body = protobuf_body(spans) if encoding == "protobuf" else json_body(spans)

    decoded = decode_protobuf(body) if encoding == "protobuf" else decode_json(body)

    assert (decoded.ignored, decoded.rejected, decoded.errors) == (0, 0, [])
    views = by_span_id(decoded.spans)
    assert len(views) == len(spans) >= 6
    for span in spans:
        original = from_sdk_span(span)
        view = views[original.span_id]
        assert view.sanitized is False
        assert replace(view, sanitized=original.sanitized) == original
        assert map_end(view, _tracer.source.sanitizer, include_start=True) == map_end(
            original, _tracer.source.sanitizer, include_start=True
        )


def test_a_failed_step_keeps_its_error_status_and_description(
    otel: OTel, tracker: StepTracker
) -> None:
    with pytest.raises(RuntimeError), tracker.track_step("Boom", "STEP"):
        raise RuntimeError("judge down")
    (span,) = otel.steps()
    for decoded in (decode_protobuf(protobuf_body([span])), decode_json(json_body([span]))):
        (view,) = decoded.spans
        assert view.status == "ERROR"
        assert view.status_description == "RuntimeError: judge down"
        assert [e.name for e in view.events][-1] == "exception"


def test_a_request_of_several_resources_and_scopes_keeps_span_order(
    otel: OTel, tracker: StepTracker
) -> None:
    for i in range(3):
        with tracker.track_step(f"S{i}", "STEP"):
            pass
    spans = otel.steps()
    request = ExportTraceServiceRequest()
    for span in spans:  # one resource each, with an empty scope in front
        resource_spans = request.resource_spans.add()
        resource_spans.scope_spans.add()
        resource_spans.scope_spans.extend(encode_spans([span]).resource_spans[0].scope_spans)
    for decoded in both(request):
        assert [v.name for v in decoded.spans] == ["S0", "S1", "S2"]


# -- foreign spans ----------------------------------------------------------------------------


def test_foreign_spans_are_counted_and_skipped(otel: OTel, tracker: StepTracker) -> None:
    other = otel.provider.get_tracer("someone.else")
    with other.start_as_current_span("GET /") as span:
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("hackagent.run.id", str(uuid.uuid4()))  # ours only with a kind
        with tracker.track_step("Mine", "STEP"):
            pass
    with other.start_as_current_span("bare"):
        pass
    for decoded in (
        decode_protobuf(protobuf_body(otel.spans())),
        decode_json(json_body(otel.spans())),
    ):
        assert [v.name for v in decoded.spans] == ["Mine"]
        assert (decoded.ignored, decoded.rejected) == (2, 0)


def test_foreign_spans_with_bad_ids_or_values_are_only_ignored() -> None:
    foreign = span_pb(
        {"x": AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k")]))},
        trace_id=b"\x00" * 16,
        span_id=b"abc",
        ours=False,
    )
    for decoded in both(request_of(foreign)):
        assert (decoded.spans, decoded.ignored, decoded.rejected) == ([], 1, 0)
    data = json_of(request_of(foreign))
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = "soon"
    assert decode_json(json.dumps(data).encode()).ignored == 1


# -- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        ({"trace_id": b"\x01" * 15}, "trace id is 15 bytes, not 16"),
        ({"trace_id": b"\x00" * 16}, "trace id is all zeros"),
        ({"trace_id": b""}, "trace id is 0 bytes, not 16"),
        ({"span_id": b"\x01" * 9}, "span id is 9 bytes, not 8"),
        ({"span_id": b"\x00" * 8}, "span id is all zeros"),
        ({"parent_span_id": b"\x01" * 4}, "parent span id is 4 bytes, not 8"),
    ],
)
def test_our_spans_with_bad_ids_are_rejected_with_a_reason(
    ids: dict[str, Any], reason: str
) -> None:
    request = request_of(span_pb(**ids), span_pb(span_id=b"\x02" * 8))
    decoded = decode_protobuf(request.SerializeToString())
    assert [v.span_id for v in decoded.spans] == [0x0202020202020202]
    assert (decoded.ignored, decoded.rejected) == (0, 1)
    (error,) = decoded.errors
    assert error.endswith(reason)
    assert "'hand-made'" in error


def test_an_all_zero_parent_is_no_parent() -> None:
    (decoded, from_json) = both(request_of(span_pb(parent_span_id=b"\x00" * 8)))
    assert decoded.spans[0].parent_span_id is None
    assert from_json.spans[0].parent_span_id is None


def test_rejection_reasons_are_bounded_but_all_rejections_counted() -> None:
    request = request_of(*[span_pb(span_id=b"\x00" * 8) for _ in range(MAX_ERRORS + 5)])
    for decoded in both(request):
        assert decoded.rejected == MAX_ERRORS + 5
        assert len(decoded.errors) == MAX_ERRORS


def test_spans_of_ours_past_max_spans_are_rejected_unread_with_one_reason() -> None:
    spans = [span_pb(span_id=bytes([i + 1]) * 8) for i in range(5)]
    spans.insert(1, span_pb(span_id=b"\x00" * 8))  # rejected: counts towards the limit
    spans += [span_pb(span_id=bytes([9 + i]) * 8, ours=False) for i in range(2)]
    for decoded in both(request_of(*spans), max_spans=3):
        assert [v.span_id for v in decoded.spans] == [0x0101010101010101, 0x0202020202020202]
        assert (decoded.ignored, decoded.rejected) == (2, 1 + 3)
        assert decoded.errors[0] == (
            "3 span(s) of ours past the limit of 3 per request were not taken; send smaller batches"
        )
        assert decoded.errors[1].endswith("span id is all zeros")


def test_json_ids_are_hex_in_either_case_not_base64() -> None:
    data = json_of(request_of(span_pb(parent_span_id=b"\xab" * 8)))
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = span["traceId"].upper()
    (view,) = decode_json(json.dumps(data).encode()).spans
    assert view.trace_id_hex == TRACE_ID.hex()
    assert view.parent_span_id == int("ab" * 8, 16)

    span["spanId"] = base64.b64encode(SPAN_ID).decode()
    decoded = decode_json(json.dumps(data).encode())
    assert decoded.rejected == 1
    assert "is not 16 hex digits" in decoded.errors[0]
    span["spanId"] = "0x" + SPAN_ID.hex()[2:]
    assert decode_json(json.dumps(data).encode()).rejected == 1


# -- OTLP/JSON details ---------------------------------------------------------------------------


def json_span(**fields: Any) -> bytes:
    span: dict[str, Any] = {
        "traceId": TRACE_ID.hex(),
        "spanId": SPAN_ID.hex(),
        "name": "j",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [{"key": semconv.KIND, "value": {"stringValue": "step"}}],
    }
    span.update(fields)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def test_json_int64_may_be_strings_or_numbers() -> None:
    attributes = [
        {"key": semconv.KIND, "value": {"stringValue": "step"}},
        {"key": "as_string", "value": {"intValue": "-9223372036854775808"}},
        {"key": "as_number", "value": {"intValue": 42}},
        {"key": "as_float", "value": {"intValue": 7.0}},
    ]
    body = json_span(startTimeUnixNano=1_700_000_000_000_000_000, attributes=attributes)
    (view,) = decode_json(body).spans
    assert view.start_time_ns == 1_700_000_000_000_000_000
    assert view.end_time_ns == 1_700_000_001_000_000_000
    assert view.attributes["as_string"] == -(2**63)
    assert view.attributes["as_number"] == 42
    assert view.attributes["as_float"] == 7


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"startTimeUnixNano": "18446744073709551616"}, "start time"),
        ({"startTimeUnixNano": "-1"}, "start time"),
        ({"startTimeUnixNano": "1e9"}, "start time"),
        ({"startTimeUnixNano": True}, "start time"),
        ({"endTimeUnixNano": " 12"}, "end time"),
        ({"status": "ERROR"}, "status is not an object"),
        ({"events": {}}, "events is not a list"),
        ({"events": [1]}, "an event is not an object"),
        ({"name": 5}, "name 5 is not a string"),
    ],
)
def test_json_fields_of_the_wrong_shape_reject_our_span(
    fields: dict[str, Any], reason: str
) -> None:
    decoded = decode_json(json_span(**fields))
    assert decoded.rejected == 1
    assert reason in decoded.errors[0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"intValue": "9223372036854775808"}, "intValue"),
        ({"intValue": "12abc"}, "intValue"),
        ({"boolValue": "true"}, "boolValue"),
        ({"doubleValue": "fast"}, "doubleValue"),
        ({"doubleValue": 10**400}, "doubleValue"),
        ({"bytesValue": "not base64!"}, "bytesValue"),
        ({"stringValue": 3}, "stringValue"),
        ({"kvlistValue": []}, "kvlistValue is not an object"),
        ({"arrayValue": {"values": 1}}, "arrayValue.values is not a list"),
        ("plain", "not an AnyValue object"),
    ],
)
def test_json_attribute_values_of_the_wrong_type_reject_our_span(value: Any, reason: str) -> None:
    attributes = [
        {"key": semconv.KIND, "value": {"stringValue": "step"}},
        {"key": "bad", "value": value},
    ]
    decoded = decode_json(json_span(attributes=attributes))
    assert decoded.rejected == 1
    assert reason in decoded.errors[0]


def test_json_enums_may_be_names_or_numbers_and_snake_case_keys_are_accepted() -> None:
    for code in (2, "STATUS_CODE_ERROR"):
        (view,) = decode_json(json_span(status={"code": code, "message": "m"})).spans
        assert (view.status, view.status_description) == ("ERROR", "m")
    (view,) = decode_json(json_span(status={"code": 9})).spans
    assert view.status == "UNSET"
    snake = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE_ID.hex(),
                                "span_id": SPAN_ID.hex(),
                                "parent_span_id": "",
                                "start_time_unix_nano": "5",
                                "attributes": [
                                    {"key": semconv.KIND, "value": {"string_value": "step"}},
                                    {"key": "n", "value": {"int_value": "3"}},
                                ],
                                "events": [{"time_unix_nano": "6", "name": "e"}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (view,) = decode_json(json.dumps(snake).encode()).spans
    assert (view.start_time_ns, view.parent_span_id, view.attributes["n"]) == (5, None, 3)
    assert (view.events[0].name, view.events[0].timestamp_ns) == ("e", 6)


def test_json_nulls_are_absent_fields_and_unknown_fields_are_ignored() -> None:
    body = json_span(
        parentSpanId=None, events=None, status=None, flags=257, droppedAttributesCount=3
    )
    (view,) = decode_json(body).spans
    assert (view.parent_span_id, view.events, view.status) == (None, (), "UNSET")
    assert decode_json(b'{"resourceSpans": null, "extra": 1}').spans == []


def test_json_lone_surrogates_become_replacement_characters() -> None:
    body = json_span(name="a\ud800b").replace(b"a\\ud800b", b"a\\ud800b\\ud83d\\ude00")
    (view,) = decode_json(body).spans
    assert view.name == "a\ufffdb\U0001f600"
    view.name.encode("utf-8")


# -- attribute values ------------------------------------------------------------------------------


def av(**value: Any) -> AnyValue:
    return AnyValue(**value)


def nested_kvlist(depth: int) -> AnyValue:
    value = av(string_value="bottom")
    for level in range(depth):
        value = av(kvlist_value={"values": [KeyValue(key=f"l{level}", value=value)]})
    return value


def test_attribute_values_flatten_to_what_sdk_spans_hold() -> None:
    attributes = {
        "s": av(string_value="x" * 200),
        "long": av(string_value="y" * 20_000),
        "empty_string": av(string_value=""),
        "unicode": av(string_value="prompt: ignore previous instructions \u2603"),
        "b": av(bool_value=True),
        "f": av(bool_value=False),
        "i": av(int_value=-5),
        "big": av(int_value=2**62),
        "zero": av(int_value=0),
        "one_byte": av(int_value=127),  # read by hand: tag and one varint byte
        "two_bytes": av(int_value=128),  # by the generated class
        "d": av(double_value=0.5),
        "nan": av(double_value=math.nan),
        "strings": av(array_value={"values": [av(string_value="a"), av(string_value="b")]}),
        "ints": av(array_value={"values": [av(int_value=1), av(int_value=300)]}),
        "mixed": av(
            array_value={"values": [av(int_value=1), av(array_value={"values": []}), av()]}
        ),
        "kv": av(
            kvlist_value={
                "values": [
                    KeyValue(key="a", value=av(int_value=1)),
                    KeyValue(key="b", value=av(bytes_value=b"\x00\xff")),
                    KeyValue(key="c", value=av(double_value=math.inf)),
                ]
            }
        ),
        "raw": av(bytes_value=b"\x00\x01secret?"),
        "unset": av(),
    }
    for decoded in both(request_of(span_pb(attributes))):
        attrs = decoded.spans[0].attributes
        assert attrs["s"] == "x" * 200
        assert attrs["long"] == "y" * 20_000
        assert attrs["empty_string"] == ""
        assert attrs["unicode"].endswith("\u2603")
        assert (attrs["b"], attrs["f"], attrs["i"], attrs["big"], attrs["zero"]) == (
            True,
            False,
            -5,
            2**62,
            0,
        )
        assert (attrs["one_byte"], attrs["two_bytes"]) == (127, 128)
        assert type(attrs["one_byte"]) is int
        assert type(attrs["b"]) is bool
        assert attrs["d"] == 0.5
        assert math.isnan(attrs["nan"])
        assert attrs["strings"] == ("a", "b")
        assert attrs["ints"] == (1, 300)
        assert json.loads(attrs["mixed"]) == [1, [], None]
        assert json.loads(attrs["kv"]) == {"a": 1, "b": "AP8=", "c": "inf"}
        assert attrs["raw"] == base64.b64encode(b"\x00\x01secret?").decode()
        assert "unset" not in attrs


def test_anyvalue_kinds_that_are_no_span_attribute_value_are_left_out_as_in_json() -> None:
    strindex = b"\x40\x03"  # AnyValue.string_value_strindex = 3 (field 8): a profile's
    in_array = length_delimited(5, length_delimited(1, strindex))  # string table index
    body = request_of_raw(
        span_with_raw_attribute(strindex)
        + length_delimited(9, length_delimited(1, b"arr") + length_delimited(2, in_array))
    )
    (view,) = decode_protobuf(body).spans
    assert "bad" not in view.attributes
    assert view.attributes["arr"] == "[null]"
    data = json_span(
        attributes=[
            {"key": semconv.KIND, "value": {"stringValue": "step"}},
            {"key": "bad", "value": {"stringValueStrindex": 3}},
        ]
    )
    assert "bad" not in decode_json(data).spans[0].attributes


def test_deeply_nested_values_are_cut_at_the_depth_limit() -> None:
    for decoded in both(request_of(span_pb({"deep": nested_kvlist(MAX_VALUE_DEPTH + 8)}))):
        text = decoded.spans[0].attributes["deep"]
        assert text.count("{") == MAX_VALUE_DEPTH
        assert '"<too deeply nested>"' in text
        assert "bottom" not in text


def test_json_nesting_beyond_the_parser_is_a_decode_error_not_a_crash() -> None:
    deep: dict[str, Any] = {"stringValue": "x"}
    for _ in range(300):
        deep = {"arrayValue": {"values": [deep]}}
    body = json_span(
        attributes=[
            {"key": semconv.KIND, "value": {"stringValue": "step"}},
            {"key": "d", "value": deep},
        ]
    )
    assert "too deeply nested" in decode_json(body).spans[0].attributes["d"]
    with pytest.raises(DecodeError):
        decode_json(b"[" * 200_000 + b"]" * 200_000)


def length_delimited(number: int, payload: bytes) -> bytes:
    """One protobuf length-delimited field, encoded by hand."""

    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_protobuf_nesting_beyond_the_parser_rejects_only_that_span() -> None:
    value = length_delimited(1, b"bottom")  # AnyValue{string_value}
    for _ in range(200):  # too deep for the generated classes to even build
        key_value = length_delimited(1, b"k") + length_delimited(2, value)
        value = length_delimited(6, length_delimited(1, key_value))  # kvlist_value
    deep = span_pb().SerializeToString() + length_delimited(
        9, length_delimited(1, b"deep") + length_delimited(2, value)
    )
    scope = length_delimited(2, deep) + length_delimited(
        2, span_pb(span_id=b"\x03" * 8).SerializeToString()
    )
    body = length_delimited(1, length_delimited(2, scope))
    decoded = decode_protobuf(body)
    assert (len(decoded.spans), decoded.rejected) == (1, 1)
    assert "not a valid AnyValue" in decoded.errors[0]


def test_invalid_utf8_in_our_string_attribute_rejects_the_span_only() -> None:
    marker = "\x01MARKER\x01"
    body = request_of(
        span_pb({"s": av(string_value=marker)}),
        span_pb({"s": av(string_value=marker)}, span_id=b"\x04" * 8, ours=False),
        span_pb(span_id=b"\x05" * 8),
    ).SerializeToString()
    body = body.replace(marker.encode(), b"\xffMARKER\xc3")
    decoded = decode_protobuf(body)
    assert [v.span_id for v in decoded.spans] == [0x0505050505050505]
    assert (decoded.ignored, decoded.rejected) == (1, 1)
    assert "UTF-8" in decoded.errors[0]


def span_with_raw_attribute(
    raw: bytes, *, span_id: bytes = SPAN_ID, in_event: bool = False
) -> bytes:
    """One of our spans (serialized) with attribute ``bad`` whose ``AnyValue`` is ``raw``
    as it is on the wire, on the span or on an event of it."""
    key_value = length_delimited(1, b"bad") + length_delimited(2, raw)
    if in_event:  # Span.events is field 11; Event.name 2, Event.attributes 3
        extra = length_delimited(11, length_delimited(2, b"e") + length_delimited(3, key_value))
    else:  # Span.attributes is field 9
        extra = length_delimited(9, key_value)
    return bytes(span_pb(span_id=span_id).SerializeToString()) + extra


def request_of_raw(*spans: bytes) -> bytes:
    scope = b"".join(length_delimited(2, span) for span in spans)
    return length_delimited(1, length_delimited(2, scope))


@pytest.mark.parametrize("in_event", [False, True], ids=["span", "event"])
@pytest.mark.parametrize("raw", [b"\x0a", b"\x0a\x05ab", b"\x18", b"\x21\x00", b"\xff"])
def test_an_attribute_value_that_is_no_anyvalue_rejects_only_its_span(
    raw: bytes, in_event: bool
) -> None:
    body = request_of_raw(
        span_with_raw_attribute(raw, in_event=in_event),
        span_pb(span_id=b"\x07" * 8).SerializeToString(),
    )

    decoded = decode(body, "application/x-protobuf")

    assert [v.span_id for v in decoded.spans] == [0x0707070707070707]
    assert decoded.rejected == 1
    assert "'bad' is not a valid AnyValue" in decoded.errors[0]


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder's throttled log, with nothing logged yet (it lives as long as the module)."""
    monkeypatch.setattr(_decoded, "log", ThrottledLog(logging.getLogger("hackagent_otel.bridge")))


@pytest.mark.usefixtures("fresh_log")
def test_an_unexpected_error_converting_a_span_rejects_that_span_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(raw: Any) -> dict[str, Any]:
        if "boom" in raw:
            raise IndexError("a bug met by this span")
        return original(raw)

    original = _decode_protobuf._pb_attributes
    monkeypatch.setattr(_decode_protobuf, "_pb_attributes", broken)
    body = request_of(
        span_pb({"boom": av(int_value=1)}), span_pb(span_id=b"\x08" * 8)
    ).SerializeToString()

    for _ in range(3):
        decoded = decode(body, "application/x-protobuf")
        assert [v.span_id for v in decoded.spans] == [0x0808080808080808]
        assert decoded.rejected == 1
        assert decoded.errors[0].endswith("cannot be decoded (IndexError)")

    logged = [r for r in caplog.records if "could not decode span" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


@pytest.mark.usefixtures("fresh_log")
@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
def test_an_unexpected_error_anywhere_in_decoding_is_a_decode_error_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, content_type: str
) -> None:
    def broken(self: Any) -> DecodedTraces:
        raise KeyError("a bug after the spans")

    monkeypatch.setattr(_decoded.Tally, "result", broken)
    body = PROTOBUF_SEED if "protobuf" in content_type else JSON_SEED

    for _ in range(3):
        with pytest.raises(DecodeError, match=r"cannot be decoded \(KeyError\)"):
            decode(body, content_type)

    logged = [r for r in caplog.records if "could not decode a request" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


# -- any bytes in place of one attribute value of a real export --------------------------------


@functools.cache
def real_exports() -> dict[str, bytes]:
    """A real export (the nested seed scenario) as the SDK's OTLP encoder makes it, and
    as OTLP/JSON."""
    spans = scenario_spans(*new_ids(), nested=True)
    return {
        "application/x-protobuf": otlp_protobuf(spans),
        "application/json": json.dumps(otlp_json_dict(spans)).encode(),
    }


def real_export() -> bytes:
    return real_exports()["application/x-protobuf"]


def no_decoder_bug_met(decoded: DecodedTraces) -> bool:
    """Whether no span needed the net for unexpected errors (each one would be a bug)."""
    return not any("cannot be decoded (" in error for error in decoded.errors)


def raw_value_mutations(original: bytes) -> st.SearchStrategy[bytes]:
    """Bytes in place of an encoded ``AnyValue``: cut short, one byte changed, extended,
    or anything."""
    size = max(1, len(original))
    return st.one_of(
        st.integers(0, len(original)).map(lambda n: original[:n]),
        st.tuples(st.integers(0, size - 1), st.integers(0, 255)).map(
            lambda edit: original[: edit[0]] + bytes([edit[1]]) + original[edit[0] + 1 :]
        ),
        st.binary(min_size=1, max_size=8).map(lambda tail: original + tail),
        st.binary(max_size=12),
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bytes_for_attribute_values_of_a_real_export_reject_at_most_their_spans(
    data: st.DataObject,
) -> None:
    # The decoder's own wire view of a request: attribute values are raw AnyValue bytes
    # there, so any bytes can be put in their place and the rest stays as sent.
    request = _ViewRequest.FromString(real_export())
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    ours = [s for s in spans if semconv.KIND in s.attributes]
    touched: dict[int, tuple[str, bytes]] = {}
    for _ in range(data.draw(st.integers(1, 3))):
        span = data.draw(st.sampled_from(ours))
        holders = [span, *span.events]
        holder = data.draw(st.sampled_from(holders))
        keys = sorted(k for k in holder.attributes if k != semconv.KIND)
        if not keys:
            continue
        key = data.draw(st.sampled_from(keys))
        raw = data.draw(raw_value_mutations(holder.attributes[key]))
        holder.attributes[key] = raw
        if holder is span:
            touched[int.from_bytes(span.span_id, "big")] = (key, raw)
        else:
            touched.setdefault(int.from_bytes(span.span_id, "big"), ("", b""))

    decoded = decode(request.SerializeToString(), "application/x-protobuf")  # never raises

    assert no_decoder_bug_met(decoded), decoded.errors
    assert decoded.ignored == len(spans) - len(ours)
    assert len(decoded.spans) + decoded.rejected == len(ours)
    accepted = {view.span_id: view for view in decoded.spans}
    untouched = {int.from_bytes(s.span_id, "big") for s in ours} - set(touched)
    assert untouched <= set(accepted)
    assert len(decoded.errors) == decoded.rejected
    for span_id, (key, raw) in touched.items():
        if not key or span_id not in accepted:
            continue
        try:  # accepted: the generated classes read the value too, and agree
            expected = reference_value(AnyValue.FromString(raw))
        except Exception as exc:
            raise AssertionError(f"{raw!r} was accepted as {key!r}") from exc
        got = accepted[span_id].attributes.get(key)
        if expected == "container":
            assert isinstance(got, (str, tuple))
        else:
            assert got == expected, raw


# -- the fast path of protobuf attribute values ---------------------------------------------------

scalars = st.one_of(
    st.builds(lambda s: av(string_value=s), st.text(max_size=300)),
    st.builds(lambda b: av(bool_value=b), st.booleans()),
    st.builds(lambda i: av(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda f: av(double_value=f), st.floats(allow_nan=False)),
    st.builds(lambda b: av(bytes_value=b), st.binary(max_size=20)),
    st.just(av()),
)
any_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda vs: av(array_value={"values": vs}), st.lists(inner, max_size=4)),
        st.builds(
            lambda kvs: av(
                kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs.items()]}
            ),
            st.dictionaries(st.text(max_size=5), inner, max_size=4),
        ),
    ),
    max_leaves=12,
)


def reference_value(value: AnyValue) -> Any:
    """What the generated classes say an attribute value is (no fast path involved)."""
    which = value.WhichOneof("value")
    if which in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, which)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which in ("array_value", "kvlist_value"):
        return "container"
    return None  # empty, or a kind newer than span attributes (string_value_strindex)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), any_values, max_size=6))
def test_protobuf_and_json_agree_with_the_generated_classes(values: dict[str, AnyValue]) -> None:
    values.pop(semconv.KIND, None)
    protobuf, from_json = both(request_of(span_pb(values)))
    (view,) = protobuf.spans
    assert view == from_json.spans[0]
    for key, value in values.items():
        expected = reference_value(value)
        got = view.attributes.get(key)
        if expected == "container":
            assert isinstance(got, (str, tuple))
        else:
            assert got == expected


# -- bodies and content types ------------------------------------------------------------


def test_an_empty_request_is_empty() -> None:
    empty = DecodedTraces([], 0, 0, [])
    assert decode_protobuf(b"") == empty
    assert decode_json(b"{}") == empty
    assert decode_json(b'{"resourceSpans": []}') == empty
    assert decode_protobuf(ExportTraceServiceRequest().SerializeToString()) == empty


@pytest.mark.parametrize(
    "body", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\x0f", b"GET / HTTP/1.1"]
)
def test_garbage_protobuf_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_protobuf(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"resourceSpans"',
        b'{"resourceSpans": {}}',
        b'{"resourceSpans": [1]}',
        b'{"resourceSpans": [{"scopeSpans": "x"}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [null]}]}]}',
        b'\xff\xfe{"resourceSpans": []}',
        b'{"resourceSpans": [], "n": 1' + b"0" * 5000 + b"}",
    ],
)
def test_garbage_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_json(body)


def test_invalid_utf8_in_an_attribute_key_is_a_decode_error() -> None:
    body = request_of(span_pb({"KEY\x01": av(int_value=1)})).SerializeToString()
    with pytest.raises(DecodeError):
        decode_protobuf(body.replace(b"KEY\x01", b"KEY\xff"))


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-protobuf",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON ",
    ],
)
def test_decode_dispatches_on_the_media_type(content_type: str) -> None:
    body = b"" if "protobuf" in content_type else b"{}"
    assert decode(body, content_type) == DecodedTraces([], 0, 0, [])


@pytest.mark.parametrize(
    "content_type", ["", "text/plain", "application/protobuf", "application/jsonl", "*/*"]
)
def test_other_media_types_are_unsupported_not_bad_data(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        decode(b"{}", content_type)
    assert not isinstance(raised.value, DecodeError)


# -- hostile input ------------------------------------------------------------------------


def seed_bodies() -> tuple[bytes, bytes]:
    """A small valid payload of our spans in both encodings, made by hand (no fixtures)."""
    request = request_of(
        span_pb({"kv": nested_kvlist(3), "s": av(string_value="v"), "i": av(int_value=300)}),
        span_pb({"x": av(double_value=1.5)}, span_id=b"\x06" * 8, ours=False),
    )
    request.resource_spans[0].scope_spans[0].spans[0].events.add(
        name="e", time_unix_nano=7, attributes=[KeyValue(key="k", value=av(bool_value=True))]
    )
    request.resource_spans[0].scope_spans[0].spans[0].status.CopyFrom(
        Status(code=Status.STATUS_CODE_ERROR, message="m")
    )
    return request.SerializeToString(), json.dumps(json_of(request)).encode()


PROTOBUF_SEED, JSON_SEED = seed_bodies()


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    def apply(edits: list[tuple[int, int, bytes]]) -> bytes:
        body = bytearray(seed)
        for position, delete, insert in edits:
            at = position % (len(body) + 1)
            body[at : at + delete] = insert
        return bytes(body)

    edit = st.tuples(st.integers(0, 10_000), st.integers(0, 4), st.binary(max_size=4))
    return st.lists(edit, min_size=1, max_size=4).map(apply)


def decodes_or_refuses(decoder: Any, body: bytes) -> None:
    try:
        decoded = decoder(body)
    except DecodeError:
        return
    assert isinstance(decoded, DecodedTraces)
    assert len(decoded.errors) <= MAX_ERRORS
    for view in decoded.spans:
        assert 0 < view.trace_id < 2**128
        assert 0 < view.span_id < 2**64


FUZZ = settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_decode_error(body: bytes) -> None:
    decodes_or_refuses(decode_protobuf, body)
    decodes_or_refuses(decode_json, body)


@FUZZ
@given(mutated(PROTOBUF_SEED))
def test_mutated_protobuf_only_ever_raises_decode_error(body: bytes) -> None:
    decodes_or_refuses(decode_protobuf, body)


@FUZZ
@given(mutated(JSON_SEED))
def test_mutated_json_only_ever_raises_decode_error(body: bytes) -> None:
    decodes_or_refuses(decode_json, body)


@FUZZ
@given(
    st.sampled_from(["application/x-protobuf", "application/json"]).flatmap(
        lambda media_type: st.tuples(st.just(media_type), mutated(real_exports()[media_type]))
    )
)
def test_mutated_real_exports_decode_or_are_a_decode_error_and_meet_no_bug(
    case: tuple[str, bytes],
) -> None:
    media_type, body = case
    try:
        decoded = decode(body, media_type)
    except DecodeError as exc:
        refusal = str(exc)
    else:
        assert no_decoder_bug_met(decoded), decoded.errors
        assert len(decoded.errors) <= MAX_ERRORS
        return
    assert "cannot be decoded (" not in refusal  # the net for unexpected errors: a bug


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
otlp_keys = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "traceId",
        "spanId",
        "parentSpanId",
        "name",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "attributes",
        "events",
        "status",
        "code",
        "message",
        "key",
        "value",
        "values",
        "stringValue",
        "intValue",
        "boolValue",
        "doubleValue",
        "arrayValue",
        "kvlistValue",
        "bytesValue",
        "timeUnixNano",
    ]
)


def child(container: Any, step: int | str) -> Any:
    """``container[step]`` when that is a container itself, else None."""
    if isinstance(container, dict) and isinstance(step, str):
        found = container.get(step)
    elif isinstance(container, list) and isinstance(step, int) and step < len(container):
        found = container[step]
    else:
        return None
    return found if isinstance(found, (dict, list)) else None


@FUZZ
@given(st.data())
def test_json_of_the_right_keys_and_wrong_shapes_only_ever_raises_decode_error(
    data: st.DataObject,
) -> None:
    request = json.loads(JSON_SEED)
    for _ in range(data.draw(st.integers(1, 4))):
        target: Any = request
        path = data.draw(st.lists(st.integers(0, 5) | otlp_keys, max_size=10))
        for step in path:
            inner = child(target, step)
            if inner is None:
                break
            target = inner
        if isinstance(target, dict):
            target[data.draw(otlp_keys)] = data.draw(json_values)
        elif isinstance(target, list) and target:
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(json_values)
    decodes_or_refuses(decode_json, json.dumps(request).encode())


def test_a_bool_of_any_nonzero_varint_byte_is_true_as_protobuf_reads_it() -> None:
    """The hand-read one-byte bool agrees with the generated class on varints past 1."""
    request = request_of(span_pb({"flag": av(bool_value=True), "off": av(bool_value=False)}))
    body = request.SerializeToString()
    flag = KeyValue(key="flag", value=av(bool_value=True)).SerializeToString()
    assert body.count(flag) == 1
    body = body.replace(flag, flag[:-1] + b"\x07")  # the same field, varint 7
    (view,) = decode_protobuf(body).spans
    assert AnyValue.FromString(b"\x10\x07").bool_value is True
    assert (view.attributes["flag"], view.attributes["off"]) == (True, False)
