"""Bodies out of gzip under a hard cap: a gzip bomb costs bounded memory and time."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from typing import Any

import pytest

from hackagent_otel.bridge._decompress import (
    BadEncoding,
    BodyTooLarge,
    UnsupportedEncoding,
    decompress,
    encoding_of,
)

MIB = 1024 * 1024


def bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * MIB
    return b"".join(
        [*(compressor.compress(chunk) for _ in range(inflated // MIB)), compressor.flush()]
    )


def test_gzip_round_trips_up_to_the_limit() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB

    assert decompress(gzip.compress(data), "gzip", len(data)) == data
    with pytest.raises(BodyTooLarge):
        decompress(gzip.compress(data), "gzip", len(data) - 1)


def test_concatenated_gzip_members_are_read_in_turn_under_one_limit() -> None:
    body = gzip.compress(b"a" * 100) + gzip.compress(b"b" * 100)

    assert decompress(body, "gzip", 200) == b"a" * 100 + b"b" * 100
    with pytest.raises(BodyTooLarge):
        decompress(body, "gzip", 199)


def test_a_bomb_stops_at_the_limit_with_bounded_memory_and_time() -> None:
    body = bomb(512 * MIB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(BodyTooLarge):
            decompress(body, "gzip", 4 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert time.monotonic() - started < 1.0
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB for a 4 MiB limit"


class CountingInflater:
    """A zlib inflater that counts the input bytes it is handed."""

    fed = 0

    def __init__(self, **kwargs: Any) -> None:
        self._inner = REAL_DECOMPRESSOBJ(**kwargs)

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        CountingInflater.fed += len(data)
        return self._inner.decompress(data, max_length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


REAL_DECOMPRESSOBJ = zlib.decompressobj


@pytest.mark.parametrize(
    "members",
    [
        [gzip.compress(b"")] * 50_000,
        [gzip.compress(bytes([i % 256]) * (i % 3000)) for i in range(2000)],
        [gzip.compress(b"x" * MIB), gzip.compress(b"")] * 2,
    ],
    ids=["empty", "mixed", "large"],
)
def test_members_are_inflated_from_input_handed_over_about_once(
    monkeypatch: pytest.MonkeyPatch, members: list[bytes]
) -> None:
    body = b"".join(members)
    expected = gzip.decompress(body)
    monkeypatch.setattr(zlib, "decompressobj", CountingInflater)
    CountingInflater.fed = 0

    assert decompress(body, "gzip", len(expected)) == expected
    assert CountingInflater.fed <= 4 * len(body) + 64 * len(members)


def test_a_4_mib_body_of_empty_gzip_members_is_read_in_linear_time() -> None:
    member = gzip.compress(b"")
    times = {}
    for size in (MIB, 4 * MIB):
        body = member * (size // len(member))
        started = time.perf_counter()
        assert decompress(body, "gzip", 20 * MIB) == b""
        times[size] = time.perf_counter() - started
    print(f"\nempty gzip members: 1 MiB in {times[MIB]:.2f} s, 4 MiB in {times[4 * MIB]:.2f} s")
    assert times[4 * MIB] < 3.0  # quadratic, as before, it took 13 s and more


@pytest.mark.parametrize(
    "body", [b"", b"plain text", gzip.compress(b"x" * 1000)[:-10], b"\x1f\x8b" + b"\x00" * 20]
)
def test_invalid_or_truncated_gzip_is_a_bad_encoding(body: bytes) -> None:
    with pytest.raises(BadEncoding):
        decompress(body, "gzip", MIB)


def test_identity_bodies_are_checked_against_the_limit() -> None:
    assert decompress(b"abc", "identity", 3) == b"abc"
    with pytest.raises(BodyTooLarge):
        decompress(b"abcd", "identity", 3)


@pytest.mark.parametrize(
    ("header", "encoding"),
    [(None, "identity"), ("", "identity"), ("Identity", "identity"), ("GZIP ", "gzip")],
)
def test_encoding_of_accepts_gzip_and_identity(header: str | None, encoding: str) -> None:
    assert encoding_of(header) == encoding


@pytest.mark.parametrize("header", ["br", "deflate", "zstd", "gzip, br", "compress"])
def test_encoding_of_refuses_everything_else(header: str) -> None:
    with pytest.raises(UnsupportedEncoding):
        encoding_of(header)
