"""``hackagent-otel bridge`` / ``bridge.run``: start-up failures, SIGTERM, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge_support import new_ids, otlp_protobuf, scenario_spans
from hackagent_otel._cli import main
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel.bridge import BridgeSettings, run


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
