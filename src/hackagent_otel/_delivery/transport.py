"""How one HackAgent API call moves over HTTP: a small interface, two httpx implementations.

A :class:`Transport` sends a method, a target and the exact body bytes, and returns an
:class:`Answer` (the status, the three headers delivery reads, and the body, capped) or
raises :class:`TransportError`. What an answer *means* (delivered, worth retrying, final)
is decided elsewhere, once, for both implementations
(:func:`hackagent_otel._delivery.client.outcome_of`).

* :class:`OwnTransport` builds the ``httpx.Client`` itself: redirects are never
  followed, the answer is read in chunks and never past its cap, and every call ends by
  its deadline, even against a server that trickles its headers or body a byte at a
  time, each byte inside the per-read timeout. The deadline is enforced below httpx, by
  an httpcore network backend whose streams shorten each read, write and connect to
  what remains of the current call's time.
* :class:`BorrowedTransport` uses an ``httpx.Client`` the caller configured, as it is
  (its auth, headers, hooks, TLS and transport apply) and never closes it. Every request
  is sent with ``follow_redirects=False`` whatever the client says, so credentials never
  follow a redirect to another host. The deadline can only be approached from above
  httpx here: each phase's timeout is cut to the time remaining when the call starts,
  and the deadline is checked between body chunks; a server that trickles the *headers*
  is bounded by the per-read timeout alone.

Both ask for an uncompressed answer (``Accept-Encoding: identity``), so the cap bounds
the memory an answer takes exactly; an answer encoded anyway is not read.

Nothing is retried here: retries are the delivery service's decision.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpcore
import httpx

__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "BorrowedTransport",
    "OwnTransport",
    "Transport",
    "TransportError",
]

#: The most of an answer's body that is read; the rest is left unread (connection closed).
#: API answers are small JSON objects: a trace as stored is under 300 kB.
MAX_ANSWER_BYTES = 1024 * 1024
#: Headers every call carries, over the client's own.
REQUEST_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "identity",
}
#: Request bodies are written in pieces of this size, the deadline checked before each.
_WRITE_PIECE = 64 * 1024

ErrorKind = Literal["timeout", "network", "unsendable"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server answered: status, the headers delivery reads, the body as read.

    ``url`` is where the request went (a redirect's ``location`` is resolved against
    it). ``cut`` says why ``body`` is not the whole answer (over the cap, cut short by
    the server, the deadline passed while reading, or an encoding that was not asked
    for), or is ``None`` when it is.
    """

    status: int
    url: str
    content_type: str = ""
    retry_after: str | None = None
    location: str | None = None
    body: bytes = b""
    cut: str | None = None


class TransportError(Exception):
    """No answer: the call timed out, the network failed, or it cannot be sent at all.

    ``kind`` is ``"timeout"``, ``"network"`` (refused, reset, a broken answer before its
    status was read) or ``"unsendable"`` (the same request would fail the same way every
    time: a URL or header that cannot be written).
    """

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: ErrorKind = kind
        self.reason = reason


class Transport(Protocol):
    """Sends one request and returns the answer; safe to call from several threads."""

    def request(self, method: str, target: str, body: bytes, deadline: float) -> Answer:
        """Send ``body`` to ``target`` (relative to the base URL, or an absolute URL).

        ``deadline`` is a :func:`time.monotonic` time by which the call ends. Raises
        :class:`TransportError` when there is no answer.
        """
        ...

    def close(self) -> None:
        """Release what this transport opened; idempotent."""
        ...


# -- the two transports -----------------------------------------------------------------


class OwnTransport:
    """An ``httpx.Client`` we build and own, with the call deadline enforced below it.

    A proxy named by the environment for ``base_url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, exempted by ``NO_PROXY``, as the standard library reads them) carries
    the calls, as it would for a plain ``httpx.Client``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        verify: Any = True,
        max_connections: int = 32,
        auth: httpx.Auth | None = None,
        cookies: httpx.Cookies | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._deadline = _CallDeadline()
        pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            proxy=environment_proxy(base_url),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(self._deadline),
        )
        self._client = httpx.Client(
            base_url=base_url,
            headers=dict(headers),
            timeout=timeout,
            auth=auth,
            cookies=cookies,
            follow_redirects=False,
            transport=_PoolTransport(pool),
        )
        self._max_answer = max_answer_bytes

    def request(self, method: str, target: str, body: bytes, deadline: float) -> Answer:
        self._deadline.at = deadline
        try:
            return _exchange(self._client, method, target, body, deadline, self._max_answer)
        finally:
            self._deadline.at = None

    def close(self) -> None:
        self._client.close()


class BorrowedTransport:
    """A caller's ``httpx.Client``, used as it is configured and never closed by us."""

    def __init__(self, client: httpx.Client, *, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._client = client
        self._max_answer = max_answer_bytes

    def request(self, method: str, target: str, body: bytes, deadline: float) -> Answer:
        return _exchange(self._client, method, target, body, deadline, self._max_answer)

    def close(self) -> None:
        """Nothing to do: the client is the caller's."""


# -- one exchange, for both ---------------------------------------------------------------


def _exchange(
    client: httpx.Client, method: str, target: str, body: bytes, deadline: float, limit: int
) -> Answer:
    """Send the request, read the answer's head and up to ``limit`` bytes of its body.

    Once the status is read there is an answer, whatever happens to the body after it
    (a 2xx means the API took the record, even if its answer then breaks).
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TransportError("timeout", "timeout (the call's deadline passed before it was sent)")
    try:
        with client.stream(
            method,
            target,
            content=body,
            headers=REQUEST_HEADERS,
            timeout=_within(client.timeout, remaining),
            follow_redirects=False,
        ) as response:
            content, cut = _read_body(response, deadline, limit)
            if _framing_untrusted(response):
                _retire_connection(response)
            return _answer(response, content, cut)
    except httpx.HTTPStatusError as exc:
        # A hook of the caller's client raised for the status: the answer still counts.
        return _answer(exc.response, b"", "not read (the client's hook raised for the status)")
    except (httpx.HTTPError, httpx.InvalidURL, OSError, RuntimeError, ValueError) as exc:
        raise transport_error(exc) from exc


def _answer(response: httpx.Response, body: bytes, cut: str | None) -> Answer:
    headers = response.headers
    retry_after = headers.get_list("retry-after")
    location = headers.get_list("location")
    return Answer(
        status=response.status_code,
        url=str(response.url),
        content_type=headers.get("content-type", ""),
        # A repeated Retry-After keeps its last value; two Locations point nowhere.
        retry_after=retry_after[-1] if retry_after else None,
        location=location[0] if len(location) == 1 else None,
        body=body,
        cut=cut,
    )


def _framing_untrusted(response: httpx.Response) -> bool:
    """The answer's framing leaves the connection's next bytes in doubt.

    A 204 or 304 (or an answer to HEAD) that announces a body anyway may have sent one,
    which the next answer on the connection would be read from; an answer framed by
    chunks and a length at once was read by one of them, not necessarily the sender's.
    """
    headers = response.headers
    length = headers.get("content-length", "0").strip()
    chunked = "transfer-encoding" in headers
    if response.status_code in (204, 304) or response.request.method == "HEAD":
        return chunked or length != "0"
    return chunked and "content-length" in headers


def _retire_connection(response: httpx.Response) -> None:
    """Shut the answer's connection down, so the pool drops it instead of reusing it.

    httpcore hands back the connection's stream as the public ``network_stream``
    extension; a shut-down socket reads as closed, which the pool checks before reuse.
    """
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_body(response: httpx.Response, deadline: float, limit: int) -> tuple[bytes, str | None]:
    """The body as sent, up to ``limit`` bytes, and why it is not all of it (if not).

    Read raw, chunk by chunk as the network gives it, and never raises: a body that
    breaks is returned as far as it came.
    """
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        return b"", f"not read (content-coding {coding[:40]!r}, not asked for)"
    announced = response.headers.get("content-length", "").strip()
    if response.is_success and announced.isdigit() and int(announced) > limit:
        # Cut, it would not be parsed anyway: not waited for. Other answers are read up
        # to the cap for their reason.
        return b"", f"over {limit} bytes (Content-Length {announced[:20]}), not read"
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():
            if size + len(chunk) > limit:
                chunks.append(chunk[: limit - size])
                return b"".join(chunks), f"over {limit} bytes, the rest not read"
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                return b"".join(chunks), "the call's deadline passed while it was read"
    except (httpx.HTTPError, OSError, RuntimeError, ValueError) as exc:
        return b"".join(chunks), f"cut short ({type(exc).__name__}: {exc})"[:200]
    return b"".join(chunks), None


def _within(timeout: httpx.Timeout, remaining: float) -> httpx.Timeout:
    """``timeout`` with each phase cut to ``remaining`` seconds (unbounded phases too)."""

    def cut(seconds: float | None) -> float:
        return remaining if seconds is None else min(seconds, remaining)

    return httpx.Timeout(
        connect=cut(timeout.connect),
        read=cut(timeout.read),
        write=cut(timeout.write),
        pool=cut(timeout.pool),
    )


def transport_error(exc: Exception) -> TransportError:
    """The one classification of an exception from httpx (or under it) for delivery."""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, httpx.TimeoutException):
        return TransportError("timeout", f"timeout ({reason})")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)):
        return TransportError("unsendable", f"cannot be sent: {reason}")
    return TransportError("network", reason)


def environment_proxy(base_url: str) -> httpcore.Proxy | None:
    """The proxy the environment names for ``base_url``'s scheme, unless ``NO_PROXY`` (or
    the platform's bypass list) exempts its host."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    address = proxies.get(url.scheme) or proxies.get("all")
    if not address or urllib.request.proxy_bypass(url.host):
        return None
    proxy = httpx.Proxy(address if "://" in address else f"http://{address}")
    return httpcore.Proxy(
        url=httpcore.URL(
            scheme=proxy.url.raw_scheme,
            host=proxy.url.raw_host,
            port=proxy.url.port,
            target=proxy.url.raw_path,
        ),
        auth=proxy.raw_auth,
        headers=proxy.headers.raw,
        ssl_context=proxy.ssl_context,
    )


# -- the deadline, below httpx --------------------------------------------------------------


class _CallDeadline(threading.local):
    """The :func:`time.monotonic` time the current thread's call must end by, if any.

    Per thread, because each sender thread makes its own call; a kept-alive connection
    reads the deadline of whichever call is using it.
    """

    at: float | None = None

    def bound(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` cut to what remains; raises ``error`` once nothing does."""
        at = self.at
        if at is None:
            return timeout
        remaining = at - time.monotonic()
        if remaining <= 0:
            raise error(_DEADLINE_PASSED)
        return remaining if timeout is None else min(timeout, remaining)

    def ended(self, exc: httpcore.TimeoutException) -> bool:
        """``exc`` came from a timeout that the deadline cut short, and does not say so.

        Reads and writes check this inline (they are the hot path); connecting uses
        :meth:`explained`.
        """
        at = self.at
        return at is not None and time.monotonic() >= at and str(exc) != _DEADLINE_PASSED

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """A connect timeout in the block says so when the deadline is what ended it."""
        try:
            yield
        except httpcore.ConnectTimeout as exc:
            if self.ended(exc):
                raise httpcore.ConnectTimeout(_DEADLINE_PASSED) from exc
            raise


_DEADLINE_PASSED = "the call's deadline passed"


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the current call's deadline.

    ``close`` shuts the socket down before closing it, so a read blocked on it in
    another thread (a call in flight when the client is closed) wakes at once.
    """

    def __init__(self, stream: httpcore.NetworkStream, deadline: _CallDeadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = self._deadline
        try:
            return self._stream.read(max_bytes, deadline.bound(timeout, httpcore.ReadTimeout))
        except httpcore.ReadTimeout as exc:
            if deadline.ended(exc):
                raise httpcore.ReadTimeout(_DEADLINE_PASSED) from exc
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = self._deadline
        try:
            for start in range(0, len(buffer), _WRITE_PIECE):
                piece = buffer[start : start + _WRITE_PIECE]
                self._stream.write(piece, deadline.bound(timeout, httpcore.WriteTimeout))
        except httpcore.WriteTimeout as exc:
            if deadline.ended(exc):
                raise httpcore.WriteTimeout(_DEADLINE_PASSED) from exc
            raise

    def close(self) -> None:
        sock = self._stream.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._deadline.bound(timeout, httpcore.ConnectTimeout)
        with self._deadline.explained():
            stream = self._stream.start_tls(ssl_context, server_hostname, bounded)
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own blocking-socket backend, with :class:`_DeadlineStream` streams."""

    def __init__(self, deadline: _CallDeadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._deadline.bound(timeout, httpcore.ConnectTimeout)
        with self._deadline.explained():
            stream = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._deadline.bound(timeout, httpcore.ConnectTimeout)
        with self._deadline.explained():
            stream = self._inner.connect_unix_socket(path, bounded, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# -- an httpx transport over our own httpcore pool -------------------------------------------


class _PoolTransport(httpx.BaseTransport):
    """What ``httpx.HTTPTransport`` does, over a pool we built (with our backend).

    ``httpx.HTTPTransport`` builds its httpcore pool itself and takes no network
    backend, so this is its request handling, on public httpx and httpcore API only:
    an httpx request becomes an httpcore one, and httpcore's errors become httpx's.
    """

    def __init__(self, pool: httpcore.ConnectionPool) -> None:
        self._pool = pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        if not isinstance(stream, httpx.SyncByteStream):  # pragma: no cover - httpx's own
            raise TypeError("a sync client sends sync streams")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            core_response = self._pool.handle_request(core_request)
        body = core_response.stream
        if not isinstance(body, Iterable):  # pragma: no cover - a sync pool's own
            raise TypeError("a sync pool answers with sync streams")
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_CoreStream(body),
            extensions=core_response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _CoreStream(httpx.SyncByteStream):
    """An httpcore response body as an httpx stream, httpcore's errors made httpx's."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


#: httpcore's errors and httpx's names for them, the most specific first.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors in the block as the httpx errors they stand for."""
    try:
        yield
    except Exception as exc:
        for core, ours in _HTTPX_ERRORS:
            if isinstance(exc, core):
                raise ours(str(exc)) from exc
        raise
