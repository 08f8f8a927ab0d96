"""Request bodies out of their ``Content-Encoding``, with a hard cap on the result.

A gzip bomb (a few KiB that inflate to gigabytes) must cost bounded memory and time:
the body is inflated in steps of at most ``limit + 1`` output bytes with
``zlib.decompressobj(...).decompress(data, max_length)``, so no more than the limit is
ever produced and the work stops as soon as the limit is passed. Concatenated gzip
members (allowed by RFC 1952) are read one after the other under the same cap, in time
linear in the body: a 4 MiB body of nothing but empty members (about 200,000 of them)
costs what its bytes cost, not a copy of the rest of the body per member.
"""

from __future__ import annotations

import zlib

__all__ = ["BadEncoding", "BodyTooLarge", "UnsupportedEncoding", "decompress", "encoding_of"]

#: The encodings the receiver takes (what OTLP exporters send).
SUPPORTED = ("identity", "gzip")
#: Input bytes a gzip member is first given; each further slice is twice the last,
#: up to :data:`MAX_STEP`.
FIRST_STEP = 64
MAX_STEP = 1024 * 1024


class BodyTooLarge(Exception):
    """The body, as sent or once decompressed, is over its limit (HTTP 413)."""


class BadEncoding(ValueError):
    """The body is not valid data in its declared encoding (HTTP 400)."""


class UnsupportedEncoding(Exception):
    """A ``Content-Encoding`` other than gzip or identity (HTTP 415)."""


def encoding_of(header: str | None) -> str:
    """The one encoding named by a ``Content-Encoding`` header; raise if not supported."""
    value = (header or "").strip().lower()
    if value in ("", "identity"):
        return "identity"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    raise UnsupportedEncoding(
        f"content encoding {value[:40]!r} is not supported; send gzip or identity"
    )


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from ``encoding`` (see :func:`encoding_of`), at most ``limit`` bytes."""
    if encoding == "identity":
        if len(body) > limit:
            raise BodyTooLarge(f"body of {len(body)} bytes is over the {limit}-byte limit")
        return body
    if encoding != "gzip":
        raise UnsupportedEncoding(f"content encoding {encoding!r} is not supported")
    return _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member of ``body`` in turn, in time linear in ``len(body)``.

    Input goes to each member's inflater as slices of one ``memoryview`` (no copies),
    starting small and doubling while the member wants more. At a member's end zlib
    copies what it was given past that end (``unused_data``); the next member starts at
    that position of the view instead of being fed the copy, and the copy is never
    longer than the last slice, itself at most twice what the member took plus
    :data:`FIRST_STEP`. (Feeding each member the whole rest, as before, copied the rest
    once per member: a body of 200,000 empty members took seconds per megabyte.)
    """
    out = bytearray()
    view = memoryview(body)
    position, end = 0, len(body)
    while True:  # one gzip member per round
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        step = FIRST_STEP
        try:
            while not inflater.eof:
                if position >= end:
                    raise BadEncoding("truncated gzip data")
                data: bytes | memoryview = view[position : position + step]
                position += len(data)
                step = min(2 * step, MAX_STEP)
                while data:
                    out += inflater.decompress(data, limit + 1 - len(out))
                    if len(out) > limit:
                        raise BodyTooLarge(f"body inflates to more than the {limit}-byte limit")
                    data = inflater.unconsumed_tail  # left only when the output was capped
        except zlib.error as exc:
            raise BadEncoding(f"invalid gzip data: {exc}") from None
        position -= len(inflater.unused_data)  # the start of the next member, if any
        if position >= end:
            return bytes(out)
