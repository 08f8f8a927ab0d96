"""Request bodies out of their ``Content-Encoding``, with a hard cap on the result.

A gzip bomb (a few KiB that inflate to gigabytes) must cost bounded memory and time:
the body is inflated in steps of at most ``limit + 1`` output bytes with
``zlib.decompressobj(...).decompress(data, max_length)``, so no more than the limit is
ever produced and the work stops as soon as the limit is passed. Concatenated gzip
members (allowed by RFC 1952) are read one after the other under the same cap.
"""

from __future__ import annotations

import zlib

__all__ = ["BadEncoding", "BodyTooLarge", "UnsupportedEncoding", "decompress", "encoding_of"]

#: The encodings the receiver takes (what OTLP exporters send).
SUPPORTED = ("identity", "gzip")


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
    out = bytearray()
    data = body
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(f"body inflates to more than the {limit}-byte limit")
                data = inflater.unconsumed_tail
            out += inflater.flush(limit + 1 - len(out)) if not inflater.eof else b""
        except zlib.error as exc:
            raise BadEncoding(f"invalid gzip data: {exc}") from None
        if len(out) > limit:
            raise BodyTooLarge(f"body inflates to more than the {limit}-byte limit")
        if not inflater.eof:
            raise BadEncoding("truncated gzip data")
        data = inflater.unused_data
        if not data:
            return bytes(out)
