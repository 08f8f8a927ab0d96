"""uvicorn's h11 protocol with the two limits it lacks: open connections and header time.

uvicorn (0.55 checked) keeps a connection that never completes its request headers open
for ever (its keep-alive timer only starts after a response), and ``limit_concurrency``
counts such connections but acts only once a request's headers are in: 1,100 of them
took every file descriptor of a bridge (``ulimit -n 1024``). :func:`guarded_protocol`
makes the protocol class a server uses, with:

* **a header deadline**: a connection waiting for a request (just opened, or after its
  previous answer) must send that request's headers within ``header_timeout``; else
  it is answered 408 and closed;
* **a bound on open connections**: past ``max_connections`` a new connection closes
  the one that has waited longest for its request headers (a slow or idle client, in
  the way of one that sends its request at once); when every open connection is in
  the middle of a request, the new one is answered 503 with ``Retry-After`` and closed.

Whether a connection waits for headers is h11's own state for the client
(``their_state is IDLE``), read after every event uvicorn handles. Bodies are the app's
business (:mod:`._app` reads them with a deadline before taking a worker slot).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from hackagent_otel.bridge._throttle import ThrottledLog

__all__ = ["ConnectionLimits", "GuardedH11Protocol", "guarded_protocol"]

_log = ThrottledLog(logging.getLogger("hackagent_otel.bridge"))


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server allows its connections."""

    max_connections: int
    header_timeout: float
    retry_after_seconds: int


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class for one server (``uvicorn.Config(http=...)``), with its own
    record of the connections waiting for request headers."""

    class Guarded(GuardedH11Protocol):
        _limits: ClassVar[ConnectionLimits] = limits
        _waiting: ClassVar[dict[GuardedH11Protocol, None]] = {}

    return Guarded


def _plain_response(status: str, message: str, *headers: str) -> bytes:
    """A complete ``Connection: close`` answer, written before (or instead of) h11's."""
    body = message.encode()
    lines = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_TOO_SLOW = _plain_response("408 Request Timeout", "request headers took too long\n")


class GuardedH11Protocol(H11Protocol):
    """One connection. Use :func:`guarded_protocol` for a class with limits."""

    _limits: ClassVar[ConnectionLimits]
    #: Connections waiting for a request's headers, the longest waiting first.
    _waiting: ClassVar[dict[GuardedH11Protocol, None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if len(self.connections) >= self._limits.max_connections and not self._make_room():
            self._refused = True
            _log.warning(
                "refused a connection: all %d open connections are in the middle of a request",
                self._limits.max_connections,
            )
            transport.write(
                _plain_response(
                    "503 Service Unavailable",
                    "too many connections\n",
                    f"retry-after: {self._limits.retry_after_seconds}",
                )
            )
            transport.close()
            return
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        if not self._refused:  # a refused connection never became uvicorn's
            super().connection_lost(exc)

    # -- uvicorn -------------------------------------------------------------------------
    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers()

    # -- the header deadline -------------------------------------------------------------
    def _watch_headers(self) -> None:
        """Start the header deadline when the connection begins to wait for a request;
        stop it once the request's headers are in (or the connection closes)."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_watching()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout, self._headers_too_slow
            )
            self._waiting[self] = None

    def _stop_watching(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._waiting.pop(self, None)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        _log.info(
            "closed a connection that sent no request headers within %g s",
            self._limits.header_timeout,
        )
        self._close_waiting()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for request headers, if any."""
        oldest = next(iter(self._waiting), None)
        if oldest is None:
            return False
        _log.info(
            "%d connections open: closed the one waiting longest for request headers",
            len(self.connections),
        )
        oldest._close_waiting()
        return True

    def _close_waiting(self) -> None:
        self._stop_watching()
        if not self.transport.is_closing():
            self.transport.write(_TOO_SLOW)
            self.transport.close()
