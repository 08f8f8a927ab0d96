"""Coverage-guided fuzzing with atheris: ``python atheris_fuzz.py TARGET [libFuzzer flags]``.

Targets:

* ``decode``: arbitrary bytes as an OTLP protobuf and as OTLP/JSON body; only
  ``DecodeError`` may come out, and what decodes maps without raising;
* ``sanitize``: arbitrary JSON-ish values (from the bytes) through ``sanitize`` and
  ``dumps``: never raises, always strict JSON, a secret under a secret key never appears;
* ``mapping``: a decoded span view of a valid export with fuzzed attribute values.

Any uncaught exception is a crash: atheris prints it and exits non-zero.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

with atheris.instrument_imports():
    from hackagent_otel import _mapping, semconv
    from hackagent_otel._sanitize import Sanitizer
    from hackagent_otel._spanview import SpanView
    from hackagent_otel.bridge._decode import DecodeError, decode

CANARY = "CANARY-atheris-0b6e"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: The sanitizer every target uses, as one process's tracker or bridge keeps one.
SANITIZER = Sanitizer()


def _value(fdp: Any, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 16))
    if kind == 3:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind == 4:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64))
    if kind == 5:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
    if kind == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 7:
        return {"api_key": CANARY, fdp.ConsumeUnicode(8): _value(fdp, depth + 1)}
    return {fdp.ConsumeUnicode(8): _value(fdp, depth + 1) for _ in range(3)}


def fuzz_decode(data: bytes) -> None:
    for media_type in (PROTOBUF, JSON):
        try:
            decoded = decode(data, media_type)
        except DecodeError:
            continue
        for view in decoded.spans:
            _mapping.map_start(view, SANITIZER)
            for mapped in (_mapping.map_end(view, SANITIZER, include_start=True),):
                for record in mapped.records:
                    record.to_json()


def fuzz_sanitize(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    value = {"config": _value(fdp), "token": CANARY, "password": [CANARY]}
    text = SANITIZER.dumps(value)
    json.loads(text)
    assert CANARY not in text, text
    clean = SANITIZER.sanitize(value)
    assert CANARY not in json.dumps(clean, allow_nan=False)


def fuzz_mapping(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    attributes: dict[str, Any] = {
        semconv.KIND: semconv.KIND_STEP,
        semconv.RUN_ID: "3f2c9a1e-5b7d-4c1a-9e8f-0a1b2c3d4e5f",
        semconv.RESULT_ID: "4f2c9a1e-5b7d-4c1a-9e8f-0a1b2c3d4e5f",
        semconv.STEP_SEQUENCE_START: fdp.ConsumeInt(8),
        semconv.STEP_SEQUENCE_END: fdp.ConsumeInt(8),
        semconv.STEP_CONFIG: json.dumps({"api_key": CANARY, "x": fdp.ConsumeUnicode(32)}),
        semconv.STEP_STATUS: fdp.ConsumeUnicode(10),
        semconv.STEP_ERROR_MESSAGE: fdp.ConsumeUnicode(40),
        semconv.STEP_INPUT: fdp.ConsumeUnicode(64),
    }
    view = SpanView(
        name=fdp.ConsumeUnicode(16),
        trace_id=fdp.ConsumeIntInRange(0, 2**128 - 1),
        span_id=fdp.ConsumeIntInRange(0, 2**64 - 1),
        start_time_ns=fdp.ConsumeIntInRange(0, 2**64 - 1),
        end_time_ns=fdp.ConsumeIntInRange(0, 2**64 - 1),
        attributes=attributes,
        status="ERROR" if fdp.ConsumeBool() else "OK",
    )
    for mapped in (
        _mapping.map_start(view, SANITIZER),
        _mapping.map_end(view, SANITIZER, include_start=True),
    ):
        for record in mapped.records:
            assert CANARY not in record.to_json()


TARGETS = {"decode": fuzz_decode, "sanitize": fuzz_sanitize, "mapping": fuzz_mapping}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
