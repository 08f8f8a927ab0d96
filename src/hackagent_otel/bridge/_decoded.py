"""What decoding one OTLP/HTTP trace request yields, and what both encodings share.

The two decoders (:mod:`._decode_protobuf`, :mod:`._decode_json`) read the same
``ExportTraceServiceRequest`` and keep to the same rules, set down here once:

* Only our spans matter: a span is ours when it carries ``hackagent.kind``. That key is
  looked for first, so other spans cost next to nothing, are not validated, and are
  only counted (``ignored``).
* One of ours that cannot be used (bad ids, an attribute that is not UTF-8 or not an
  ``AnyValue``, in JSON a field of the wrong type) is ``rejected`` with a short reason,
  for OTLP partial success; a body that is not a request at all raises
  :class:`DecodeError` (HTTP 400). An unexpected exception while converting one span (a
  bug, met by data no test had) rejects that span only (:meth:`Tally.reject_unexpected`),
  logged with its traceback at most once per 5 s (:data:`log`).
* One request may bring at most ``max_spans`` spans of ours (when given): those past it
  are rejected unread, with one reason saying how many (:class:`Tally`), so what a
  request costs to decode, map and store is bounded whatever its size.
* Ids: a trace id is 16 bytes, a span id 8, neither all zeros. An empty or all-zero
  parent span id means no parent (:data:`NO_PARENT`). Times are kept as given; an end
  time of 0 reads as "not ended" (``None``). Status codes other than 0, 1, 2 (or their
  names) read as ``UNSET``.
* Attribute values are flattened to what SDK spans hold (:func:`flat`): ``str``,
  ``bool``, ``int``, ``float`` and tuples of those. What an SDK attribute cannot be
  (key-value lists, byte strings, arrays holding either) becomes text: base64 for
  bytes, compact JSON for the rest (non-finite doubles inside as text), nested at most
  :data:`MAX_VALUE_DEPTH` deep. Empty values are left out, and so are ``AnyValue`` kinds
  that no span attribute holds; a repeated key keeps its last value. Views are
  ``sanitized=False``: the mapping sanitizes values from other processes again.

Pure: no I/O but the throttled log; imports only the span view and semconv of ours.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from hackagent_otel import semconv
from hackagent_otel._spanview import SpanView, StatusName
from hackagent_otel.bridge._throttle import ThrottledLog

__all__ = [
    "JSON",
    "KIND",
    "MAX_ERRORS",
    "MAX_VALUE_DEPTH",
    "NO_PARENT",
    "PROTOBUF",
    "STATUS_BY_CODE",
    "TOO_DEEP",
    "DecodeError",
    "DecodedTraces",
    "Rejected",
    "Tally",
    "UnsupportedMediaType",
    "flat",
    "log",
    "short",
    "span_label",
]

#: The two OTLP/HTTP encodings, by media type.
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"

#: At most this many rejection reasons are kept (``rejected`` counts them all).
MAX_ERRORS: Final = 10
#: Key-value lists and arrays nested deeper than this become :data:`TOO_DEEP`.
MAX_VALUE_DEPTH: Final = 12
TOO_DEEP: Final = "<too deeply nested>"

#: The attribute that makes a span ours.
KIND: Final = semconv.KIND
STATUS_BY_CODE: Final[dict[int, StatusName]] = {0: "UNSET", 1: "OK", 2: "ERROR"}
#: A parent span id that means "no parent": absent, empty (OTLP's root) or all zeros
#: (the SDK's invalid id), as bytes or as JSON's hex.
NO_PARENT: Final = (None, b"", bytes(8), "", "0" * 16)

#: The decoders' log: a client can cause its lines again and again, so each kind of
#: line is written at most once per 5 s.
log = ThrottledLog(logging.getLogger("hackagent_otel.bridge"))


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


class Rejected(Exception):
    """One of our spans cannot be used; the message says why."""


class Tally:
    """The outcome of one request, span by span: taken, ignored, rejected, over the limit."""

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
        log.warning("could not decode %s: %r", where, exc, key=("span", type(exc)), exc_info=True)
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


def flat(plain: Any) -> Any:
    """A converted non-scalar attribute value as an SDK-style attribute value.

    Arrays of scalars become tuples (as the SDK holds them); key-value lists and arrays
    holding anything else become compact JSON text; bytes are already base64 text.
    """
    if isinstance(plain, list) and all(isinstance(item, (str, bool, int, float)) for item in plain):
        return tuple(plain)
    if isinstance(plain, (dict, list)):
        return json.dumps(plain, separators=(",", ":"), ensure_ascii=False, default=str)
    return plain


def span_label(span_id: str, name: Any) -> str:
    """How a rejection reason names its span: id and name, both cut short."""
    label = name[:64] if isinstance(name, str) else "?"
    return f"span {span_id[:32] or '?'} ({label!r})"


def short(value: Any) -> str:
    """A value quoted in a rejection reason, at most 40 characters of its ``repr``."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
