"""Shared pytest fixtures. Each block names its owner module; keep fixture names explicit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hackagent_otel.testing import FakeHackAgentAPI

pytest_plugins = ["otel_fixtures"]

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
