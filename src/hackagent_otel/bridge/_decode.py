"""OTLP/HTTP trace request bodies -> :class:`SpanView` s, the one shape the mapping reads.

:func:`decode` picks the decoder by ``Content-Type``: binary protobuf
(``application/x-protobuf``, :mod:`._decode_protobuf`) or OTLP/JSON
(``application/json``, parameters such as ``charset`` allowed, :mod:`._decode_json`).
Bodies arrive already decompressed and size-checked (the app's job). What both keep to
(which spans are ours, per-span rejection for partial success, the per-request limit,
ids, how values are flattened) is in :mod:`._decoded`.

Nothing else comes out of :func:`decode`, whatever the bytes: an unexpected exception
anywhere but in one span's conversion becomes a :class:`DecodeError`, logged with its
traceback at most once per 5 s. Bad data is a 400 or a partial success, never a
transient error the client would retry with the same bytes forever. Pure, as the halves
are: bytes in, views out, no I/O but that log.
"""

from __future__ import annotations

from hackagent_otel.bridge import _decoded
from hackagent_otel.bridge._decode_json import decode_json
from hackagent_otel.bridge._decode_protobuf import decode_protobuf
from hackagent_otel.bridge._decoded import (
    JSON,
    MAX_ERRORS,
    MAX_VALUE_DEPTH,
    PROTOBUF,
    DecodedTraces,
    DecodeError,
    UnsupportedMediaType,
)

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
        _decoded.log.warning(
            "could not decode a request: %r", exc, key=("request", type(exc)), exc_info=True
        )
        raise DecodeError(f"the request cannot be decoded ({type(exc).__name__})") from None
