"""``hackagent-otel bridge`` / ``bridge.run``: start-up failures, SIGTERM, the CLI, and
the server under hostile clients (slow headers and bodies, half-open connections, too
many of them, a low descriptor limit), over raw loopback sockets."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_support import (
    ServedBridge,
    make_pipeline,
    new_ids,
    otlp_protobuf,
    scenario_spans,
    serve,
    wait_for,
)
from hackagent_otel._cli import main
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel.bridge import BridgeSettings, run
from hackagent_otel.bridge._app import DRAIN_SECONDS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bridge_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}


def test_run_returns_1_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code = run(BridgeSettings(port=port, outbox_path=tmp_path / "o.sqlite3"))

    assert code == 1


def test_run_returns_1_when_the_outbox_cannot_be_opened(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    assert run(BridgeSettings(port=free_port(), outbox_path=not_a_dir / "o.sqlite3")) == 1


def test_the_cli_names_a_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HACKAGENT_BRIDGE_PORT", "http")

    assert main(["bridge"]) == 2
    assert "HACKAGENT_BRIDGE_PORT='http' is not an integer" in capsys.readouterr().err


def test_sigterm_answers_what_is_in_flight_then_exits_0_with_records_in_the_outbox(
    tmp_path: Path,
) -> None:
    port = free_port()
    outbox = tmp_path / "bridge.sqlite3"
    argv = [sys.executable, "-m", "hackagent_otel", "bridge", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--outbox", str(outbox), "--log-level", "warning"],
        env=bridge_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "the bridge exited before it was ready"
            assert time.monotonic() < deadline, "the bridge was not ready within 20 s"
            time.sleep(0.05)
        body = otlp_protobuf(scenario_spans(*new_ids()))
        response = httpx.post(
            f"{base}/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
        )
        assert response.status_code == 200

        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0, output
    with Outbox(outbox) as box:  # no API configured: the records wait for `push`
        assert box.counts().pending == 8


def test_the_cli_passes_the_limits_for_hostile_clients_to_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hackagent_otel.bridge

    seen: list[BridgeSettings] = []

    def fake_run(settings: BridgeSettings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(hackagent_otel.bridge, "run", fake_run)
    argv = ["bridge", "--max-connections", "9", "--max-buffered-bytes", "8192"]
    argv += ["--header-timeout", "1.5", "--body-timeout", "4", "--max-spans-per-request", "3"]

    assert main(argv) == 0
    (settings,) = seen
    assert (settings.max_connections, settings.max_buffered_bytes) == (9, 8192)
    assert (settings.header_timeout, settings.body_timeout) == (1.5, 4.0)
    assert settings.max_spans_per_request == 3


# -- hostile clients: slow, half-open and too many connections --------------------------

PROTOBUF_HEADERS = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def serve_bridge(tmp_path: Path) -> Iterator[Callable[..., ServedBridge]]:
    """Serve a bridge (outbox only) as ``hackagent-otel bridge`` configures uvicorn;
    keyword arguments go to BridgeSettings. Stopped at teardown."""
    stack = contextlib.ExitStack()
    started = iter(range(1_000))

    def start(**overrides: Any) -> ServedBridge:
        path = tmp_path / f"bridge-{next(started)}.sqlite3"
        pipeline = make_pipeline(path, None)
        return stack.enter_context(serve(BridgeSettings(outbox_path=path, **overrides), pipeline))

    with stack:
        yield start


def request_head(port: int, length: int, **headers: str) -> bytes:
    """The start of an export: request line and headers, no body yet."""
    lines = [
        "POST /v1/traces HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/x-protobuf",
        f"Content-Length: {length}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed it
    (seconds from now; ``inf`` when it was still open after ``timeout``)."""
    started = time.monotonic()
    received = b""
    sock.settimeout(0.05)
    while time.monotonic() - started < timeout:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, math.inf


@contextlib.contextmanager
def trickling(
    port: int, count: int, length: int = 100_000, **headers: str
) -> Iterator[list[socket.socket]]:
    """``count`` connections that send an export's headers and then its body one byte
    every 0.1 s, until the block ends (a slowloris on the body)."""
    socks = [connect(port, request_head(port, length, **headers)) for _ in range(count)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.1):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"\x00")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(5)
        for sock in socks:
            sock.close()


@pytest.fixture(scope="module")
def export_body() -> bytes:
    return otlp_protobuf(scenario_spans(*new_ids()))


def test_clients_trickling_bodies_hold_no_worker_slot_and_a_normal_export_is_answered_at_once(
    serve_bridge: Callable[..., ServedBridge], export_body: bytes
) -> None:
    bridge = serve_bridge(max_concurrent_requests=4, body_timeout=30)

    with trickling(bridge.port, 8):  # twice as many as there are worker slots
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.post(
            bridge.traces_url, content=export_body, headers=PROTOBUF_HEADERS, timeout=5
        )
        took = time.monotonic() - started

    print(f"\nnormal export beside 8 trickling bodies: {response.status_code} in {took:.3f} s")
    assert response.status_code == 200
    assert took < 2.0


def test_a_body_trickled_past_the_body_timeout_is_408_and_the_connection_closed(
    serve_bridge: Callable[..., ServedBridge],
) -> None:
    bridge = serve_bridge(body_timeout=1.0)

    with trickling(bridge.port, 1) as (sock,):
        answer, closed_after = read_until_closed(sock, timeout=5)

    print(f"\ntrickled body: closed after {closed_after:.2f} s, body_timeout 1 s")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    assert 0.9 < closed_after < 2.5
    assert bridge.app.metrics.value("hackagent_bridge_requests_total", code="408") == 1


@pytest.mark.parametrize(
    "first", [b"", b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "half-headers"]
)
def test_a_connection_that_sends_no_complete_headers_is_closed_after_the_header_timeout(
    serve_bridge: Callable[..., ServedBridge], first: bytes
) -> None:
    bridge = serve_bridge(header_timeout=0.5)
    sock = connect(bridge.port, first)

    with sock:
        answer, closed_after = read_until_closed(sock, timeout=5)

    print(f"\nno complete headers ({first!r}): closed after {closed_after:.2f} s")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < closed_after < 2.0


def test_the_header_timeout_counts_again_from_the_answer_to_the_previous_request(
    serve_bridge: Callable[..., ServedBridge], export_body: bytes
) -> None:
    bridge = serve_bridge(header_timeout=0.5)
    with connect(bridge.port) as sock:
        for _ in range(3):  # a keep-alive client, well within the timeout each time
            time.sleep(0.3)
            sock.sendall(request_head(bridge.port, len(export_body)) + export_body)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\n")  # then one that stops half way
        answer, closed_after = read_until_closed(sock, timeout=5)

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert closed_after < 2.0


def test_past_max_connections_a_new_one_closes_the_one_waiting_longest_for_headers(
    serve_bridge: Callable[..., ServedBridge], export_body: bytes
) -> None:
    bridge = serve_bridge(max_connections=10, header_timeout=60)
    connections = bridge.server.server_state.connections
    half_open = []
    for _ in range(10):
        half_open.append(connect(bridge.port, b"POST /v1/traces HTTP/1.1\r\n"))
        wait_for(lambda: len(connections) == len(half_open), "the server to see the connection")

    response = httpx.post(
        bridge.traces_url, content=export_body, headers=PROTOBUF_HEADERS, timeout=5
    )

    assert response.status_code == 200
    oldest_answer, oldest_closed = read_until_closed(half_open[0], timeout=2)
    assert oldest_answer.startswith(b"HTTP/1.1 408 ")
    assert oldest_closed < 2
    _, newest_closed = read_until_closed(half_open[-1], timeout=0.2)
    assert newest_closed == math.inf  # only the oldest made room
    assert len(connections) <= 10
    for sock in half_open:
        sock.close()


def test_past_max_connections_with_every_one_mid_request_a_new_one_is_503_with_retry_after(
    serve_bridge: Callable[..., ServedBridge],
) -> None:
    bridge = serve_bridge(max_connections=4, retry_after_seconds=7)
    connections = bridge.server.server_state.connections

    with trickling(bridge.port, 4):
        wait_for(lambda: len(connections) == 4, "four connections")
        with connect(bridge.port) as sock:
            answer, closed_after = read_until_closed(sock, timeout=5)

    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 7" in answer.lower()
    assert closed_after < 1.0


def test_bodies_held_past_max_buffered_bytes_are_429_and_their_bytes_are_returned(
    serve_bridge: Callable[..., ServedBridge], export_body: bytes
) -> None:
    limit = 64 * 1024
    bridge = serve_bridge(max_buffered_bytes=limit, max_body_bytes=limit)
    held = limit - len(export_body) // 2
    sock = connect(bridge.port, request_head(bridge.port, limit) + b"\x00" * held)
    wait_for(lambda: bridge.app._buffered == held, "the first body to be held")

    refused = httpx.post(bridge.traces_url, content=export_body, headers=PROTOBUF_HEADERS)
    sock.close()
    wait_for(lambda: bridge.app._buffered == 0, "the held bytes to be returned")
    accepted = httpx.post(bridge.traces_url, content=export_body, headers=PROTOBUF_HEADERS)

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert accepted.status_code == 200


def test_a_refused_request_trickling_its_body_is_answered_and_closed_after_the_drain_time(
    serve_bridge: Callable[..., ServedBridge],
) -> None:
    bridge = serve_bridge(token="s3cr3t")

    with trickling(bridge.port, 1) as (sock,):  # no token: 401, but the body never ends
        answer, closed_after = read_until_closed(sock, timeout=10)

    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"connection: close" in answer.lower()
    assert closed_after < DRAIN_SECONDS + 1.5


def test_max_connections_is_lowered_to_leave_room_under_the_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import resource

    from hackagent_otel.bridge._server import FD_RESERVE, connection_limit

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))

    assert connection_limit(512) == 512
    assert connection_limit(1000) == 1024 - FD_RESERVE
    assert "lowered to 576" in caplog.text


def test_1100_half_open_connections_under_ulimit_1024_exhaust_no_descriptor_nor_flood_the_log(
    tmp_path: Path, export_body: bytes
) -> None:
    port = free_port()
    log_path = tmp_path / "bridge.log"
    # The bridge under `ulimit -n 1024`, set in its own interpreter before it starts.
    limited = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
        "sys.argv = ['hackagent-otel', *sys.argv[1:]]; "
        "runpy.run_module('hackagent_otel', run_name='__main__')"
    )
    argv = [sys.executable, "-c", limited, "bridge", "--port", str(port)]
    argv += ["--outbox", str(tmp_path / "bridge.sqlite3"), "--header-timeout", "2"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env={**bridge_env(), "HACKAGENT_BRIDGE_TOKEN": "s3cr3t"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    half_open: list[socket.socket] = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(base) or proc.poll() is not None, "the bridge", timeout=20)
        assert proc.poll() is None, log_path.read_text()
        descriptors = [len(os.listdir(f"/proc/{proc.pid}/fd"))]
        for _ in range(1100):
            half_open.append(connect(port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"))
            if len(half_open) % 100 == 0:
                descriptors.append(len(os.listdir(f"/proc/{proc.pid}/fd")))
        headers = {**PROTOBUF_HEADERS, "Authorization": "Bearer s3cr3t"}
        started = time.monotonic()
        response = httpx.post(f"{base}/v1/traces", content=export_body, headers=headers, timeout=10)
        took = time.monotonic() - started
        time.sleep(3)  # past the header timeout: the rest are closed
        with httpx.Client(timeout=10) as http:
            after = [
                http.post(f"{base}/v1/traces", content=export_body, headers=headers)
                for _ in range(3)
            ]
        log_size = log_path.stat().st_size
        log_text = log_path.read_text()
        alive = proc.poll() is None
    finally:
        for sock in half_open:
            sock.close()
        proc.terminate()
        proc.wait(20)

    print(
        f"\n1,100 half-open: export {response.status_code} in {took:.3f} s, "
        f"descriptors at most {max(descriptors)} of 1024, log {log_size} bytes"
    )
    assert response.status_code == 200
    assert took < 5.0
    assert [a.status_code for a in after] == [200, 200, 200]
    assert alive
    assert max(descriptors) < 1024 - 64
    assert "Too many open files" not in log_text
    assert log_size < 16 * 1024, log_text[-4000:]


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
