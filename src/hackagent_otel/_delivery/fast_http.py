"""A lean keep-alive HTTP/1.1 transport over plain sockets, for ``http://`` only.

Why it exists: on loopback or a LAN the cost of a record's call is the client's CPU, and
sender threads cannot overlap that cost under the interpreter lock. httpx spends about
four times the CPU of ``http.client`` per request, and ``http.client`` itself spends
most of its time parsing response headers through the ``email`` package. This transport
writes the request in one ``send`` and reads the response with a buffered reader and a
small parser of its own: status line, headers, then a body framed by
``Content-Length``, by chunks, or by the connection's close, which is all HTTP/1.1 allows.
Over the internet the round trip dominates and httpx with parallel senders is fine, so
:class:`~hackagent_otel._delivery.client.HackAgentClient` uses this transport only for
plain-HTTP base URLs it configured itself with no proxy in the environment; TLS,
proxies and caller-supplied ``httpx.Client`` objects always go through httpx.

One connection per thread (each sender thread keeps its own), fork-safe (a child opens
its own). As with httpx, nothing is retried here: retries are the delivery service's
decision. A response that breaks the protocol raises :class:`BadResponse`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "BadResponse",
    "FastResponse",
    "StdlibHTTP",
    "UnsafeRequest",
    "plain_http_without_proxy",
]

#: Bounds on what a server may send back, so a broken one cannot exhaust memory.
MAX_LINE = 65_536
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024


class BadResponse(http.client.HTTPException):
    """The server's answer is not HTTP/1.x as this transport reads it."""


class UnsafeRequest(ValueError):
    """A request this transport refuses to write (it could be read as another request)."""


@dataclass(frozen=True, slots=True)
class FastResponse:
    """Status, the two headers delivery reads, and the body."""

    status: int
    content_type: str
    retry_after: str | None
    body: bytes
    #: The server will close the connection (or did): it is not reused.
    will_close: bool = False


def _readable(sock: socket.socket) -> bool:
    """An idle keep-alive socket is readable only if the server closed it (or misbehaved)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def plain_http_without_proxy(base_url: str) -> bool:
    """True for an ``http://`` URL that no ``*_proxy`` environment variable applies to."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    if not (proxies.get("http") or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname))


class StdlibHTTP:
    """Keep-alive HTTP/1.1 requests to one plain-HTTP origin, one connection per thread."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"StdlibHTTP serves plain http:// URLs only, not {base_url!r}")
        self._address = (parts.hostname, parts.port or 80)
        self._prefix = parts.path.rstrip("/")
        self._fixed_headers = _header_block(_host_header(parts.hostname, parts.port), headers)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._all_lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    def request(self, method: str, path: str, body: bytes) -> FastResponse:
        """Send one request; raises ``OSError`` or :class:`BadResponse` on failure.

        Like httpcore, a kept-alive connection that the server has closed meanwhile
        (readable while idle) is replaced before use; failures are never retried here.
        """
        target = self._prefix + "/" + path.lstrip("/")
        if not target.isascii() or not target.isprintable() or " " in target:
            raise UnsafeRequest(f"refusing to send an unsafe request target {target[:80]!r}")
        if method not in _METHODS:
            raise UnsafeRequest(f"refusing to send method {method[:16]!r}")
        head = (
            f"{method} {target} HTTP/1.1\r\n".encode("ascii")
            + self._fixed_headers
            + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
        )
        conn = self._connection()
        try:
            conn.sock.sendall(head + body)
            response = _read_response(conn.reader, method)
        except BaseException:
            self._discard(conn)
            raise
        if response.will_close:
            self._discard(conn)
        return response

    def close(self) -> None:
        """Close every connection this transport opened (in this process); later
        requests fail with ``OSError``."""
        if self._pid != os.getpid():
            # Forked: the connections (and a lock another thread may have held at the
            # fork) are the parent's; this process opened none of its own yet.
            self._closed = True
            return
        with self._all_lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def _connection(self) -> _Connection:
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._pid = os.getpid()
            self._local = threading.local()
            self._all = []
            self._all_lock = threading.Lock()
        if self._closed:
            raise ConnectionAbortedError("the transport is closed")
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if not _readable(conn.sock):
                return conn
            self._discard(conn)  # closed by the server while idle
        sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._read_timeout)
        except OSError:
            sock.close()
            raise
        conn = _Connection(sock)
        with self._all_lock:
            if self._closed:  # closed while this connection was being opened
                conn.close()
                raise ConnectionAbortedError("the transport is closed")
            self._all.append(conn)
        self._local.conn = conn
        return conn

    def _discard(self, conn: _Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._all_lock, contextlib.suppress(ValueError):
            self._all.remove(conn)
        conn.close()


class _Connection:
    """A socket and the buffered reader its responses are parsed from."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")

    def close(self) -> None:
        """Close at once, even while another thread is blocked reading a response: the
        shutdown wakes that read (a plain close would wait for it, holding the reader)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


def _host_header(hostname: str, port: int | None) -> str:
    """What ``Host`` says: IDNA for non-ASCII names, brackets for IPv6, the port unless 80."""
    try:
        host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"host {hostname!r} cannot be sent in a Host header") from None
    if ":" in host:
        host = f"[{host}]"
    return host if port in (None, 80) else f"{host}:{port}"


def _header_block(host: str, headers: Mapping[str, str]) -> bytes:
    """The request's fixed header lines, encoded once.

    Names are matched without regard to case, as HTTP does: a ``Host`` given by the
    caller replaces ours, and ``Content-Length`` is always ours (one per request).
    Refuses what could split the request or is not a header name.
    """
    fields = {"host": ("Host", host), "accept-encoding": ("Accept-Encoding", "identity")}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered != "content-length":
            fields[lowered] = (name, value)
    lines = []
    for name, value in fields.values():
        if not _TOKEN.fullmatch(name) or not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ValueError(f"header {name!r} cannot be sent as is")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("header values must be latin-1 text") from None


#: RFC 9110 token characters (header names, methods) and what a header value may not hold.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})


def _read_response(reader: BinaryIO, method: str) -> FastResponse:
    """Parse one response from ``reader``, skipping interim (1xx) ones."""
    for _ in range(MAX_HEADERS):
        status, version, headers = _read_head(reader)
        if not 100 <= status < 200:
            break
    else:
        raise BadResponse(f"more than {MAX_HEADERS} interim responses")
    connection = headers.get(b"connection", b"").lower()
    will_close = b"close" in connection or (
        version == b"HTTP/1.0" and b"keep-alive" not in connection
    )
    transfer_encoding = headers.get(b"transfer-encoding", b"").lower()
    if method == "HEAD" or status in (204, 304):
        # No body by definition; a server that sends one anyway would leave bytes that
        # the next response on this connection would be read from: do not reuse it.
        body = b""
        will_close = will_close or b"content-length" in headers or bool(transfer_encoding)
    elif transfer_encoding:
        if not transfer_encoding.endswith(b"chunked"):
            raise BadResponse(f"unsupported Transfer-Encoding {transfer_encoding[:40]!r}")
        body = _read_chunked(reader)
        # Both framings at once: the chunks win, and the connection is not trusted again.
        will_close = will_close or b"content-length" in headers
    elif b"content-length" in headers:
        body = _read_exactly(reader, _content_length(headers[b"content-length"]))
    else:  # framed by the server closing the connection
        body = reader.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise BadResponse(f"response body over {MAX_BODY} bytes")
        will_close = True
    retry_after = headers.get(b"retry-after")
    return FastResponse(
        status,
        headers.get(b"content-type", b"").decode("latin-1"),
        retry_after.decode("latin-1") if retry_after is not None else None,
        body,
        will_close,
    )


def _read_head(reader: BinaryIO) -> tuple[int, bytes, dict[bytes, bytes]]:
    """Status line and headers (names lower-cased; a repeated header keeps its last value)."""
    line = _read_line(reader)
    if not line:
        raise http.client.RemoteDisconnected("the server closed the connection without answering")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise BadResponse(f"bad status line {line[:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise BadResponse(f"bad status line {line[:80]!r}") from None
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _read_line(reader)
        if line in (b"\r\n", b"\n"):
            return status, parts[0], headers
        if not line:
            raise BadResponse("the connection closed inside the response headers")
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadResponse(f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    raise BadResponse(f"more than {MAX_HEADERS} response headers")


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadResponse(f"response line over {MAX_LINE} bytes")
    return line


def _content_length(raw: bytes) -> int:
    try:
        length = int(raw)
    except ValueError:
        raise BadResponse(f"bad Content-Length {raw[:40]!r}") from None
    if not 0 <= length <= MAX_BODY:
        raise BadResponse(f"Content-Length {length} out of bounds")
    return length


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size) if size else b""
    if len(data) != size:
        raise http.client.IncompleteRead(data, size - len(data))
    return data


def _read_chunked(reader: BinaryIO) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_text = _read_line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadResponse(f"bad chunk size {size_text[:40]!r}") from None
        if size == 0:
            break
        total += size
        if size < 0 or total > MAX_BODY:
            raise BadResponse(f"response body over {MAX_BODY} bytes")
        chunks.append(_read_exactly(reader, size))
        if _read_line(reader) not in (b"\r\n", b"\n"):
            raise BadResponse("a chunk does not end with CRLF")
    for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
        line = _read_line(reader)
        if line in (b"\r\n", b"\n"):
            return b"".join(chunks)
        if not line:
            raise BadResponse("the connection closed inside the chunked body")
    raise BadResponse(f"more than {MAX_HEADERS} trailer lines")
