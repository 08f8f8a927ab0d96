"""Which client a run's records go to: remembered per run, bounded, recently used kept."""

from __future__ import annotations

import pytest

from hackagent_otel import _routing
from hackagent_otel._routing import ClientRoutes


def test_a_run_is_routed_to_the_client_it_registered() -> None:
    routes = ClientRoutes()
    client = object()

    routes.register("run-a", client)

    assert routes.client_for("run-a") is client
    assert routes.client_for("run-b") is None


def test_a_run_still_in_use_is_not_forgotten_for_newer_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_routing, "_MAX_RUNS", 3)
    routes = ClientRoutes()
    long_run_client = object()
    routes.register("long-run", long_run_client)
    for n in range(10):
        routes.register("long-run", long_run_client)  # each step of the long run
        routes.register(f"short-{n}", object())

    assert routes.client_for("long-run") is long_run_client
    assert routes.client_for("short-0") is None
