"""Bindings: ids from earlier answers, bounded, waited for with a bound."""

from __future__ import annotations

import threading
import time

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.outbox import Binding


def test_a_learned_id_and_a_rejection_are_what_get_returns() -> None:
    bindings = Bindings()
    bindings.learn("goal:a", "1234")
    bindings.fail("goal:b", "HTTP 400")
    assert bindings.get("goal:a") == Binding("1234")
    assert bindings.get("goal:b") == Binding(None, "HTTP 400")
    assert bindings.get("goal:c") is None


def test_wait_returns_as_soon_as_another_thread_learns_the_id() -> None:
    bindings = Bindings()
    threading.Timer(0.05, bindings.learn, ("goal:a", "42")).start()
    started = time.monotonic()
    assert bindings.wait("goal:a", timeout=5) == Binding("42")
    assert time.monotonic() - started < 2


def test_wait_gives_up_at_its_bound() -> None:
    bindings = Bindings()
    started = time.monotonic()
    assert bindings.wait("goal:never", timeout=0.1) is None
    assert 0.09 <= time.monotonic() - started < 1


def test_past_the_limit_the_oldest_are_forgotten_and_counted() -> None:
    bindings = Bindings(limit=2)
    for n in range(4):
        bindings.learn(f"goal:{n}", str(n))
    assert len(bindings) == 2
    assert bindings.evicted == 2
    assert bindings.get("goal:0") is None
    assert bindings.get("goal:3") == Binding("3")
