"""The tier's virtualenv and the runs of its attack script.

The virtualenv (hackagent 0.5.0 from PyPI and this checkout, editable) is built once in
the user's cache folder by the bench's builder (:mod:`bench._venv`) and reused while
``pyproject.toml`` is unchanged. When it cannot be built, the tier fails under
``CI=true`` (CI must not pass by skipping the real hackagent); elsewhere it is skipped
when the package index is out of reach, and fails otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # bench._venv: the venv builder the bench uses

from bench import _venv  # noqa: E402

from otel_fixtures import missing  # noqa: E402

SCRIPT = Path(__file__).with_name("tier_attack.py")
API_KEY = "tier-key"
#: Seconds one run of the attack script may take (a healthy one takes about three).
SCRIPT_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def tier_python() -> Path:
    """The tier venv's interpreter (built on first use: a few minutes)."""
    try:
        return _venv.tier_python()
    except _venv.VenvError as exc:
        message = f"the hackagent tier's virtualenv could not be built: {exc}"
        if not exc.offline:
            pytest.fail(message)
        missing(f"{message} (no network here; the tier needs PyPI once)")


def free_port() -> int:
    """A loopback port nothing listens on now (for an API that is down, then up)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def script_env(outbox: Path, **extra: str) -> dict[str, str]:
    """The environment without our settings or OTLP's (the script sets up what it
    uses), its outbox in the test's own folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HACKAGENT_", "OTEL_")) and k != "PYTHONPATH"
    }
    env["HACKAGENT_OUTBOX_PATH"] = str(outbox)
    env.update(extra)
    return env


@dataclass
class AttackRun:
    """A finished run of the attack script: its last JSON line and its stderr."""

    report: dict[str, Any]
    stderr: str


def run_attack(
    python: Path,
    tracking: str,
    base_url: str,
    run_id: str,
    outbox: Path,
    *flags: str,
    env: dict[str, str] | None = None,
) -> AttackRun:
    """Run the attack script to its end; fails the test with its stderr if it fails."""
    done = subprocess.run(
        [str(python), str(SCRIPT), tracking, base_url, API_KEY, run_id, *flags],
        check=False,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        env=env or script_env(outbox),
        cwd=outbox.parent,
    )
    if done.returncode != 0:
        pytest.fail(f"the {tracking} attack exited {done.returncode}:\n{done.stderr[-4000:]}")
    return AttackRun(json.loads(done.stdout.strip().splitlines()[-1]), done.stderr)
