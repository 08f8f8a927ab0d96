"""Run the tracing stack on this machine, without Docker: ``make stack``.

Starts the Collector and Jaeger built by ``make otel-bins`` (``.bin/otelcol``,
``.bin/jaeger``) with the configs in ``collector/``, runs the demo pipeline
(``hackagent-otel demo``) against the Collector, prints where to see the demo run's
timeline in Jaeger, and keeps the stack up for your own apps until Ctrl-C.

Addresses are the configs' defaults (Collector OTLP on 127.0.0.1:4317/4318, Jaeger's
query API on 127.0.0.1:16686); the same environment variables the configs read move
them, e.g. ``OTELCOL_OTLP_HTTP_PORT=5318 make stack``. When the installed
``hackagent-otel`` has a ``bridge`` command, the bridge is started too and the Collector
sends to it; otherwise the Collector sends to Jaeger only.

``make stack BRIDGES=N`` (``--bridges N``, N >= 2) starts N bridges instead, each on two
free loopback ports (OTLP/HTTP, OTLP/gRPC) with an outbox of its own
(``bridge-<i>-outbox.sqlite3`` beside the default bridge outbox), and runs the Collector
with collector/otelcol-loadbalancing.yaml, whose ``load_balancing`` exporter names them
in its static list and sends each run (one trace) to one of them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = ROOT / ".bin"
LOG_DIR = BIN_DIR / "logs"
COLLECTOR_DIR = ROOT / "collector"
HOST = "127.0.0.1"

TRACE_ID = re.compile(r"\btrace id\s+([0-9a-f]{32})\b")
RUN_ID = re.compile(r"\brun id\s+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")


class StackError(RuntimeError):
    """Something the user has to fix; printed without a traceback."""


def _port(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit():
        raise StackError(f"{name}={value!r} is not a port number")
    return int(value)


def _check_free(port: int, what: str, env_var: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise StackError(
                f"{HOST}:{port} ({what}) is in use: stop what holds it, or set {env_var}"
            ) from exc


def _wait(probe: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll ``probe`` until true; fail with the log's tail if the process exits or hangs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if probe():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise StackError(f"{what} did not become ready; {log} ends with:\n{tail}")


def _cli() -> Path:
    for candidate in (
        ROOT / ".venv" / "bin" / "hackagent-otel",
        Path(sys.executable).parent / "hackagent-otel",
    ):
        if candidate.exists():
            return candidate
    raise StackError("hackagent-otel is not installed: run `make install`")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def bridge_outbox(number: int, env: Mapping[str, str]) -> Path:
    """Bridge ``number``'s own outbox, beside the one a single bridge uses by default
    (``${XDG_STATE_HOME:-~/.local/state}/hackagent-otel/``): outboxes are never shared,
    and they outlive ``make clean``, so undelivered records wait for the next start."""
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "hackagent-otel" / f"bridge-{number}-outbox.sqlite3"


@dataclass(frozen=True)
class BridgeAddress:
    """Where one of the N bridges listens."""

    number: int
    http_port: int
    grpc_port: int

    @property
    def grpc_endpoint(self) -> str:
        return f"{HOST}:{self.grpc_port}"


def start_bridges(stack: Stack, cli: Path, env: dict[str, str], count: int) -> list[BridgeAddress]:
    """Start ``count`` bridges on free ports (OTLP/HTTP and OTLP/gRPC), each with its
    own outbox; return once every one is ready."""
    addresses = []
    for number in range(1, count + 1):
        address = BridgeAddress(number, _free_port(), _free_port())
        outbox = bridge_outbox(number, env)
        outbox.parent.mkdir(parents=True, exist_ok=True)
        proc, log = stack.start(
            f"bridge-{number}",
            [
                str(cli),
                "bridge",
                "--port",
                str(address.http_port),
                "--grpc-port",
                str(address.grpc_port),
                "--outbox",
                str(outbox),
            ],
            env,
        )
        ready = f"http://{HOST}:{address.http_port}/readyz"

        def is_ready(url: str = ready) -> bool:
            return httpx.get(url, timeout=2).status_code == 200

        _wait(is_ready, proc, f"bridge {number}", log)
        addresses.append(address)
    return addresses


def loadbalancing_env(bridges: Sequence[BridgeAddress]) -> dict[str, str]:
    """The variables collector/otelcol-loadbalancing.yaml reads to name ``bridges``."""
    endpoints = ", ".join(bridge.grpc_endpoint for bridge in bridges)
    return {
        "HACKAGENT_BRIDGE_GRPC_ENDPOINTS": f"[{endpoints}]",
        "OTELCOL_TRACES_EXPORTERS": os.environ.get(
            "OTELCOL_TRACES_EXPORTERS", "[otlp_grpc/jaeger, load_balancing/bridges]"
        ),
    }


def _has_bridge_command(cli: Path) -> bool:
    result = subprocess.run(
        [str(cli), "bridge", "--help"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


class Stack:
    """The processes ``make stack`` runs, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start one process with its output in .bin/logs/<name>.log."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / f"{name}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append((name, proc, log))
        print(f"stack: started {name} (pid {proc.pid}), log {log_path.relative_to(ROOT)}")
        return proc, log_path

    def dead(self) -> list[str]:
        """Names of processes that exited on their own."""
        return [name for name, proc, _ in self.procs if proc.poll() is not None]

    def stop(self) -> None:
        """SIGTERM each process (newest first) so queues drain; SIGKILL if one hangs."""
        for name, proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
            print(f"stack: stopped {name} (exit code {proc.returncode})")
        self.procs.clear()


def run(bridges: int = 1) -> int:
    """Start the stack (with ``bridges`` bridges), run the demo, print its Jaeger URL,
    wait for Ctrl-C."""
    if bridges < 1:
        raise StackError(f"BRIDGES={bridges}: at least one bridge")
    otelcol, jaeger = BIN_DIR / "otelcol", BIN_DIR / "jaeger"
    for binary in (otelcol, jaeger):
        if not os.access(binary, os.X_OK):
            raise StackError(f"{binary.relative_to(ROOT)} is missing: run `make otel-bins`")
    cli = _cli()

    query_port = _port("JAEGER_QUERY_HTTP_PORT", 16686)
    health_port = _port("JAEGER_HEALTH_PORT", 13133)
    jaeger_grpc = _port("JAEGER_OTLP_GRPC_PORT", 14317)
    grpc_port = _port("OTELCOL_OTLP_GRPC_PORT", 4317)
    http_port = _port("OTELCOL_OTLP_HTTP_PORT", 4318)
    checks = [
        (query_port, "Jaeger UI and query API", "JAEGER_QUERY_HTTP_PORT"),
        (_port("JAEGER_QUERY_GRPC_PORT", 16685), "Jaeger gRPC query API", "JAEGER_QUERY_GRPC_PORT"),
        (health_port, "Jaeger health check", "JAEGER_HEALTH_PORT"),
        (jaeger_grpc, "Jaeger OTLP/gRPC", "JAEGER_OTLP_GRPC_PORT"),
        (_port("JAEGER_OTLP_HTTP_PORT", 14318), "Jaeger OTLP/HTTP", "JAEGER_OTLP_HTTP_PORT"),
        (_port("JAEGER_METRICS_PORT", 8889), "Jaeger metrics", "JAEGER_METRICS_PORT"),
        (grpc_port, "Collector OTLP/gRPC", "OTELCOL_OTLP_GRPC_PORT"),
        (http_port, "Collector OTLP/HTTP", "OTELCOL_OTLP_HTTP_PORT"),
        (_port("OTELCOL_METRICS_PORT", 8888), "Collector metrics", "OTELCOL_METRICS_PORT"),
    ]
    for port, what, env_var in checks:
        _check_free(port, what, env_var)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with_bridge = _has_bridge_command(cli)
    if bridges > 1 and not with_bridge:
        raise StackError("this hackagent-otel has no bridge command: BRIDGES needs one")
    exporters = "[otlp_grpc/jaeger, otlp_http/bridge]" if with_bridge else "[otlp_grpc/jaeger]"
    stack = Stack()
    try:
        proc, log = stack.start(
            "jaeger", [str(jaeger), f"--config={COLLECTOR_DIR / 'jaeger-config.yaml'}"], base_env
        )
        health = f"http://{HOST}:{health_port}/status"
        _wait(lambda: httpx.get(health, timeout=2).status_code == 200, proc, "Jaeger", log)

        collector_env = base_env | {
            "JAEGER_OTLP_GRPC_ENDPOINT": f"{HOST}:{jaeger_grpc}",
            "OTELCOL_TRACES_EXPORTERS": os.environ.get("OTELCOL_TRACES_EXPORTERS", exporters),
        }
        config = COLLECTOR_DIR / "otelcol-config.yaml"
        addresses: list[BridgeAddress] = []
        if bridges > 1:
            addresses = start_bridges(stack, cli, base_env, bridges)
            collector_env |= loadbalancing_env(addresses)
            config = COLLECTOR_DIR / "otelcol-loadbalancing.yaml"
        elif with_bridge:
            stack.start("bridge", [str(cli), "bridge"], base_env)
        else:
            print("stack: this hackagent-otel has no bridge command yet; Collector -> Jaeger only")

        proc, log = stack.start("otelcol", [str(otelcol), f"--config={config}"], collector_env)
        traces_url = f"http://{HOST}:{http_port}/v1/traces"
        _wait(
            lambda: (
                httpx.post(
                    traces_url,
                    content=b"",
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=2,
                ).status_code
                == 200
            ),
            proc,
            "the Collector",
            log,
        )

        trace_id = run_demo(cli, base_env, http_port)
        jaeger_url = f"http://{HOST}:{query_port}"
        _wait_for_trace(jaeger_url, trace_id)
        _print_where(jaeger_url, trace_id, http_port, grpc_port, addresses)
        print("Press Ctrl-C to stop.")
        return _wait_for_interrupt(stack)
    finally:
        stack.stop()


def _print_where(
    jaeger_url: str,
    trace_id: str,
    http_port: int,
    grpc_port: int,
    addresses: Sequence[BridgeAddress],
) -> None:
    """Where the demo run is, and where to send spans (and the bridges, if several)."""
    print()
    print(f"Demo run in Jaeger:   {jaeger_url}/trace/{trace_id}")
    print(f"  as JSON:            {jaeger_url}/api/traces/{trace_id}")
    print("  (a Jaeger built from the module proxy serves the query API, and a placeholder")
    print("   page instead of the UI; `docker compose up` runs the image with the UI)")
    print(f"Send your own spans:  OTEL_EXPORTER_OTLP_ENDPOINT=http://{HOST}:{http_port}")
    print(f"  or over gRPC:       http://{HOST}:{grpc_port} with OTEL_EXPORTER_OTLP_PROTOCOL=grpc")
    for address in addresses:
        print(
            f"Bridge {address.number}:            OTLP/HTTP {HOST}:{address.http_port}, "
            f"OTLP/gRPC {address.grpc_endpoint}, "
            f"metrics http://{HOST}:{address.http_port}/metrics"
        )
    if addresses:
        print("  (the Collector sends each run, one trace, to one of them by its trace id)")


def run_demo(cli: Path, base_env: dict[str, str], http_port: int) -> str:
    """Run ``hackagent-otel demo`` against the Collector; return the run's trace id."""
    env = base_env | {
        "OTEL_SERVICE_NAME": "hackagent-demo",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{http_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    result = subprocess.run(
        [str(cli), "demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise StackError(f"the demo exited with code {result.returncode}")
    if match := TRACE_ID.search(result.stdout):
        return match.group(1)
    if match := RUN_ID.search(result.stdout):
        return match.group(1).replace("-", "")
    raise StackError("the demo printed no run id")


def _wait_for_trace(jaeger_url: str, trace_id: str) -> None:
    """Wait until Jaeger has the trace, so the printed link works when it is printed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{jaeger_url}/api/traces/{trace_id}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"Jaeger has no trace {trace_id} after 30 s; see .bin/logs/")


def _wait_for_interrupt(stack: Stack) -> int:
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            if dead := stack.dead():
                print(f"stack: {', '.join(dead)} exited; see .bin/logs/", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a :class:`StackError` is printed as one message and exits 1."""
    parser = argparse.ArgumentParser(description="Run the tracing stack on this machine.")
    parser.add_argument(
        "--bridges",
        type=int,
        default=1,
        help="bridges behind the Collector (>= 2: the load_balancing config; default 1)",
    )
    args = parser.parse_args(argv)
    try:
        return run(args.bridges)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
