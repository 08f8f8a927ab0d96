"""OTLP/gRPC beside OTLP/HTTP: ``TraceService/Export`` on ``grpc_port``.

Why the bridge speaks gRPC at all: several bridges run behind the Collector's
``load_balancing`` exporter (collector/otelcol-loadbalancing.yaml), which sends every
trace to one bridge by its trace id, and that exporter speaks only OTLP/gRPC (its
``protocol`` has a single ``otlp`` entry, the OTLP/gRPC exporter's settings, in
Collector v0.160.0). So the same export is served over gRPC too, on its own port, in
the same process and event loop as the HTTP server, through the same checks, worker
slots and pipeline as ``POST /v1/traces`` (:meth:`BridgeApp.export_message`).

The request is taken as the serialized ``ExportTraceServiceRequest`` (no deserializer)
and decoded like an ``application/x-protobuf`` body; gRPC itself undoes ``gzip``
message compression. Answers, for the Collector's OTLP/gRPC exporter (which retries
UNAVAILABLE, and RESOURCE_EXHAUSTED only when the status carries ``RetryInfo``):

==================  =====================================================================
OK                  every record of the request is committed to the outbox; with
                    ``partial_success`` when some of our spans could not be used
INVALID_ARGUMENT    not an OTLP trace request, or decoding met an unexpected error (the
                    HTTP 400/413/415 cases): final
UNAUTHENTICATED     a token is configured and the ``authorization`` metadata is not
                    ``Bearer <token>``: final
RESOURCE_EXHAUSTED  with ``RetryInfo`` (``retry_after_seconds``): the outbox holds too many
                    undelivered records, too many requests wait in line, or the bodies
                    held in memory are at their limit (the HTTP 429 cases); without
                    ``RetryInfo`` (from gRPC itself): a message over
                    ``max_decompressed_bytes``, final
UNAVAILABLE         with ``RetryInfo``: starting, shutting down, or the outbox cannot be
                    written (the HTTP 503 cases)
==================  =====================================================================

Limits: ``max_decompressed_bytes`` bounds a message (gRPC refuses a larger one before
the handler runs); messages held while handled count against ``max_buffered_bytes``;
``max_concurrent_requests`` and ``max_waiting_requests`` are shared with HTTP; each
connection may run :data:`MAX_STREAMS_PER_CONNECTION` calls at once and is closed after
:data:`MAX_IDLE_SECONDS` without one. ``max_connections``, ``header_timeout`` and
``body_timeout`` are the HTTP server's: gRPC's framing, flow control and keep-alive
policing are grpc-core's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from hackagent_otel.bridge._responses import PROTOBUF, export_response, grpc_status_details

if TYPE_CHECKING:
    from hackagent_otel.bridge._app import BridgeApp

__all__ = ["METHOD", "SERVICE", "GrpcReceiver"]

_log = logging.getLogger("hackagent_otel.bridge")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"
#: Concurrent calls one connection may have open (HTTP/2 streams).
MAX_STREAMS_PER_CONNECTION = 100
#: A connection without a call for this long is closed (the client reconnects at once).
MAX_IDLE_SECONDS = 300


class GrpcReceiver:
    """The gRPC server of one :class:`BridgeApp`, started and stopped by its lifespan."""

    def __init__(self, app: BridgeApp) -> None:
        self._app = app
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Future[None] | None = None
        #: The port bound (``grpc_port``, or the one chosen for 0), once started.
        self.port: int | None = None

    @property
    def address(self) -> str:
        """``host:port`` as gRPC binds it (IPv6 hosts in brackets)."""
        host = self._app.settings.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = self.port if self.port is not None else self._app.settings.grpc_port
        return f"{host}:{port}"

    async def start(self) -> None:
        """Bind ``host:grpc_port`` and serve; raises when gRPC is missing or cannot bind."""
        try:
            import grpc
            import grpc.aio
        except ImportError as exc:  # pragma: no cover - grpcio comes with the bridge extra
            raise RuntimeError(
                "OTLP/gRPC needs grpcio: pip install 'hackagent-otel[bridge]'"
            ) from exc
        settings = self._app.settings
        limit = max(settings.max_decompressed_bytes, 1)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
                ("grpc.max_connection_idle_ms", MAX_IDLE_SECONDS * 1000),
                # Without this, gRPC binds with SO_REUSEPORT: a second bridge on the same
                # port would start, and take half of the first one's connections.
                ("grpc.so_reuseport", 0),
            ]
        )
        export = grpc.unary_unary_rpc_method_handler(self._export)  # bytes in, bytes out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: export}),)
        )
        wanted = self.address
        try:
            port = server.add_insecure_port(wanted)
        except RuntimeError as exc:  # recent grpcio raises; older ones return 0
            raise OSError(
                f"cannot serve OTLP/gRPC on {wanted}: {exc} (is the address already in use?)"
            ) from None
        if not port:
            raise OSError(f"cannot serve OTLP/gRPC on {wanted} (is the address already in use?)")
        await server.start()
        self._server, self._loop, self.port = server, asyncio.get_running_loop(), port

    def begin_stop(self) -> None:
        """Refuse new calls and let the ones in flight finish (any thread, signal-safe)."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._stop_task)

    async def stop(self) -> None:
        """Stop serving: calls in flight get half of ``shutdown_timeout`` to finish."""
        task = self._stop_task()
        if task is not None:
            await task

    def _stop_task(self) -> asyncio.Future[None] | None:
        if self._server is None:
            return None
        if self._stopping is None:
            grace = self._app.settings.shutdown_timeout / 2
            self._stopping = asyncio.ensure_future(self._server.stop(grace))
        return self._stopping

    async def _export(self, request: bytes, context: Any) -> bytes:
        """``TraceService/Export``: the serialized response, or an aborted call."""
        from hackagent_otel.bridge._app import _Refuse

        app = self._app
        authorization = ""
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization" and isinstance(value, str):
                authorization = value
        try:
            result = await app.export_message(request, authorization)
        except _Refuse as refusal:
            await self._abort(context, refusal.status, refusal.message)
            raise AssertionError("unreachable: abort raises") from None  # pragma: no cover
        app.metrics.inc("hackagent_bridge_grpc_requests_total", code="OK")
        body, _ = export_response(
            PROTOBUF, result.rejected, "; ".join(result.errors) if result.rejected else ""
        )
        return body

    async def _abort(self, context: Any, http_status: int, message: str) -> None:
        import grpc

        retry_after: int | None = None
        if http_status == 429:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            retry_after = self._app.settings.retry_after_seconds
        elif http_status == 503:
            code = grpc.StatusCode.UNAVAILABLE
            retry_after = self._app.settings.retry_after_seconds
        elif http_status == 401:
            code = grpc.StatusCode.UNAUTHENTICATED
        else:  # 400, 413, 415: the same bytes would fail again
            code = grpc.StatusCode.INVALID_ARGUMENT
        self._app.metrics.inc("hackagent_bridge_grpc_requests_total", code=code.name)
        details = grpc_status_details(code.value[0], message, retry_after)
        await context.abort(
            code, message[:1000], trailing_metadata=(("grpc-status-details-bin", details),)
        )
