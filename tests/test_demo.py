"""The demo: the example pipeline's timeline in the terminal, and where its records went."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.util._once import Once
from rich.console import Console

from hackagent_otel._demo import run_demo
from hackagent_otel.testing import FakeHackAgentAPI

STEPS = (
    "Load Goals",
    "Generate Prefixes",
    "Prefix batch 1",
    "Prefix batch 2",
    "Execute Attacks",
    "Evaluate Responses",
    "Judge (primary)",
    "Judge (fallback)",
)
#: Two records per step, one ERROR_TEST_FRAMEWORK result update for the failed judge,
#: then the result status and two run status updates.
DEMO_RECORDS = 2 * len(STEPS) + 1 + 1 + 2


@pytest.fixture
def fresh_global_provider(clean_env: None) -> Iterator[None]:
    """run_demo() may make its provider global; give the global back afterwards."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    yield
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def demo_output() -> tuple[str, str]:
    out = io.StringIO()
    demo = run_demo(Console(file=out, width=200))
    return out.getvalue(), demo.result_id


@pytest.fixture
def temporary_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile`` makes its folders during the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_demo_draws_every_step_marks_the_failure_and_keeps_records_in_the_outbox(
    fresh_global_provider: None, env_outbox_path: Path, temporary_folders: Path
) -> None:
    text, _ = demo_output()

    for step in STEPS:
        assert step in text
    (judge,) = [line for line in text.splitlines() if "Judge (primary)" in line]
    assert "failed" in judge
    assert "judge model timed out" in judge
    assert "run id" in text
    assert f"HackAgent records: {DEMO_RECORDS} made, kept in the demo's own outbox" in text
    # Never in the user's outbox, where a later push would deliver them; its own is gone.
    assert not env_outbox_path.exists()
    assert list(temporary_folders.iterdir()) == []


def test_the_demo_delivers_its_records_to_the_configured_api(
    fresh_global_provider: None,
    fake_api: FakeHackAgentAPI,
    env_outbox_path: Path,
    temporary_folders: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HACKAGENT_BASE_URL", fake_api.base_url)
    monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)

    text, result_id = demo_output()

    assert f"HackAgent records: {DEMO_RECORDS} made, {DEMO_RECORDS} delivered to" in text
    assert len(fake_api.calls) == DEMO_RECORDS
    assert [t["sequence"] for t in fake_api.traces_for(result_id)] == list(range(1, 17))
    failed = fake_api.result(result_id)
    assert failed is not None
    assert failed["evaluation_status"] == "FAILED_JAILBREAK"
    assert list(env_outbox_path.parent.iterdir()) == [temporary_folders]
    assert list(temporary_folders.iterdir()) == []


def test_with_only_otlp_configured_the_demo_leaves_records_to_the_bridge(
    fresh_global_provider: None,
    fake_api: FakeHackAgentAPI,
    env_outbox_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any OTLP/HTTP endpoint will do: the spans' fate there is not under test.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", fake_api.base_url)

    text, _ = demo_output()

    assert "made downstream from the spans by the bridge" in text
    assert "spans sent over OTLP" in text
    assert not env_outbox_path.exists()
    assert [c for c in fake_api.calls if not c.path.startswith("/v1/")] == []


def test_hackagent_otel_demo_runs_as_a_command(fake_api: FakeHackAgentAPI, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HACKAGENT_", "OTEL_"))}
    env.update(
        HACKAGENT_BASE_URL=fake_api.base_url,
        HACKAGENT_API_KEY=fake_api.api_key,
        HACKAGENT_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"),
        COLUMNS="200",
    )
    done = subprocess.run(
        [sys.executable, "-m", "hackagent_otel", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Judge (fallback)" in done.stdout
    assert len(fake_api.calls) == DEMO_RECORDS
    assert list(tmp_path.iterdir()) == []  # no outbox in HACKAGENT_OUTBOX_PATH's folder
