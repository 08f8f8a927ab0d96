"""Shared pytest fixtures. Each block names its owner module; keep fixture names explicit."""

from __future__ import annotations

import os
import pwd
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hackagent_otel.testing import FakeHackAgentAPI

pytest_plugins = ["otel_fixtures"]

# -- the test process itself ------------------------------------------------------------


@pytest.fixture(autouse=True)
def signal_handlers_restored() -> Iterator[None]:
    """Code under test may install handlers (``configure()`` flushes on SIGTERM,
    the bridge's server ignores it while it stops): each test gets the process's own
    back, so no later test (one that forks, above all) runs under another's."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


# -- delivery (hackagent_otel._delivery, hackagent_otel.testing) ------------------------

FAKE_API_KEY = "test-key"


@pytest.fixture
def fake_api() -> Iterator[FakeHackAgentAPI]:
    """A running FakeHackAgentAPI on a free loopback port, api key ``FAKE_API_KEY``."""
    with FakeHackAgentAPI(api_key=FAKE_API_KEY) as api:
        yield api


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    """Where a test's outbox database lives (not created yet)."""
    return tmp_path / "outbox" / "outbox.sqlite3"


# -- settings (hackagent_otel._config) ------------------------------------------------------


@pytest.fixture
def no_home(clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A container running as an arbitrary UID: no HOME, no passwd entry for the user;
    the temporary folder is the test's own. Returns the folder state is expected in."""
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("HACKAGENT_OUTBOX_PATH", raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        Path.home()  # what the standard library does then
    return tmp_path / f"hackagent-otel-{os.getuid()}"
