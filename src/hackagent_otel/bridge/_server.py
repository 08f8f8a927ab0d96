"""Serve the bridge with uvicorn: ``hackagent-otel bridge`` calls :func:`run`.

uvicorn is imported here only (``pip install 'hackagent-otel[bridge]'``), so the
library itself never needs it.

SIGTERM (or Ctrl-C): the app refuses new exports with 503 and ``Retry-After`` at once
and readiness turns 503; uvicorn stops accepting connections and lets in-flight
requests finish (half of ``shutdown_timeout``); then the delivery service gets the other
half to deliver what the API takes and stops. Every answered export is already in the
outbox, so what was not delivered is delivered by the next start. The process then
exits 0.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from hackagent_otel import _sanitize
from hackagent_otel._delivery.outbox import OutboxError
from hackagent_otel.bridge._app import BridgeApp, build_app
from hackagent_otel.bridge._pipeline import BridgePipeline
from hackagent_otel.bridge._settings import BridgeSettings

__all__ = ["run"]

_log = logging.getLogger("hackagent_otel.bridge")


def run(settings: BridgeSettings | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (0 after a graceful stop, 1 on failure)."""
    try:
        import uvicorn
    except ImportError:
        print(
            "hackagent-otel bridge needs uvicorn: pip install 'hackagent-otel[bridge]'",
            file=sys.stderr,
        )
        return 1
    settings = settings or BridgeSettings.resolve()
    _configure_logging(settings.log_level)
    _sanitize.set_extra_secret_words(settings.redact_keys)
    # Neither the API key nor the bridge's own token may appear in what it writes.
    _sanitize.pin_secret(settings.hackagent_api_key, configured=True)
    _sanitize.pin_secret(settings.token, configured=True)
    try:
        pipeline = BridgePipeline.from_settings(settings)
    except OutboxError as exc:
        _log.error("cannot open the bridge's outbox: %s", exc)
        return 1
    app = build_app(settings, pipeline)
    # Everything allocated so far lives as long as the process: keep the collector from
    # scanning it again on every full collection while exports churn short-lived objects.
    gc.freeze()
    _log.info(
        "HackAgent API: %s; outbox: %s; token %s",
        settings.hackagent_base_url or "none (records wait in the outbox for `push`)",
        settings.outbox_path,
        "required" if settings.token else "not required",
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout / 2)),
    )
    server = _uvicorn_server(config, app)
    try:
        with _signals_end_only_the_server():
            server.run()
    except SystemExit as exc:  # uvicorn exits this way (code 3) when it cannot bind or start
        return 1 if exc.code else 0
    finally:
        pipeline.close(settings.shutdown_timeout / 2)  # a no-op after the lifespan's
    return 0 if server.started else 1


def _uvicorn_server(config: Any, app: BridgeApp) -> Any:
    """uvicorn's server, telling the app to refuse new exports as soon as a signal comes."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.begin_shutdown()
            super().handle_exit(sig, frame)

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
