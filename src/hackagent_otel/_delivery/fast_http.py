"""A lean keep-alive HTTP/1.1 transport over the standard library, for plain ``http://``.

Why it exists: on loopback or a LAN the cost of a record's call is the client's CPU, and
httpx spends about four times as much CPU per request as ``http.client`` (measured here:
~280 us against ~65 us). Sender threads cannot overlap that cost under the interpreter
lock, so httpx alone caps delivery at about the rate of one sequential httpx client.
Over the internet the round trip dominates and httpx with parallel senders is fine, so
:class:`~hackagent_otel._delivery.client.HackAgentClient` uses this transport only for
plain-HTTP base URLs it configured itself with no proxy in the environment; TLS,
proxies and caller-supplied ``httpx.Client`` objects always go through httpx.

One connection per thread (each sender thread keeps its own), headers and body written
in one ``send`` (no Nagle/delayed-ACK stalls), fork-safe (a child opens its own). As
with httpx, nothing is retried here: retries are the delivery service's decision.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FastResponse", "StdlibHTTP", "plain_http_without_proxy"]


@dataclass(frozen=True, slots=True)
class FastResponse:
    """Status, the two headers delivery reads, and the body."""

    status: int
    content_type: str
    retry_after: str | None
    body: bytes


def _readable(sock: socket.socket) -> bool:
    """An idle keep-alive socket is readable only if the server closed it (or misbehaved)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


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
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._headers = dict(headers)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()
        self._pid = os.getpid()

    def request(self, method: str, path: str, body: bytes) -> FastResponse:
        """Send one request; raises ``OSError``/``http.client.HTTPException`` on failure.

        Like httpcore, a kept-alive connection that the server has closed meanwhile
        (readable while idle) is replaced before use; failures are never retried here.
        """
        conn = self._connection()
        try:
            conn.request(method, self._prefix + "/" + path.lstrip("/"), body, self._headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self._discard(conn)
            raise
        if response.will_close:
            self._discard(conn)
        return FastResponse(
            response.status,
            response.getheader("content-type", ""),
            response.getheader("retry-after"),
            data,
        )

    def close(self) -> None:
        """Close every connection this transport opened (in this process)."""
        with self._all_lock:
            conns, self._all = self._all, []
        if self._pid == os.getpid():
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._pid = os.getpid()
            self._local = threading.local()
            self._all = []
            self._all_lock = threading.Lock()
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            self._discard(conn)  # closed by the server while idle (or not connected)
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self._read_timeout)
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._all_lock, contextlib.suppress(ValueError):
            self._all.remove(conn)
        with contextlib.suppress(OSError):
            conn.close()
