"""The bridge as a plain ASGI application: OTLP/HTTP traces in, durable records out.

Routes:

* ``POST /v1/traces``: an OTLP/HTTP export (protobuf or JSON, identity or gzip);
* with ``grpc_port`` set, OTLP/gRPC ``TraceService/Export`` on that port too
  (:mod:`._grpc`, started and stopped by this app's lifespan, answered through
  :meth:`BridgeApp.export_message`);
* ``GET /healthz``: 200 while the process serves (liveness);
* ``GET /readyz``: 200 while spans are accepted; 503 while starting, shutting down, or
  when the outbox is unusable (readiness);
* ``GET /metrics``: Prometheus text format (:mod:`._metrics`).

Answers to an export are what an OTLP client's retries depend on (the Collector
retries 429/502/503/504 and connection errors, honouring ``Retry-After``; 400, 408,
413 and 500 are final):

=====  ===========================================================================
200    every record of the request is committed to the outbox (durable); with
       ``partialSuccess`` when some of our spans could not be used
400    the body is not an OTLP trace request (or not valid gzip), or decoding it met
       an unexpected error (the same bytes would meet it again)
401    a token is configured and the request lacks ``Authorization: Bearer <token>``
408    the body did not arrive within ``body_timeout`` (a client trickling it)
413    the body is over the limit as sent, or once decompressed (a gzip bomb)
415    a content type other than protobuf/JSON, or an encoding other than gzip/identity
429    ``Retry-After``: the outbox holds too many undelivered records, too many
       requests wait in line, or the bodies held in memory are at their limit
503    ``Retry-After``: starting, shutting down, or the outbox cannot be written
=====  ===========================================================================

A transient state never answers 500: anything unexpected after decoding (mapping,
the outbox) is logged and answered 503 with ``Retry-After``; bad data is never answered
so, since a client would send the same bytes again for ever.

A body is read in full, within ``body_timeout``, before its request takes a worker
slot: a client that trickles its body holds its connection, never a slot. The bodies
held at once (read so far, waiting in line, being handled) count against
``max_buffered_bytes``. The CPU and disk work of an export runs on worker threads, at
most ``max_concurrent_requests`` at once; requests beyond that wait up to
``max_waiting_requests``, then get 429. A refusal given before the body was read reads
and drops the rest first (at most :data:`DRAIN_BYTES` within :data:`DRAIN_SECONDS`)
or else closes the connection, so nobody is left trickling it. Connections and the
time to send headers are bounded by the server (:mod:`._protocol`). Building the app
(:func:`build_app`) is separate from serving it (:mod:`._server`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

from hackagent_otel._delivery.outbox import OutboxError
from hackagent_otel.bridge import _metrics
from hackagent_otel.bridge._decode import DecodeError, UnsupportedMediaType
from hackagent_otel.bridge._decompress import (
    BadEncoding,
    BodyTooLarge,
    UnsupportedEncoding,
    decompress,
    encoding_of,
)
from hackagent_otel.bridge._pipeline import Accepted, Backlogged, BridgePipeline
from hackagent_otel.bridge._responses import JSON, PROTOBUF, export_response, status_response
from hackagent_otel.bridge._settings import BridgeSettings
from hackagent_otel.bridge._throttle import ThrottledLog

if TYPE_CHECKING:
    from hackagent_otel.bridge._grpc import GrpcReceiver

__all__ = ["BridgeApp", "build_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
State = Literal["starting", "ready", "stopping"]

TRACES_PATH = "/v1/traces"
_log = logging.getLogger("hackagent_otel.bridge")
#: Lines a client can make the bridge write for each request.
_throttled = ThrottledLog(_log)
#: What is left of a refused request's body is read and dropped, up to this many bytes
#: within this many seconds, so the answer does not need to close the connection.
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 2.0


def build_app(settings: BridgeSettings, pipeline: BridgePipeline) -> BridgeApp:
    """The ASGI app for ``settings``, feeding ``pipeline`` (which it starts and closes
    through the ASGI lifespan protocol)."""
    return BridgeApp(settings, pipeline)


class _Refuse(Exception):
    """Answer the export with this status (and ``Retry-After`` on 429/503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BridgeApp:
    """The ASGI callable. ``state`` moves starting -> ready -> stopping."""

    def __init__(self, settings: BridgeSettings, pipeline: BridgePipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = _metrics.Metrics()
        self.state: State = "starting"
        self._token = settings.token.encode() if settings.token else None
        self._working = 0
        self._waiting = 0
        self._turn: asyncio.Condition | None = None
        #: Body bytes held now, and the most that may be (at least one largest body).
        self._buffered = 0
        self._buffer_limit = max(settings.max_buffered_bytes, settings.max_body_bytes)
        #: OTLP/gRPC, when ``grpc_port`` is set; serving from the lifespan's startup on.
        self.grpc: GrpcReceiver | None = None
        if settings.grpc_port is not None:
            from hackagent_otel.bridge._grpc import GrpcReceiver

            self.grpc = GrpcReceiver(self)

    def begin_shutdown(self) -> None:
        """Refuse new exports (503 with Retry-After) from now on; readiness turns 503.

        The gRPC server (if any) starts stopping too, alongside the HTTP server's own
        drain: it refuses new calls and lets those in flight finish.
        """
        self.state = "stopping"
        if self.grpc is not None:
            self.grpc.begin_stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    # -- lifespan ----------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.pipeline.start)
                    if self.grpc is not None:
                        await self.grpc.start()
                except Exception as exc:
                    _log.exception("the bridge could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self.state == "starting":
                    self.state = "ready"
                _log.info("bridge ready: POST http://%s:%d%s", *self._address(), TRACES_PATH)
                if self.grpc is not None:
                    _log.info("bridge ready: OTLP/gRPC Export on %s", self.grpc.address)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.begin_shutdown()
                if self.grpc is not None:
                    await self.grpc.stop()  # calls in flight commit before the outbox closes
                await asyncio.to_thread(self.pipeline.close, self.settings.shutdown_timeout / 2)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _address(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    # -- routing -----------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope.get("path", ""), scope.get("method", "")
        routes: dict[str, tuple[str, Callable[[Scope, Receive, Send], Awaitable[None]]]] = {
            TRACES_PATH: ("POST", self._export),
            "/healthz": ("GET", self._healthz),
            "/readyz": ("GET", self._readyz),
            "/metrics": ("GET", self._metrics),
        }
        route = routes.get(path)
        if route is None:
            await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8")
        elif method != route[0]:
            await _respond(
                send, 405, b"method not allowed\n", "text/plain; charset=utf-8", allow=route[0]
            )
        else:
            await route[1](scope, receive, send)

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _respond(send, 200, b"ok\n", "text/plain; charset=utf-8")

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state != "ready":
            reason = "starting" if self.state == "starting" else "shutting down"
            await _respond(send, 503, f"{reason}\n".encode(), "text/plain; charset=utf-8")
            return
        problem = await asyncio.to_thread(self.pipeline.outbox_problem)
        if problem is not None:
            body = f"outbox {problem}\n".encode("utf-8", "replace")
            await _respond(send, 503, body, "text/plain; charset=utf-8")
            return
        await _respond(send, 200, b"ready\n", "text/plain; charset=utf-8")

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await asyncio.to_thread(self._render_metrics)
        await _respond(send, 200, body, _metrics.CONTENT_TYPE)

    def _render_metrics(self) -> bytes:
        stats = self.pipeline.delivery_stats()
        pending = self.pipeline.pending()
        m = self.metrics
        m.set("hackagent_bridge_records_sent_total", stats.sent)
        m.set("hackagent_bridge_records_retried_total", stats.retried)
        m.set("hackagent_bridge_records_rejected_total", stats.rejected)
        m.set("hackagent_bridge_records_dropped_total", stats.dropped)
        m.set("hackagent_bridge_outbox_pending", -1 if pending is None else pending)
        m.set("hackagent_bridge_ready", 1 if self.state == "ready" and pending is not None else 0)
        return m.render()

    # -- POST /v1/traces ---------------------------------------------------------------
    async def _export(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        content_type = headers.get("content-type", "")
        media_type = content_type.partition(";")[0].strip().lower()
        answer_type = PROTOBUF if media_type == PROTOBUF else JSON
        request_body = _Body(self, headers.get("content-length", "").strip() == "0")
        try:
            result = await self._handle_export(
                headers, media_type, content_type, receive, request_body
            )
        except _Refuse as refusal:
            try:
                if refusal.status not in (408, 413):  # a slow client, or a huge body
                    await request_body.drain(receive)
            except _Disconnected:
                self.metrics.inc("hackagent_bridge_requests_total", code="disconnected")
                return
            await self._refuse(send, answer_type, refusal, close=not request_body.complete)
            return
        except _Disconnected:
            self.metrics.inc("hackagent_bridge_requests_total", code="disconnected")
            return
        finally:
            request_body.release()
        self._count_accepted(result)
        if result.rejected:
            _throttled.info(
                "accepted a request with %d rejected span(s): %s",
                result.rejected,
                "; ".join(result.errors),
            )
        body, body_type = export_response(
            answer_type, result.rejected, "; ".join(result.errors) if result.rejected else ""
        )
        self.metrics.inc("hackagent_bridge_requests_total", code="200")
        await _respond(send, 200, body, body_type)

    async def _handle_export(
        self,
        headers: dict[str, str],
        media_type: str,
        content_type: str,
        receive: Receive,
        body: _Body,
    ) -> Accepted:
        """Every check in the order of its cost; raises :class:`_Refuse` to answer.

        The body is read (into ``body``) before the request waits for a worker slot.
        """
        if self._token is not None and not self._authorized(headers.get("authorization", "")):
            raise _Refuse(401, "missing or wrong bearer token")
        if self.state != "ready":
            raise _Refuse(503, "the bridge is " + self.state.replace("stopping", "shutting down"))
        if media_type not in (PROTOBUF, JSON):
            raise _Refuse(415, f"content type {content_type[:100]!r} is not {PROTOBUF} or {JSON}")
        try:
            encoding = encoding_of(headers.get("content-encoding"))
        except UnsupportedEncoding as exc:
            raise _Refuse(415, str(exc)) from None
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _Refuse(400, "invalid Content-Length")
            if int(declared) > self.settings.max_body_bytes:
                raise _Refuse(413, f"body is over the {self.settings.max_body_bytes}-byte limit")
        timeout = self.settings.body_timeout
        try:
            data = await asyncio.wait_for(body.read(receive), timeout)
        except asyncio.TimeoutError:
            raise _Refuse(408, f"the body did not arrive within {timeout:g} s") from None
        async with self._worker_turn():
            return await asyncio.to_thread(self._ingest, data, encoding, content_type)

    async def export_message(self, data: bytes, authorization: str) -> Accepted:
        """One OTLP/gRPC export (a serialized ``ExportTraceServiceRequest``, which gRPC
        has already decompressed): the same checks, worker slots and pipeline as an
        OTLP/HTTP protobuf body; raises :class:`_Refuse` with the HTTP status it would
        have had (:mod:`._grpc` turns it into a gRPC status)."""
        if self._token is not None and not self._authorized(authorization):
            raise _Refuse(401, "missing or wrong bearer token")
        if self.state != "ready":
            raise _Refuse(503, "the bridge is " + self.state.replace("stopping", "shutting down"))
        if self._buffered + len(data) > self._buffer_limit:
            raise _Refuse(
                429, f"request bodies in memory are at their {self._buffer_limit}-byte limit"
            )
        self._buffered += len(data)
        try:
            async with self._worker_turn():
                result = await asyncio.to_thread(self._ingest, data, "identity", PROTOBUF)
        finally:
            self._buffered -= len(data)
        self._count_accepted(result)
        if result.rejected:
            _throttled.info(
                "accepted a request with %d rejected span(s): %s",
                result.rejected,
                "; ".join(result.errors),
            )
        return result

    def _ingest(self, body: bytes, encoding: str, content_type: str) -> Accepted:
        """On a worker thread: capacity, decompression, decoding, mapping, the outbox."""
        try:
            self.pipeline.check_capacity()
            plain = decompress(body, encoding, self.settings.max_decompressed_bytes)
            return self.pipeline.ingest(
                plain, content_type, max_spans=self.settings.max_spans_per_request
            )
        except BodyTooLarge as exc:
            raise _Refuse(413, str(exc)) from None
        except (BadEncoding, DecodeError) as exc:
            raise _Refuse(400, str(exc)) from None
        except UnsupportedMediaType as exc:
            raise _Refuse(415, str(exc)) from None
        except Backlogged as exc:
            raise _Refuse(429, str(exc)) from None
        except OutboxError as exc:
            _throttled.warning("cannot queue records: %s", exc)
            raise _Refuse(503, f"records cannot be queued now: {exc}") from None
        except Exception as exc:  # a bug after decoding; the client should retry, not drop
            _throttled.warning(
                "unexpected error while handling an export: %r",
                exc,
                key=type(exc),
                exc_info=True,
            )
            raise _Refuse(503, f"internal error: {type(exc).__name__}") from None

    def _authorized(self, header: str) -> bool:
        assert self._token is not None
        scheme, _, credentials = header.strip().partition(" ")
        given = credentials.strip().encode("utf-8", "replace")
        # Always compare, so a wrong scheme takes as long as a wrong token.
        matches = hmac.compare_digest(given, self._token)
        return matches and scheme.lower() == "bearer"

    def _worker_turn(self) -> _WorkerTurn:
        if self._turn is None:
            self._turn = asyncio.Condition()
        return _WorkerTurn(self, self._turn)

    async def _refuse(self, send: Send, answer_type: str, refusal: _Refuse, *, close: bool) -> None:
        """Answer ``refusal``; ``close`` when the rest of the body is not read."""
        self.metrics.inc("hackagent_bridge_requests_total", code=str(refusal.status))
        body, body_type = status_response(answer_type, refusal.status, refusal.message)
        extra: dict[str, str] = {}
        if refusal.status in (429, 503):
            extra["retry-after"] = str(self.settings.retry_after_seconds)
        if refusal.status == 401:
            extra["www-authenticate"] = 'Bearer realm="hackagent-otel bridge"'
        if close:  # else the server would read (and wait for) what is left of it
            extra["connection"] = "close"
        await _respond(send, refusal.status, body, body_type, **extra)

    def _count_accepted(self, result: Accepted) -> None:
        m = self.metrics
        m.inc("hackagent_bridge_spans_received_total", result.received)
        m.inc("hackagent_bridge_spans_ignored_total", result.ignored)
        m.inc("hackagent_bridge_spans_rejected_total", result.rejected)
        m.inc("hackagent_bridge_records_queued_total", result.records)


class _WorkerTurn:
    """``async with``: wait for one of ``max_concurrent_requests`` slots, or 429."""

    def __init__(self, app: BridgeApp, turn: asyncio.Condition) -> None:
        self._app = app
        self._turn = turn

    async def __aenter__(self) -> None:
        app, settings = self._app, self._app.settings
        async with self._turn:
            if app._working >= settings.max_concurrent_requests:
                if app._waiting >= settings.max_waiting_requests:
                    raise _Refuse(429, "too many requests wait in line")
                app._waiting += 1
                try:
                    await self._turn.wait_for(
                        lambda: app._working < settings.max_concurrent_requests
                    )
                finally:
                    app._waiting -= 1
            app._working += 1

    async def __aexit__(self, *exc_info: object) -> None:
        async with self._turn:
            self._app._working -= 1
            self._turn.notify()


class _Disconnected(Exception):
    """The client went away before the body was read; nobody is left to answer."""


class _Body:
    """One request's body: read in full, its bytes counted against the app's
    ``max_buffered_bytes`` until :meth:`release` (after the request is answered)."""

    def __init__(self, app: BridgeApp, empty: bool) -> None:
        self._app = app
        self._held = 0
        #: Read to its end (or declared empty): an answer can leave the connection open.
        self.complete = empty

    async def read(self, receive: Receive) -> bytes:
        """The body, or :class:`_Refuse`: 413 as soon as it passes ``max_body_bytes``,
        429 when holding it would pass ``max_buffered_bytes``."""
        app = self._app
        limit = app.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refuse(413, f"body is over the {limit}-byte limit")
            if app._buffered + len(chunk) > app._buffer_limit:
                raise _Refuse(
                    429, f"request bodies in memory are at their {app._buffer_limit}-byte limit"
                )
            app._buffered += len(chunk)
            self._held += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
                return b"".join(chunks)

    async def drain(self, receive: Receive) -> bool:
        """Read and drop what is left of the body, at most :data:`DRAIN_BYTES` within
        :data:`DRAIN_SECONDS`; whether it ended (then the connection can stay open:
        closing it with the body unread would reset it, and the client could lose the
        answer)."""
        if self.complete:
            return True

        async def rest() -> bool:
            dropped = 0
            while dropped <= DRAIN_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
            return False

        try:
            self.complete = await asyncio.wait_for(rest(), DRAIN_SECONDS)
        except asyncio.TimeoutError:
            return False
        return self.complete

    def release(self) -> None:
        self._app._buffered -= self._held
        self._held = 0


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers, lower-case names; a repeated header keeps its last value."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


async def _respond(send: Send, status: int, body: bytes, content_type: str, **headers: str) -> None:
    raw = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(name.encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
