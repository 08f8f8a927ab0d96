"""``hackagent-otel``: the commands, in process and as the installed script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.scenario import SCENARIO_RECORDS, expected_result_calls
from hackagent_otel import __version__
from hackagent_otel._cli import main
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel.testing import FakeHackAgentAPI
from otel_fixtures import FilledOutbox, api_calls

SCRIPT = Path(sys.executable).with_name("hackagent-otel")


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")


def pending(path: Path) -> int:
    with Outbox(path) as outbox:
        return outbox.counts().pending


def script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HACKAGENT_", "OTEL_"))}
    env["HACKAGENT_OUTBOX_PATH"] = os.environ["HACKAGENT_OUTBOX_PATH"]
    env["COLUMNS"] = "300"
    return env


def test_outbox_command_lists_what_waits(
    filled_outbox: FilledOutbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outbox"]) == 0
    assert f"{SCENARIO_RECORDS} pending, 0 rejected" in capsys.readouterr().out


def test_push_command_delivers_in_order_and_exits_0(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    assert main(["push", "--base-url", fake_api.base_url, "--api-key", fake_api.api_key]) == 0
    result_id = filled_outbox.result_id
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert pending(filled_outbox.path) == 0


def test_push_command_with_the_api_down_exits_1_within_max_wait(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    fake_api.stop()
    argv = ["push", "--base-url", fake_api.base_url, "--api-key", "k", "--max-wait", "0.3"]
    assert main(argv) == 1
    assert pending(filled_outbox.path) == SCENARIO_RECORDS


def test_push_help_says_where_each_outbox_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["push", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "An outbox made for an API goes to that API, whatever $HACKAGENT_BASE_URL says" in text
    assert "Records made with no API (the default outbox) go only to an API named" in text


def test_version_and_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as unknown:
        main(["frobnicate"])
    assert unknown.value.code == 2


def test_the_installed_script_lists_and_pushes_the_outbox(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: run `make install`"
    env = script_env()

    listed = subprocess.run(
        [str(SCRIPT), "outbox"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert f"{SCENARIO_RECORDS} pending" in listed.stdout

    pushed = subprocess.run(
        [str(SCRIPT), "push", "--base-url", fake_api.base_url, "--api-key", fake_api.api_key],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert len(fake_api.calls) == SCENARIO_RECORDS
    assert pending(filled_outbox.path) == 0


def test_every_bridge_option_comes_from_its_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hackagent_otel.bridge
    from hackagent_otel._settings_table import rows
    from hackagent_otel.bridge import BridgeSettings

    seen: list[BridgeSettings] = []

    def fake_run(settings: BridgeSettings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(hackagent_otel.bridge, "run", fake_run)
    argv = ["bridge", "--retry-after-seconds", "7", "--shutdown-timeout", "2"]
    argv += ["--max-concurrent-requests", "3", "--max-waiting-requests", "0", "--max-pending", "9"]

    assert main(argv) == 0
    (settings,) = seen
    assert (settings.retry_after_seconds, settings.shutdown_timeout) == (7, 2.0)
    assert (settings.max_concurrent_requests, settings.max_waiting_requests) == (3, 0)
    assert settings.max_pending_records == 9
    with pytest.raises(SystemExit):
        main(["bridge", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for row in rows(BridgeSettings):
        if row.flag:
            assert row.flag in text
            assert f"${row.env[0]}" in text
    assert "(default: 200,000; env: $HACKAGENT_BRIDGE_MAX_PENDING_RECORDS)" in text
    with pytest.raises(SystemExit) as bad:
        main(["bridge", "--port", "http"])
    assert bad.value.code == 2
    assert "is not an integer" in capsys.readouterr().err
