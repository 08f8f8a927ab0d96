"""Run the real Jaeger and OpenTelemetry Collector binaries, and bridges, on free loopback ports.

The integration tests (and ``bench``) start ``.bin/jaeger`` and ``.bin/otelcol`` with the
configs in ``collector/``; every port those configs open comes from an environment
variable, so each process gets its own free ports on 127.0.0.1 and tests never collide
with a Jaeger or Collector already running on the machine. :class:`Bridge` runs
``hackagent-otel bridge`` (OTLP/HTTP and OTLP/gRPC) as its own process, restartable on
the same ports and outbox, for the Collector's ``load_balancing`` exporter
(collector/otelcol-loadbalancing.yaml). This module also holds a small client for
Jaeger's HTTP query API, which is what a person's browser (and the tests) read a run's
timeline from.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = REPO_ROOT / ".bin"
COLLECTOR_DIR = REPO_ROOT / "collector"
JAEGER_BIN = BIN_DIR / "jaeger"
OTELCOL_BIN = BIN_DIR / "otelcol"
JAEGER_CONFIG = COLLECTOR_DIR / "jaeger-config.yaml"
OTELCOL_CONFIG = COLLECTOR_DIR / "otelcol-config.yaml"
LOADBALANCING_CONFIG = COLLECTOR_DIR / "otelcol-loadbalancing.yaml"

LOOPBACK = "127.0.0.1"

T = TypeVar("T")
P = TypeVar("P", "Jaeger", "Collector", "Bridge")


class ProcessStartError(RuntimeError):
    """A binary exited or never became ready; the message carries its log's tail."""


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets are held open until every port is chosen, so the ports differ from
    each other; the kernel does not hand a just-released ephemeral port out again
    straight away, which keeps the window before the binary binds them small.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str,
) -> T:
    """Poll ``probe`` until it returns something other than None, or fail after ``timeout``.

    ``probe`` may raise ``httpx.HTTPError`` or ``OSError`` while the thing it polls is
    not up yet; those count as "not yet". The last such error is named in the failure.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        else:
            if result is not None:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class ManagedProcess:
    """A long-running binary with its output in a log file, stopped gracefully."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the process; its stdout and stderr are appended to ``log_path``."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """Everything the process wrote so far ("" before it wrote anything)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the process wrote, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:]) or "<no log>"

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll ``probe`` until it is true; fail early (with the log) if the process exits."""

        def check() -> bool | None:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ProcessStartError(
                    f"{self.name} exited with code {code} before it was ready; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            return True if probe() else None

        try:
            wait_until(check, timeout=timeout, what=f"{self.name} to be ready")
        except TimeoutError as exc:
            raise ProcessStartError(f"{exc}; its log ends with:\n{self.log_tail()}") from exc

    def stop(self, timeout: float = 15.0) -> int | None:
        """Send SIGTERM (a graceful shutdown that drains queues), SIGKILL if it hangs."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.process = None
        return proc.returncode


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


@dataclass
class JaegerPorts:
    """Every port collector/jaeger-config.yaml opens."""

    otlp_grpc: int
    otlp_http: int
    query_http: int
    query_grpc: int
    health: int
    metrics: int

    @classmethod
    def allocate(cls) -> JaegerPorts:
        """Pick six free loopback ports."""
        return cls(*free_ports(6))

    def env(self) -> dict[str, str]:
        """The environment variables the config reads its addresses from."""
        return {
            "JAEGER_LISTEN_HOST": LOOPBACK,
            "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc),
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_http),
            "JAEGER_QUERY_HTTP_PORT": str(self.query_http),
            "JAEGER_QUERY_GRPC_PORT": str(self.query_grpc),
            "JAEGER_HEALTH_PORT": str(self.health),
            "JAEGER_METRICS_PORT": str(self.metrics),
        }


class Jaeger:
    """``.bin/jaeger`` with collector/jaeger-config.yaml on free loopback ports."""

    def __init__(self, log_dir: Path, binary: Path = JAEGER_BIN) -> None:
        self.ports = JaegerPorts.allocate()
        self.process = ManagedProcess(
            name="jaeger",
            argv=[str(binary), f"--config={JAEGER_CONFIG}"],
            env=_base_env(self.ports.env()),
            log_path=log_dir / f"jaeger-{self.ports.query_http}.log",
        )
        self.api = JaegerQuery(f"http://{LOOPBACK}:{self.ports.query_http}")

    @property
    def otlp_grpc_endpoint(self) -> str:
        """``host:port`` of Jaeger's OTLP/gRPC receiver (as a Collector exporter wants it)."""
        return f"{LOOPBACK}:{self.ports.otlp_grpc}"

    @property
    def otlp_http_url(self) -> str:
        """Base URL of Jaeger's OTLP/HTTP receiver (as OTEL_EXPORTER_OTLP_ENDPOINT)."""
        return f"http://{LOOPBACK}:{self.ports.otlp_http}"

    @property
    def otlp_grpc_url(self) -> str:
        """URL of Jaeger's OTLP/gRPC receiver (as OTEL_EXPORTER_OTLP_ENDPOINT with grpc)."""
        return f"http://{LOOPBACK}:{self.ports.otlp_grpc}"

    def start(self, timeout: float = 30.0) -> None:
        """Start Jaeger and wait until its health check and query API answer."""
        self.process.start()
        health = f"http://{LOOPBACK}:{self.ports.health}/status"

        def ready() -> bool:
            with httpx.Client(timeout=2.0) as client:
                if client.get(health).status_code != 200:
                    return False
                return client.get(f"{self.api.base_url}/api/services").status_code == 200

        self.process.wait_ready(ready, timeout)

    def stop(self) -> int | None:
        """Stop Jaeger; returns its exit code."""
        self.api.close()
        return self.process.stop()


@dataclass
class CollectorPorts:
    """Every port collector/otelcol-config.yaml opens."""

    otlp_grpc: int
    otlp_http: int
    metrics: int

    @classmethod
    def allocate(cls) -> CollectorPorts:
        """Pick three free loopback ports."""
        return cls(*free_ports(3))


class Collector:
    """``.bin/otelcol`` with collector/otelcol-config.yaml on free loopback ports.

    ``exporters`` picks the traces pipeline's exporters (``OTELCOL_TRACES_EXPORTERS``);
    by default only Jaeger, since most tests run without the HackAgent bridge. With
    ``bridge_grpc_endpoints`` it runs collector/otelcol-loadbalancing.yaml instead, whose
    ``load_balancing/bridges`` exporter routes by trace id to those bridges
    (``HACKAGENT_BRIDGE_GRPC_ENDPOINTS``). ``extra_env`` sets more of the configs'
    variables.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        jaeger_otlp_grpc: str | None = None,
        bridge_endpoint: str | None = None,
        bridge_grpc_endpoints: Sequence[str] | None = None,
        exporters: tuple[str, ...] = ("otlp_grpc/jaeger",),
        extra_env: Mapping[str, str] | None = None,
        binary: Path = OTELCOL_BIN,
    ) -> None:
        self.ports = CollectorPorts.allocate()
        env = {
            "OTELCOL_LISTEN_HOST": LOOPBACK,
            "OTELCOL_OTLP_GRPC_PORT": str(self.ports.otlp_grpc),
            "OTELCOL_OTLP_HTTP_PORT": str(self.ports.otlp_http),
            "OTELCOL_METRICS_PORT": str(self.ports.metrics),
            "OTELCOL_TRACES_EXPORTERS": "[" + ", ".join(exporters) + "]",
        }
        if jaeger_otlp_grpc is not None:
            env["JAEGER_OTLP_GRPC_ENDPOINT"] = jaeger_otlp_grpc
        if bridge_endpoint is not None:
            env["HACKAGENT_BRIDGE_ENDPOINT"] = bridge_endpoint
        config = OTELCOL_CONFIG
        if bridge_grpc_endpoints is not None:
            config = LOADBALANCING_CONFIG
            env["HACKAGENT_BRIDGE_GRPC_ENDPOINTS"] = "[" + ", ".join(bridge_grpc_endpoints) + "]"
        env.update(extra_env or {})
        self.config = config
        self.process = ManagedProcess(
            name="otelcol",
            argv=[str(binary), f"--config={config}"],
            env=_base_env(env),
            log_path=log_dir / f"otelcol-{self.ports.otlp_http}.log",
        )

    @property
    def otlp_http_url(self) -> str:
        """Base URL of the OTLP/HTTP receiver, as apps put it in OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{LOOPBACK}:{self.ports.otlp_http}"

    @property
    def otlp_grpc_url(self) -> str:
        """URL of the OTLP/gRPC receiver, for OTEL_EXPORTER_OTLP_PROTOCOL=grpc."""
        return f"http://{LOOPBACK}:{self.ports.otlp_grpc}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the Collector and wait until its OTLP/HTTP receiver takes an export.

        The Collector starts exporters and processors before receivers, so a receiver
        that answers an (empty) export means the whole pipeline is up.
        """
        self.process.start()
        url = f"{self.otlp_http_url}/v1/traces"

        def ready() -> bool:
            response = httpx.post(
                url,
                content=b"",
                headers={"Content-Type": "application/x-protobuf"},
                timeout=2.0,
            )
            return response.status_code == 200

        self.process.wait_ready(ready, timeout)

    def stop(self) -> int | None:
        """Stop the Collector gracefully (it drains its queues); returns its exit code."""
        return self.process.stop()

    def metrics(self) -> str:
        """The Collector's own Prometheus metrics, as text."""
        return httpx.get(f"http://{LOOPBACK}:{self.ports.metrics}/metrics", timeout=5).text


class Bridge:
    """``python -m hackagent_otel bridge`` serving OTLP/HTTP and OTLP/gRPC on free loopback
    ports, with its outbox at ``outbox``, delivering to ``api_url`` (None: records stay
    in the outbox).

    :meth:`stop` (SIGTERM: in-flight exports finish, the rest are refused with a
    retryable answer) and :meth:`start` again reuse the same ports and outbox, which is
    how a bridge restarts behind a Collector that names it in a static list.
    """

    def __init__(
        self,
        log_dir: Path,
        outbox: Path,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        name: str = "bridge",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.outbox = outbox
        self.http_port, self.grpc_port = free_ports(2)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
        if api_url is not None:
            env["HACKAGENT_BASE_URL"] = api_url
        if api_key is not None:
            env["HACKAGENT_API_KEY"] = api_key
        env.update(extra_env or {})
        self.process = ManagedProcess(
            name=name,
            argv=[
                sys.executable,
                "-m",
                "hackagent_otel",
                "bridge",
                "--port",
                str(self.http_port),
                "--grpc-port",
                str(self.grpc_port),
                "--outbox",
                str(outbox),
            ],
            env=env,
            log_path=log_dir / f"{name}-{self.http_port}.log",
        )

    @property
    def url(self) -> str:
        """Base URL of the OTLP/HTTP receiver (and /readyz, /metrics)."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` of the OTLP/gRPC receiver, as the load_balancing resolver lists it."""
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the bridge and wait until /readyz answers 200 (both receivers are up)."""
        self.process.start()
        self.process.wait_ready(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200, timeout
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (0 after a graceful stop)."""
        return self.process.stop(timeout)

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as ``{sample: value}`` (sample names with their labels)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                sample, _, value = line.rpartition(" ")
                samples[sample] = float(value)
        return samples


class JaegerQuery:
    """A small client for Jaeger's HTTP query API (the one its UI uses)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._client = httpx.Client(base_url=base_url, timeout=10.0)

    def close(self) -> None:
        """Close the underlying HTTP client."""
        self._client.close()

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """``GET /api/traces/{trace_id}``: the trace, or None while Jaeger has none."""
        response = self._client.get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json().get("data") or []
        return data[0] if data else None

    def raw_trace(self, trace_id: str) -> str:
        """The response body of ``GET /api/traces/{trace_id}``, exactly as Jaeger sent it."""
        return self._client.get(f"/api/traces/{trace_id}").text

    def find_traces(
        self, service: str, tags: Mapping[str, str] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """``GET /api/traces?service=...&tags=...``: the traces a search in the UI finds."""
        params: dict[str, str | int] = {"service": service, "limit": limit, "lookback": "1h"}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        response = self._client.get("/api/traces", params=params)
        response.raise_for_status()
        return list(response.json().get("data") or [])

    def raw_search(self, service: str) -> str:
        """The body of a search for every trace of ``service``, exactly as Jaeger sent it."""
        params: dict[str, str | int] = {"service": service, "limit": 1000, "lookback": "1h"}
        return self._client.get("/api/traces", params=params).text

    def services(self) -> list[str]:
        """``GET /api/services``: every service name Jaeger has spans from."""
        response = self._client.get("/api/services")
        response.raise_for_status()
        return list(response.json().get("data") or [])

    def wait_for_trace(
        self,
        trace_id: str,
        *,
        min_spans: int = 1,
        until: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Poll until the trace has at least ``min_spans`` spans (and ``until`` holds)."""

        def probe() -> dict[str, Any] | None:
            trace = self.trace(trace_id)
            if trace is None or len(trace.get("spans", [])) < min_spans:
                return None
            if until is not None and not until(trace):
                return None
            return trace

        return wait_until(probe, timeout=timeout, what=f"trace {trace_id} in Jaeger")


def start_on_free_ports(make: Callable[[], P], attempts: int = 3) -> P:
    """Make and start a process on newly chosen free ports, choosing again if one of
    them was taken in the moment between choosing it and the binary binding it."""
    for attempt in range(1, attempts + 1):
        proc = make()
        try:
            proc.start()
        except ProcessStartError as exc:
            proc.stop()
            if attempt == attempts or "address already in use" not in str(exc):
                raise
        else:
            return proc
    raise AssertionError("unreachable")  # pragma: no cover
