"""The local HackAgent API server, in its own process so it never shares our GIL."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

API_KEY = "bench-key"


@contextmanager
def fake_api_process(latency_ms: float = 0.0) -> Iterator[str]:
    """Start ``python -m hackagent_otel.testing``; yield its base URL; stop it after."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hackagent_otel.testing",
            "--api-key",
            API_KEY,
            "--latency-ms",
            str(latency_ms),
            "--until-stdin-closes",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError(f"the fake API did not start: {base_url!r}")
        yield base_url
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def calls(base_url: str) -> list[dict[str, Any]]:
    """Every call the fake received: method, path, status, sequence, arrival time."""
    with urllib.request.urlopen(f"{base_url}/_fake/calls", timeout=30) as response:
        found: list[dict[str, Any]] = json.load(response)
    return found
