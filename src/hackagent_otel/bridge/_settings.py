"""BridgeSettings: what ``hackagent-otel bridge`` runs with, from its rows of the table.

Each field is a row of the settings table (:mod:`hackagent_otel._settings_table`): an
argument (the command line's option, which ``hackagent-otel bridge`` builds from the
rows), else its ``HACKAGENT_BRIDGE_*`` environment variable, else its default. Any
invalid value is an error naming it, and the bridge exits 2 before it listens. The
HackAgent API, its key and the extra secret key words are the app's own rows
(:mod:`hackagent_otel._config`), so one set of ``HACKAGENT_*`` variables means the same
thing on both sides; ``OTEL_*`` variables describe an app's exporter and are not read.

The outbox is the bridge's own file (``bridge-outbox.sqlite3`` beside an app's default
outbox) unless told otherwise: rows an app spooled for its API and rows the bridge
accepted for its API never mix, and a bridge never delivers an app's rows.
Reads the environment it is given; touches nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hackagent_otel._config import API_KEY, BASE_URL, REDACT_KEYS, with_default_api
from hackagent_otel._settings_table import (
    BYTES,
    COUNT,
    COUNT_OR_ZERO,
    MIB,
    PATH,
    PORT,
    SECONDS,
    TEXT,
    Choice,
    Setting,
    check,
    path_of,
    resolve,
    setting,
    state_file,
)

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "OUTBOX_PATH",
    "BridgeSettings",
    "default_bridge_outbox_path",
]

DEFAULT_HOST = "127.0.0.1"
#: The port collector/otelcol-config.yaml's ``otlp_http/bridge`` exporter sends to.
DEFAULT_PORT = 4328
#: The OTLP/gRPC port the configs in collector/ and docker-compose.yml give a bridge when
#: they turn gRPC on (``--grpc-port``); off unless asked for.
DEFAULT_GRPC_PORT = 4329


def _bridge(kind: Any, default: Any, help: str, name: str, **more: Any) -> Any:
    """A field of the bridge's own: ``$HACKAGENT_BRIDGE_<NAME>`` and ``--<name>``, one
    name in three spellings."""
    env = f"HACKAGENT_BRIDGE_{name.upper()}"
    flag = "--" + name.replace("_", "-")
    return setting(Setting(kind, default, help, env=(env,), flag=flag, **more))


OUTBOX_PATH: Setting[Path] = Setting(
    PATH,
    state_file("bridge-outbox.sqlite3"),
    "outbox file",
    env=("HACKAGENT_BRIDGE_OUTBOX_PATH", "HACKAGENT_OUTBOX_PATH"),
    flag="--outbox",
    shown="`bridge-outbox.sqlite3` beside the default outbox",
)


def default_bridge_outbox_path(env: Mapping[str, str] | None = None) -> Path:
    """``$HACKAGENT_BRIDGE_OUTBOX_PATH``, else ``$HACKAGENT_OUTBOX_PATH``, else
    ``${XDG_STATE_HOME:-~/.local/state}/hackagent-otel/bridge-outbox.sqlite3``."""
    return path_of(OUTBOX_PATH, env)


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the bridge acts on. Build it with :meth:`resolve` (or directly in tests)."""

    #: Interface to listen on; loopback unless told otherwise (``0.0.0.0`` in a container).
    host: str = _bridge(TEXT, DEFAULT_HOST, "interface", "host", note="(the image: `0.0.0.0`)")
    port: int = _bridge(
        PORT, DEFAULT_PORT, "port", "port", note="(what collector/otelcol-config.yaml sends to)"
    )
    #: When set, the bridge also serves OTLP/gRPC (``TraceService/Export``) on this port
    #: of ``host`` (0: any free port), for the Collector's ``load_balancing`` exporter,
    #: which speaks only gRPC (:mod:`._grpc`). None: OTLP/HTTP only.
    grpc_port: int | None = _bridge(
        PORT,
        None,
        "OTLP/gRPC port",
        "grpc_port",
        shown="off",
        note="(4329 in collector/; the load_balancing exporter needs it)",
    )
    #: When set, ``POST /v1/traces`` needs ``Authorization: Bearer <token>`` (else 401).
    token: str | None = setting(
        Setting(
            TEXT,
            None,
            "bearer token",
            env=("HACKAGENT_BRIDGE_TOKEN",),
            shown="none (no auth); compared in constant time",
            secret=True,
        )
    )
    hackagent_base_url: str | None = setting(BASE_URL)
    hackagent_api_key: str | None = setting(API_KEY)
    outbox_path: Path = setting(OUTBOX_PATH)
    redact_keys: tuple[str, ...] = setting(REDACT_KEYS)
    #: Largest request body as sent (compressed); the OTLP exporter batches stay far below.
    max_body_bytes: int = _bridge(BYTES, 4 * MIB, "body limit, as sent", "max_body_bytes")
    #: Largest body after gzip decompression (the Collector's own receiver limit).
    max_decompressed_bytes: int = _bridge(
        BYTES,
        20 * MIB,
        "body limit, decompressed",
        "max_decompressed_bytes",
        note="(the Collector's)",
    )
    #: Outbox rows waiting for the API above which requests get 429 (back-pressure).
    max_pending_records: int = _bridge(
        COUNT,
        200_000,
        "undelivered records before 429",
        "max_pending_records",
        old_names=("HACKAGENT_BRIDGE_MAX_PENDING", "--max-pending"),
    )
    #: Spans of ours taken from one request; the rest are rejected (partial success),
    #: so one request adds at most three records per span taken.
    max_spans_per_request: int = _bridge(
        COUNT,
        10_000,
        "spans of ours taken from one request",
        "max_spans_per_request",
        note="(the rest: partial success)",
    )
    #: Requests decoded and written at once; more wait in line (their bodies read).
    max_concurrent_requests: int = _bridge(
        COUNT, 4, "requests decoded and written at once", "max_concurrent_requests"
    )
    #: Requests allowed to wait in that line; beyond it they get 429.
    max_waiting_requests: int = _bridge(
        COUNT_OR_ZERO, 256, "requests waiting for those, before 429", "max_waiting_requests"
    )
    #: Request body bytes held in memory at once (being read, waiting in line, being
    #: handled); a body that would pass it gets 429. Never less than one largest body.
    max_buffered_bytes: int = _bridge(
        BYTES, 64 * MIB, "request bodies held in memory", "max_buffered_bytes"
    )
    #: Open connections; a new one past it closes the one that has waited longest for
    #: its request headers, or, when every one is in the middle of a request, is
    #: answered 503 with ``Retry-After`` and closed.
    max_connections: int = _bridge(
        COUNT,
        512,
        "open connections",
        "max_connections",
        note="(lowered to fit `ulimit -n`)",
    )
    #: Seconds a connection may take to send a request's headers, counted from when it
    #: opened or from the answer to its previous request; then it is closed (408).
    header_timeout: float = _bridge(SECONDS, 10.0, "time to send request headers", "header_timeout")
    #: Seconds a request may take to send its whole body once its headers are in;
    #: then it is answered 408 and the connection closed.
    body_timeout: float = _bridge(SECONDS, 30.0, "time to send a body", "body_timeout")
    #: ``Retry-After`` seconds on 429 and 503 answers.
    retry_after_seconds: int = _bridge(
        COUNT_OR_ZERO, 5, "`Retry-After` on 429 and 503 (seconds)", "retry_after_seconds"
    )
    #: Seconds SIGTERM may take: in-flight requests, then the delivery drain.
    shutdown_timeout: float = _bridge(SECONDS, 10.0, "time SIGTERM may take", "shutdown_timeout")
    log_level: str = _bridge(
        Choice("debug", "info", "warning", "error"), "info", "log level", "log_level"
    )

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def resolve(cls, *, env: Mapping[str, str] | None = None, **given: Any) -> BridgeSettings:
        """Arguments (named as the fields; ``None``: not given) first, then env vars,
        then defaults; ``ValueError`` names a bad one."""
        values = resolve(cls, given, env)
        with_default_api(values)
        return cls(**{name: value for name, (value, _) in values.items()})
