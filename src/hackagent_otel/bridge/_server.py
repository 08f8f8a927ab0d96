"""Serve the bridge with uvicorn: ``hackagent-otel bridge`` calls :func:`run`.

uvicorn is imported here only (``pip install 'hackagent-otel[bridge]'``), so the
library itself never needs it.

SIGTERM (or Ctrl-C): the app refuses new exports with 503 and ``Retry-After`` at once
and readiness turns 503; uvicorn stops accepting connections and lets in-flight
requests finish (half of ``shutdown_timeout``); then the delivery service gets the other
half to deliver what the API takes and stops. Every answered export is already in the
outbox, so what was not delivered is delivered by the next start. The process then
exits 0.

Hostile clients: uvicorn serves the app with :mod:`._protocol`'s h11 protocol, which
bounds open connections and the time to send request headers; the app bounds the time
to send a body. ``max_connections`` is lowered to fit the process's file descriptor
limit (``ulimit -n``), with room for the outbox, the logs and connections accepted but
not yet closed, so accepting never fails for want of descriptors. Repeated lines of
asyncio and uvicorn (accept errors, invalid requests) are logged at most once per
5 s each (:mod:`._throttle`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from hackagent_otel._delivery.outbox import OutboxError
from hackagent_otel._sanitize import SecretScrubbingFilter
from hackagent_otel._setup import PACKAGE_LOGGERS
from hackagent_otel.bridge._app import BridgeApp, build_app
from hackagent_otel.bridge._pipeline import BridgePipeline, sanitizer_for
from hackagent_otel.bridge._settings import BridgeSettings
from hackagent_otel.bridge._throttle import ThrottleFilter, throttled_exception_handler

if TYPE_CHECKING:
    import uvicorn

__all__ = ["run", "uvicorn_config", "uvicorn_server"]

_log = logging.getLogger("hackagent_otel.bridge")

#: Connections the event loop accepts in one go (uvicorn's ``backlog``, which asyncio
#: also uses as the number of accepts per wake-up).
ACCEPT_BACKLOG = 128
#: File descriptors kept free of connections: the outbox and its journal, logs, the
#: event loop's own, and up to three accept batches not closed yet.
FD_RESERVE = 64 + 3 * ACCEPT_BACKLOG
#: Container allocations between young collections in the bridge process (the
#: interpreter's default is 700; see :func:`run`).
GC_YOUNG_THRESHOLD = 50_000
#: Loggers whose repeated lines a client can cause (the event loop's own trouble goes
#: through its exception handler, throttled too: see :func:`uvicorn_server`).
THROTTLED_LOGGERS = ("uvicorn.error",)


def run(settings: BridgeSettings | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (0 after a graceful stop, 1 on failure)."""
    if importlib.util.find_spec("uvicorn") is None:
        print(
            "hackagent-otel bridge needs uvicorn: pip install 'hackagent-otel[bridge]'",
            file=sys.stderr,
        )
        return 1
    settings = settings or BridgeSettings.resolve()
    _configure_logging(settings.log_level)
    # Neither the API key nor the bridge's own token may appear in what it writes, logs
    # included: the package's loggers scrub this sanitizer's known secrets from now on.
    sanitizer = sanitizer_for(settings)
    SecretScrubbingFilter(sanitizer).attach(*PACKAGE_LOGGERS)
    try:
        pipeline = BridgePipeline.from_settings(settings, sanitizer)
    except OutboxError as exc:
        _log.error("cannot open the bridge's outbox: %s", exc)
        return 1
    app = build_app(settings, pipeline)
    # Everything allocated so far lives as long as the process: keep the collector from
    # scanning it again on every full collection while exports churn short-lived objects.
    gc.freeze()
    # A 510-span export leaves some 4,500 tracked containers (views, records, bodies)
    # alive until its commit: at the default 700 the young collection ran over them 6 to
    # 7 times per export, and the middle one every other export, to find no garbage
    # (2.5M of 116.7M instructions per export). At 50,000 it runs once in 11 exports.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    _log.info(
        "HackAgent API: %s; outbox: %s; token %s",
        settings.hackagent_base_url or "none (records wait in the outbox for `push`)",
        settings.outbox_path,
        "required" if settings.token else "not required",
    )
    config = uvicorn_config(settings, app)
    server = uvicorn_server(config, app)
    try:
        with _signals_end_only_the_server():
            server.run()
    except SystemExit as exc:  # uvicorn exits this way (code 3) when it cannot bind or start
        return 1 if exc.code else 0
    finally:
        pipeline.close(settings.shutdown_timeout / 2)  # a no-op after the lifespan's
    return 0 if server.started else 1


def uvicorn_config(settings: BridgeSettings, app: BridgeApp, **overrides: Any) -> uvicorn.Config:
    """How uvicorn serves ``app`` for ``settings`` (``overrides`` go to ``uvicorn.Config``)."""
    import uvicorn

    from hackagent_otel.bridge._protocol import ConnectionLimits, guarded_protocol

    limits = ConnectionLimits(
        max_connections=connection_limit(settings.max_connections),
        header_timeout=settings.header_timeout,
        retry_after_seconds=settings.retry_after_seconds,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "lifespan": "on",
        "log_level": settings.log_level,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_timeout / 2)),
        "http": guarded_protocol(limits),
        "ws": "none",
        "backlog": ACCEPT_BACKLOG,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def connection_limit(wanted: int) -> int:
    """``wanted``, or fewer when the descriptor limit leaves no room for that many."""
    try:
        import resource
    except ImportError:  # not on Unix: no limit to read
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - FD_RESERVE:
        return wanted
    fitting = max(1, soft - FD_RESERVE)
    _log.warning(
        "max_connections %d lowered to %d to fit the file descriptor limit (ulimit -n %d)",
        wanted,
        fitting,
        soft,
    )
    return fitting


def uvicorn_server(config: uvicorn.Config, app: BridgeApp) -> uvicorn.Server:
    """uvicorn's server, telling the app to refuse new exports as soon as a signal comes,
    on an event loop whose repeated errors (accept failures) are logged once per 5 s."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.begin_shutdown()
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            asyncio.get_running_loop().set_exception_handler(throttled_exception_handler())
            await super().startup(sockets=sockets)

    return Server(config)


@contextmanager
def _signals_end_only_the_server() -> Iterator[None]:
    """Keep SIGTERM/SIGINT from ending the process after the server stopped.

    uvicorn re-raises the signal it caught once it has shut down, to the handler that
    was installed before; with a no-op one there, the process exits 0 after its own
    shutdown instead of dying from the signal.
    """
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: FrameType | None) -> None:
    return None


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("hackagent_otel").setLevel(level.upper())
    for name in THROTTLED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ThrottleFilter) for f in logger.filters):
            logger.addFilter(ThrottleFilter())
