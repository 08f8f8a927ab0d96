"""compact_encoder(): the stdlib's compact JSON, with the encoder built once;
ascii_bytes_encoder(): the same as ASCII bytes, by orjson where it is installed, and the
same bytes with it as without it; json_decoder(): json's reading, by orjson where it is
installed, with the same values and errors."""

from __future__ import annotations

import json
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hackagent_otel import _json
from hackagent_otel._json import (
    ascii_bytes_encoder,
    compact_encoder,
    json_decoder,
    native_available,
)
from otel_fixtures import in_ci, missing

_json_trees = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture
def orjson_installed() -> None:
    """orjson comes with the dev extra: missing, it fails in CI and skips elsewhere."""
    if not native_available():
        missing("orjson is not installed: `make install` brings it (the dev extra)")


#: Both ways of writing record bodies: the stdlib's, and orjson's where it is installed
#: (CI installs it with the dev extra; without it, that case is skipped, not faked).
ENCODERS = [
    pytest.param(False, id="stdlib"),
    pytest.param(
        True,
        id="orjson",
        # In CI it runs, and fails, without orjson: a missing component is a failure there.
        marks=pytest.mark.skipif(
            not native_available() and not in_ci(), reason="orjson is not installed"
        ),
    ),
]

#: Floats where orjson's text differs from ``float.__repr__`` (1e-9 to 1e-4), and their
#: neighbours where it does not, in every position a number can take.
_AWKWARD_FLOATS = [1e-5, 1.5e-5, -4.2e-6, 9.99e-8, 1e-9, 1e-4, 1.23e-4, 1e-10, 1e16, 1e22, 5e-324]


def _outcome(encode: Any, value: Any) -> Any:
    try:
        return encode(value)
    except Exception as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(_json_trees, st.booleans())
def test_it_writes_what_json_dumps_writes(value: Any, ensure_ascii: bool) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)

    assert compact_encoder(ensure_ascii=ensure_ascii)(value) == expected


def test_tuples_are_written_as_lists_and_non_ascii_only_when_asked() -> None:
    assert compact_encoder(ensure_ascii=False)({"é": ("a", 1)}) == '{"é":["a",1]}'
    assert compact_encoder(ensure_ascii=True)({"é": ("a", 1)}) == '{"\\u00e9":["a",1]}'


@pytest.mark.parametrize("value", [math.nan, math.inf, [-math.inf]])
def test_non_finite_floats_are_refused_as_json_dumps_refuses_them(value: Any) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        compact_encoder(ensure_ascii=True)(value)


def test_values_json_cannot_hold_raise_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_encoder(ensure_ascii=True)({"when": object()})


# -- ascii_bytes_encoder -------------------------------------------------------------


@pytest.mark.parametrize("native", ENCODERS)
@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        _json_trees
        | st.floats()  # NaN and infinity too: refused the same way
        | st.floats(min_value=1e-10, max_value=1e-3)
        | st.floats(min_value=-1e-3, max_value=-1e-10)
        | st.integers(min_value=-(2**70), max_value=2**70),
        lambda children: (
            st.lists(children, max_size=4)
            | st.tuples(children, children)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_bytes_are_json_dumps_ascii_bytes(native: bool, value: Any) -> None:
    def reference(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")

    assert _outcome(ascii_bytes_encoder(native=native), value) == _outcome(reference, value)


@pytest.mark.parametrize("native", ENCODERS)
@pytest.mark.parametrize(
    "value",
    [
        *[{"f": f} for f in _AWKWARD_FLOATS],
        *[[f, -f] for f in _AWKWARD_FLOATS],
        1e-5,  # a whole document that is a number
        {"text": "\x7f and \x00 and \u2028 and é and 😀", "n": None},
        {"text": "null, e-5, 0.00001 and 1e-7 written as text"},
        {"surrogate": "\ud800"},
        {"big": 2**64, "small": -(2**63) - 1, "wide": 2**64 - 1},
        {1: "int key", None: "none key", 2.5: "float key", False: "bool key"},
        OrderedDict(b=1, a=2),
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    ],
    ids=repr,
)
def test_what_orjson_writes_otherwise_is_written_by_the_stdlib(native: bool, value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")

    assert ascii_bytes_encoder(native=native)(value) == expected


@pytest.mark.parametrize("native", ENCODERS)
def test_nesting_past_orjson_s_limit_is_the_stdlib_s(native: bool) -> None:
    value: Any = "leaf"
    for _ in range(300):
        value = [value]

    assert ascii_bytes_encoder(native=native)(value) == json.dumps(value).encode("ascii")


@dataclass
class _Point:
    x: int


@pytest.mark.parametrize("native", ENCODERS)
@pytest.mark.parametrize("value", [{"p": _Point(1)}, {"s": {1, 2}}, {"b": b"x"}, [object()]])
def test_what_json_cannot_hold_raises_type_error(native: bool, value: Any) -> None:
    with pytest.raises(TypeError):
        ascii_bytes_encoder(native=native)(value)


@pytest.mark.parametrize("native", ENCODERS)
@pytest.mark.parametrize("value", [{"x": math.nan}, [math.inf], -math.inf])
def test_nan_and_infinity_are_refused_not_written_as_null(native: bool, value: Any) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        ascii_bytes_encoder(native=native)(value)


def test_the_default_is_orjson_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_json, "_orjson", None)
    assert not native_available()
    encode = ascii_bytes_encoder()  # the stdlib, since orjson "is not installed"
    assert encode({"a": [1, "é"]}) == b'{"a":[1,"\\u00e9"]}'
    with pytest.raises(RuntimeError, match="orjson is not installed"):
        ascii_bytes_encoder(native=True)


@pytest.mark.usefixtures("orjson_installed")
def test_orjson_writes_two_non_json_kinds_the_stdlib_refuses() -> None:
    """The one difference, documented: neither kind is in a record body."""
    value = {"id": uuid.UUID(int=1)}
    written = b'{"id":"00000000-0000-0000-0000-000000000001"}'
    assert ascii_bytes_encoder(native=True)(value) == written
    assert ascii_bytes_encoder()(value) == written  # orjson is the default where installed
    with pytest.raises(TypeError):
        ascii_bytes_encoder(native=False)(value)


# -- json_decoder --------------------------------------------------------------------


def _read(decode: Any, text: str) -> Any:
    """What reading ``text`` gives, exactly: the value's JSON and repr (which tell int
    from float and -0.0 from 0.0), or the kind of error."""
    try:
        value = decode(text)
    except RecursionError:
        return RecursionError
    except ValueError:
        return ValueError
    return type(value), json.dumps(value), repr(value)


_whitespace = st.text(alphabet=" \t\n\r\x0b\xa0", max_size=2)


@pytest.mark.parametrize("native", ENCODERS)
@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats()
        | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=20,
    ),
    st.booleans(),
    _whitespace,
    st.text(max_size=3),
)
def test_it_reads_what_json_reads(
    native: bool, value: Any, ascii: bool, ws: str, tail: str
) -> None:
    text = ws + json.dumps(value, ensure_ascii=ascii) + ws
    decode = json_decoder(native=native)
    reference = json.JSONDecoder().decode

    assert _read(decode, text) == _read(reference, text)
    assert _read(decode, text + tail) == _read(reference, text + tail)


@pytest.mark.parametrize("native", ENCODERS)
@pytest.mark.parametrize(
    "text",
    [
        "18446744073709551616",  # 2**64: orjson reads it as a float
        "-9223372036854775809",
        "18446744073709551615",
        "0.1234567890123456789",
        "NaN",
        "[Infinity, -Infinity]",
        "1e400",
        '"\\ud800"',
        "\ud800",
        '{"a": 1, "a": 2, "b": 3}',
        "-0",
        "-0.0",
        "\ufeff1",
        "[" * 300 + "]" * 300,
        "[" * 150 + "]" * 150,
        '{"model":"m","api_key":"***REDACTED***"}',
    ],
    ids=lambda text: repr(text[:30]),
)
def test_what_orjson_reads_otherwise_is_read_by_the_stdlib(native: bool, text: str) -> None:
    assert _read(json_decoder(native=native), text) == _read(json.JSONDecoder().decode, text)


@pytest.mark.parametrize("native", ENCODERS)
def test_nesting_too_deep_for_the_interpreter_raises_recursion_error(native: bool) -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json_decoder(native=native)(text)


def test_the_decoder_falls_back_to_the_stdlib_without_orjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_json, "_orjson", None)
    assert json_decoder()("[1, 2.5]") == [1, 2.5]
    with pytest.raises(RuntimeError, match="orjson is not installed"):
        json_decoder(native=True)
