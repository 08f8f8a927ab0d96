"""Compact JSON, with the encoder built once instead of per call; orjson where it is.

``json.dumps`` with options builds a ``JSONEncoder`` per call, and
``JSONEncoder.encode`` builds the C encoder per call: for the small values a step
records (a config, a metric, a record body) that set-up costs more than the encoding
itself, and it is paid on the pipeline's thread six times per step. The encoders here
make the stdlib's C encoder once and reuse it.

Record bodies are encoded once each, to the bytes that are stored and sent
(:func:`ascii_bytes_encoder`); the bridge encodes 680 of them per 510-span export. Where
orjson is installed (the ``bridge`` extra) it writes them, about eight times faster
than the stdlib here, and the stdlib writes whatever orjson would write differently, so
the bytes are the same either way: see :func:`ascii_bytes_encoder`.

Values must be trees (no reference cycles): the sanitizer and the mapping only ever
build fresh trees, and a cycle raises ``RecursionError`` rather than looping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json import encoder as _stdlib_encoder
from typing import Any, Final

_orjson: Any
try:  # optional: the ``bridge`` extra brings it; the stdlib writes the same bytes
    import orjson as _orjson
except ImportError:  # pragma: no cover - the tests force native=False instead
    _orjson = None

__all__ = [
    "Decode",
    "Encode",
    "EncodeBytes",
    "ascii_bytes_encoder",
    "compact_encoder",
    "json_decoder",
    "native_available",
    "string_encoder",
]

Encode = Callable[[Any], str]
EncodeBytes = Callable[[Any], bytes]
Decode = Callable[[str], Any]

#: A value that exercises every branch the C encoder takes, to check the fast encoder
#: agrees with ``json.dumps`` on this interpreter before it is used.
_PROBE: Any = {"s": 'é\n"', "i": -7, "f": 0.1, "t": True, "n": None, "l": [1, "x", {}], "e": []}


def compact_encoder(*, ensure_ascii: bool) -> Encode:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=...)``.

    Raises ``TypeError`` for a value JSON cannot hold and ``ValueError`` for NaN or
    infinity, as ``json.dumps`` does. Falls back to a reused ``JSONEncoder`` where the
    C accelerator is missing or does not take the arguments this module expects.
    """
    reference = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False, check_circular=False
    )
    make_c_encoder = getattr(_stdlib_encoder, "c_make_encoder", None)
    if make_c_encoder is None:
        return reference.encode
    strings = string_encoder(ensure_ascii=ensure_ascii)
    try:
        c_encode = make_c_encoder(
            None, reference.default, strings, None, ":", ",", False, False, False
        )
    except TypeError:  # another interpreter's signature
        return reference.encode
    join = "".join

    def encode(value: Any) -> str:
        return join(c_encode(value, 0))

    try:
        agrees = encode(_PROBE) == reference.encode(_PROBE)
    except Exception:
        agrees = False
    return encode if agrees else reference.encode


def string_encoder(*, ensure_ascii: bool) -> Callable[[str], str]:
    """How :func:`compact_encoder` writes one string, quotes included: for JSON text
    built around a few strings that vary, byte for byte what encoding it whole gives."""
    if ensure_ascii:
        return _stdlib_encoder.encode_basestring_ascii
    return _stdlib_encoder.encode_basestring


def native_available() -> bool:
    """Whether orjson is installed, so :func:`ascii_bytes_encoder` can use it."""
    return _orjson is not None


def _use_native(native: bool | None) -> bool:
    """Whether to use orjson: as asked (``None``: where installed); asking for it where
    it is not installed is an error."""
    if native is None:
        return _orjson is not None
    if native and _orjson is None:
        raise RuntimeError("orjson is not installed")
    return native


#: Where orjson's numbers differ from ``float.__repr__`` (which the stdlib writes):
#: magnitudes from 1e-9 to below 1e-4, written ``0.0000...`` (1e-5 to 1e-4) or with a
#: one-digit exponent (``1e-7``; Python writes ``1e-07``). Every other float, and every
#: int orjson takes, comes out the same. Matched only where a number starts (after
#: ``:``, ``,``, ``[``, or at the start), looked for only when the text holds ``e-``
#: or ``0.0000`` at all; a match inside a string merely sends the value to the stdlib.
_ORJSON_ONLY_NUMBER: Final = re.compile(
    rb"(?:^|[:,\[])-?(?:0\.0000|[0-9]+(?:\.[0-9]+)?e-[0-9](?:[,\]}]|$))"
)


def ascii_bytes_encoder(*, native: bool | None = None) -> EncodeBytes:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")``.

    Raises as that does (``TypeError`` for what JSON cannot hold, ``ValueError`` for NaN
    and infinity, ``RecursionError`` for a cycle). ``native``: use orjson (``None``:
    where it is installed). orjson's bytes are kept only when they are the stdlib's:

    * orjson refuses (so the stdlib answers) what it would write differently or not at
      all: ints beyond 64 bits, keys that are not ``str``, subclasses of ``dict``,
      ``list``, ``float`` (its own reading of those), dataclasses and dates (passed
      through to no ``default``), nesting past 255;
    * what it writes differently is looked for in its bytes, and then the stdlib writes
      the value instead: anything not ASCII (it writes UTF-8 where the stdlib escapes),
      DEL (the stdlib escapes it too), ``null`` (orjson writes NaN and infinity as
      ``null``, where the stdlib refuses them), and the floats of
      :data:`_ORJSON_ONLY_NUMBER`.

    Two kinds of value that no JSON holds are written by orjson where the stdlib
    raises ``TypeError``: members of a plain ``Enum`` and ``uuid.UUID`` objects. Record
    bodies never hold them (the mapping makes bodies of what JSON parsing and the
    sanitizer give), and the tests hold both paths to the same bytes.
    """
    stdlib = compact_encoder(ensure_ascii=True)

    def encode_stdlib(value: Any) -> bytes:
        return stdlib(value).encode("ascii")

    if not _use_native(native):
        return encode_stdlib
    dumps = _orjson.dumps
    option = (
        _orjson.OPT_PASSTHROUGH_SUBCLASS
        | _orjson.OPT_PASSTHROUGH_DATACLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
    )
    orjson_only = _ORJSON_ONLY_NUMBER.search
    # ``find``, not ``in``: ``bytes.__contains__`` first tries its argument as an int
    # and formats the TypeError that raises, which cost more than the encoding.
    find = bytes.find

    def encode(value: Any) -> bytes:
        try:
            out: bytes = dumps(value, option=option)
        except TypeError:  # orjson.JSONEncodeError: the stdlib decides (and maybe raises)
            return encode_stdlib(value)
        if (
            out.isascii()
            and find(out, b"\x7f") < 0
            and find(out, b"null") < 0
            and ((find(out, b"e-") < 0 and find(out, b"0.0000") < 0) or orjson_only(out) is None)
        ):
            return out
        return encode_stdlib(value)

    return encode


#: A run of digits long enough to be an int orjson reads as a float (from 2**64 up, or
#: below -2**63): the stdlib reads such text, as it keeps every int exact.
_LONG_DIGITS: Final = re.compile(r"[0-9]{19}")
#: Texts longer than this have their brackets counted before orjson reads them.
_SHORT_TEXT: Final = 400
#: orjson reads nesting up to 1,024 deep, where the stdlib raises RecursionError from
#: about the interpreter's recursion limit down; texts opening more brackets than this
#: go to the stdlib, so both raise alike.
_MAX_BRACKETS: Final = 200


def json_decoder(*, native: bool | None = None) -> Decode:
    """``json.JSONDecoder().decode``: JSON text to values, raising as it does
    (``ValueError`` for text that is not JSON, ``RecursionError`` for nesting too deep
    for the interpreter). ``native``: read with orjson (``None``: where it is installed),
    about four times faster on the short texts of span attributes, where its values
    are the stdlib's: texts with a run of 19 digits or more (orjson reads ints past 64
    bits as floats), more than :data:`_MAX_BRACKETS` brackets, or that orjson refuses
    (``NaN`` and ``Infinity``, numbers past the float range, lone surrogates, which the
    stdlib reads) are read by the stdlib.
    """
    stdlib = json.JSONDecoder().decode
    if not _use_native(native):
        return stdlib
    loads = _orjson.loads
    refused = _orjson.JSONDecodeError
    long_digits = _LONG_DIGITS.search
    count = str.count

    def decode(text: str) -> Any:
        size = len(text)
        if (size < 19 or long_digits(text) is None) and (
            size <= _SHORT_TEXT or count(text, "[") + count(text, "{") <= _MAX_BRACKETS
        ):
            try:
                return loads(text)
            except refused:
                pass
        return stdlib(text)

    return decode
