"""BridgeSettings: what ``hackagent-otel bridge`` runs with, resolved once.

Each setting comes from an argument, else its environment variable, else a default.
The HackAgent API and the extra secret key words are resolved exactly as for an app
(:meth:`hackagent_otel._config.Settings.resolve`), so one set of ``HACKAGENT_*``
variables means the same thing on both sides.

The outbox is the bridge's own file (``bridge-outbox.sqlite3`` beside an app's default
outbox) unless told otherwise: rows an app spooled for its API and rows the bridge
accepted for its API never mix, and a bridge never delivers an app's rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hackagent_otel._config import Settings

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BridgeSettings",
    "default_bridge_outbox_path",
]

DEFAULT_HOST = "127.0.0.1"
#: The port collector/otelcol-config.yaml's ``otlp_http/bridge`` exporter sends to.
DEFAULT_PORT = 4328
#: The OTLP/gRPC port the configs in collector/ and docker-compose.yml give a bridge when
#: they turn gRPC on (``--grpc-port``); off unless asked for.
DEFAULT_GRPC_PORT = 4329
MIB = 1024 * 1024

TOKEN_ENV = "HACKAGENT_BRIDGE_TOKEN"
OUTBOX_ENV = "HACKAGENT_BRIDGE_OUTBOX_PATH"


def default_bridge_outbox_path(env: Mapping[str, str] | None = None) -> Path:
    """``$HACKAGENT_BRIDGE_OUTBOX_PATH``, else ``$HACKAGENT_OUTBOX_PATH``, else
    ``${XDG_STATE_HOME:-~/.local/state}/hackagent-otel/bridge-outbox.sqlite3``."""
    env = os.environ if env is None else env
    for name in (OUTBOX_ENV, "HACKAGENT_OUTBOX_PATH"):
        explicit = env.get(name, "").strip()
        if explicit:
            return Path(explicit).expanduser()
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "hackagent-otel" / "bridge-outbox.sqlite3"


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the bridge acts on. Build it with :meth:`resolve` (or directly in tests)."""

    #: Interface to listen on; loopback unless told otherwise (``0.0.0.0`` in a container).
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: When set, the bridge also serves OTLP/gRPC (``TraceService/Export``) on this port
    #: of ``host`` (0: any free port), for the Collector's ``load_balancing`` exporter,
    #: which speaks only gRPC (:mod:`._grpc`). None: OTLP/HTTP only.
    grpc_port: int | None = None
    #: When set, ``POST /v1/traces`` needs ``Authorization: Bearer <token>`` (else 401).
    token: str | None = field(default=None, repr=False)
    #: Largest request body as sent (compressed); the OTLP exporter batches stay far below.
    max_body_bytes: int = 4 * MIB
    #: Largest body after gzip decompression (the Collector's own receiver limit).
    max_decompressed_bytes: int = 20 * MIB
    #: Outbox rows waiting for the API above which requests get 429 (back-pressure).
    max_pending_records: int = 200_000
    #: Spans of ours taken from one request; the rest are rejected (partial success),
    #: so one request adds at most three records per span taken.
    max_spans_per_request: int = 10_000
    #: Requests decoded and written at once; more wait in line (their bodies read).
    max_concurrent_requests: int = 4
    #: Requests allowed to wait in that line; beyond it they get 429.
    max_waiting_requests: int = 256
    #: Request body bytes held in memory at once (being read, waiting in line, being
    #: handled); a body that would pass it gets 429. Never less than one largest body.
    max_buffered_bytes: int = 64 * MIB
    #: Open connections; a new one past it closes the one that has waited longest for
    #: its request headers, or, when every one is in the middle of a request, is
    #: answered 503 with ``Retry-After`` and closed.
    max_connections: int = 512
    #: Seconds a connection may take to send a request's headers, counted from when it
    #: opened or from the answer to its previous request; then it is closed (408).
    header_timeout: float = 10.0
    #: Seconds a request may take to send its whole body once its headers are in;
    #: then it is answered 408 and the connection closed.
    body_timeout: float = 30.0
    #: ``Retry-After`` seconds on 429 and 503 answers.
    retry_after_seconds: int = 5
    #: Seconds SIGTERM may take: in-flight requests, then the delivery drain.
    shutdown_timeout: float = 10.0
    hackagent_base_url: str | None = None
    hackagent_api_key: str | None = field(default=None, repr=False)
    outbox_path: Path = field(default_factory=default_bridge_outbox_path)
    redact_keys: tuple[str, ...] = ()
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_pending_records",
            "max_spans_per_request",
            "max_concurrent_requests",
            "max_buffered_bytes",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not a TCP port")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"grpc_port {self.grpc_port} is not a TCP port")
        if self.max_waiting_requests < 0 or self.retry_after_seconds < 0:
            raise ValueError("max_waiting_requests and retry_after_seconds must be >= 0")
        if self.shutdown_timeout <= 0:
            raise ValueError("shutdown_timeout must be positive")

    @classmethod
    def resolve(
        cls,
        *,
        host: str | None = None,
        port: int | None = None,
        grpc_port: int | None = None,
        token: str | None = None,
        max_body_bytes: int | None = None,
        max_decompressed_bytes: int | None = None,
        max_pending_records: int | None = None,
        max_spans_per_request: int | None = None,
        max_buffered_bytes: int | None = None,
        max_connections: int | None = None,
        header_timeout: float | None = None,
        body_timeout: float | None = None,
        hackagent_base_url: str | None = None,
        hackagent_api_key: str | None = None,
        outbox_path: str | os.PathLike[str] | None = None,
        log_level: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> BridgeSettings:
        """Arguments first, then env vars, then defaults; ``ValueError`` names a bad one.

        Env vars: ``HACKAGENT_BRIDGE_HOST``, ``HACKAGENT_BRIDGE_PORT``,
        ``HACKAGENT_BRIDGE_GRPC_PORT`` (empty or unset: no gRPC),
        ``HACKAGENT_BRIDGE_TOKEN``, ``HACKAGENT_BRIDGE_MAX_BODY_BYTES``,
        ``HACKAGENT_BRIDGE_MAX_DECOMPRESSED_BYTES``, ``HACKAGENT_BRIDGE_MAX_PENDING``,
        ``HACKAGENT_BRIDGE_MAX_SPANS_PER_REQUEST``,
        ``HACKAGENT_BRIDGE_MAX_BUFFERED_BYTES``, ``HACKAGENT_BRIDGE_MAX_CONNECTIONS``,
        ``HACKAGENT_BRIDGE_HEADER_TIMEOUT``, ``HACKAGENT_BRIDGE_BODY_TIMEOUT``,
        ``HACKAGENT_BRIDGE_OUTBOX_PATH``, ``HACKAGENT_BRIDGE_LOG_LEVEL``, and the app's
        ``HACKAGENT_BASE_URL``, ``HACKAGENT_API_KEY``, ``HACKAGENT_OUTBOX_PATH``,
        ``HACKAGENT_REDACT_KEYS``.
        """
        env = os.environ if env is None else env
        # OTEL_* variables describe an app's exporter; they mean nothing to the bridge.
        app = Settings.resolve(
            hackagent_base_url=hackagent_base_url,
            hackagent_api_key=hackagent_api_key,
            env={k: v for k, v in env.items() if not k.startswith("OTEL_")},
        )
        defaults = cls()
        return cls(
            host=host or env.get("HACKAGENT_BRIDGE_HOST", "").strip() or DEFAULT_HOST,
            port=_int(port, env, "HACKAGENT_BRIDGE_PORT", DEFAULT_PORT),
            grpc_port=_optional_int(grpc_port, env, "HACKAGENT_BRIDGE_GRPC_PORT"),
            token=token or env.get(TOKEN_ENV, "").strip() or None,
            max_body_bytes=_int(
                max_body_bytes, env, "HACKAGENT_BRIDGE_MAX_BODY_BYTES", defaults.max_body_bytes
            ),
            max_decompressed_bytes=_int(
                max_decompressed_bytes,
                env,
                "HACKAGENT_BRIDGE_MAX_DECOMPRESSED_BYTES",
                defaults.max_decompressed_bytes,
            ),
            max_pending_records=_int(
                max_pending_records,
                env,
                "HACKAGENT_BRIDGE_MAX_PENDING",
                defaults.max_pending_records,
            ),
            max_spans_per_request=_int(
                max_spans_per_request,
                env,
                "HACKAGENT_BRIDGE_MAX_SPANS_PER_REQUEST",
                defaults.max_spans_per_request,
            ),
            max_buffered_bytes=_int(
                max_buffered_bytes,
                env,
                "HACKAGENT_BRIDGE_MAX_BUFFERED_BYTES",
                defaults.max_buffered_bytes,
            ),
            max_connections=_int(
                max_connections, env, "HACKAGENT_BRIDGE_MAX_CONNECTIONS", defaults.max_connections
            ),
            header_timeout=_float(
                header_timeout, env, "HACKAGENT_BRIDGE_HEADER_TIMEOUT", defaults.header_timeout
            ),
            body_timeout=_float(
                body_timeout, env, "HACKAGENT_BRIDGE_BODY_TIMEOUT", defaults.body_timeout
            ),
            hackagent_base_url=app.hackagent_base_url,
            hackagent_api_key=app.hackagent_api_key,
            outbox_path=(
                Path(outbox_path).expanduser() if outbox_path else default_bridge_outbox_path(env)
            ),
            redact_keys=app.redact_keys,
            log_level=(log_level or env.get("HACKAGENT_BRIDGE_LOG_LEVEL", "") or "info").lower(),
        )


def _int(given: int | None, env: Mapping[str, str], name: str, default: int) -> int:
    if given is not None:
        return given
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None


def _optional_int(given: int | None, env: Mapping[str, str], name: str) -> int | None:
    if given is not None:
        return given
    if not env.get(name, "").strip():
        return None
    return _int(None, env, name, 0)


def _float(given: float | None, env: Mapping[str, str], name: str, default: float) -> float:
    if given is not None:
        return given
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
