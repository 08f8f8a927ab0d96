"""Fixtures that run the real Jaeger and Collector binaries and the pipeline app.

The binaries come from ``make otel-bins`` (``.bin/jaeger``, ``.bin/otelcol``). When one
is missing, a test fails under ``CI=true`` (CI must not pass by skipping the real
thing) and is skipped elsewhere, with the command that builds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otel_fixtures import missing

from ._otel_processes import (
    JAEGER_BIN,
    OTELCOL_BIN,
    REPO_ROOT,
    Collector,
    Jaeger,
    start_on_free_ports,
)

PIPELINE_APP = Path(__file__).with_name("_pipeline_app.py")

#: Seconds the pipeline app may take: it finishes in about one when the stack is up.
APP_TIMEOUT = 60.0


def require_binary(path: Path) -> Path:
    """Return ``path`` if it is an executable; otherwise fail under CI, skip elsewhere."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        missing(
            f"{path.relative_to(REPO_ROOT)} is missing: run `make otel-bins` to build the "
            "OpenTelemetry Collector and Jaeger from their Go sources"
        )
    return path


@pytest.fixture(scope="session")
def otel_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the binaries' logs go (named in every start-up failure)."""
    return tmp_path_factory.mktemp("otel-logs")


@pytest.fixture(scope="session")
def jaeger(otel_log_dir: Path) -> Iterator[Jaeger]:
    """One Jaeger for the session; tests keep apart by service name and run id."""
    require_binary(JAEGER_BIN)
    proc = start_on_free_ports(lambda: Jaeger(otel_log_dir))
    yield proc
    proc.stop()


CollectorFactory = Callable[..., Collector]


@pytest.fixture
def start_collector(otel_log_dir: Path, jaeger: Jaeger) -> Iterator[CollectorFactory]:
    """Start Collectors exporting to the session's Jaeger; all are stopped afterwards.

    Keyword arguments go to :class:`Collector` (``exporters``, ``bridge_endpoint``).
    """
    require_binary(OTELCOL_BIN)
    started: list[Collector] = []

    def start(**kwargs: Any) -> Collector:
        collector = start_on_free_ports(
            lambda: Collector(otel_log_dir, jaeger_otlp_grpc=jaeger.otlp_grpc_endpoint, **kwargs)
        )
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.stop()


def app_env(
    service_name: str, endpoint: str, protocol: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a user sets to point a pipeline at a Collector or Jaeger."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class AppRun:
    """What one run of the pipeline app printed."""

    run_id: str
    result_id: str

    @property
    def trace_id(self) -> str:
        """The run's trace id: the run UUID's 32 hex digits."""
        return self.run_id.replace("-", "")


def run_pipeline_app(env: Mapping[str, str], *args: str) -> list[AppRun]:
    """Run ``_pipeline_app.py timeline ...`` to completion; return the runs it made."""
    completed = subprocess.run(
        [sys.executable, str(PIPELINE_APP), "timeline", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=APP_TIMEOUT,
        check=False,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, (
        f"pipeline app exited with {completed.returncode}\nstdout:\n{completed.stdout}\n"
        f"stderr:\n{completed.stderr}"
    )
    runs = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return [AppRun(run_id=r["run_id"], result_id=r["result_id"]) for r in runs]
