"""Compact JSON text, with the encoder built once instead of per call.

``json.dumps`` with options builds a ``JSONEncoder`` per call, and
``JSONEncoder.encode`` builds the C encoder per call: for the small values a step
records (a config, a metric, a record body) that set-up costs more than the encoding
itself, and it is paid on the pipeline's thread six times per step. The encoders here
make the stdlib's C encoder once and reuse it.

Values must be trees (no reference cycles): the sanitizer and the mapping only ever
build fresh trees, and a cycle raises ``RecursionError`` rather than looping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _stdlib_encoder
from typing import Any

__all__ = ["Encode", "compact_encoder", "string_encoder"]

Encode = Callable[[Any], str]

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
