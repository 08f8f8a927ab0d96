"""Shared pytest fixtures. Each block names its owner module; keep fixture names explicit."""

from __future__ import annotations

import signal
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
