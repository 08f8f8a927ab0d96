"""The mode machine: every edge of the transition table, and nothing off it."""

from __future__ import annotations

import itertools
import logging

import pytest

from hackagent_otel._delivery.modes import TRANSITIONS, Event, Mode, ModeMachine


@pytest.mark.parametrize(("edge", "after"), list(TRANSITIONS.items()), ids=str)
def test_each_edge_of_the_table_is_taken_and_logged_with_its_reason(
    edge: tuple[Mode, Event], after: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    before, event = edge
    machine = ModeMachine(before)
    with caplog.at_level(logging.INFO, "hackagent_otel.delivery"):
        assert machine.change(event, "because")
    assert machine.mode is after
    assert machine.last is not None
    assert (machine.last.before, machine.last.event, machine.last.detail) == (
        before,
        event,
        "because",
    )
    assert f"{before.value} -> {after.value}: {event.value} (because)" in caplog.text


OFF_THE_TABLE = [pair for pair in itertools.product(Mode, Event) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("before", "event"), OFF_THE_TABLE, ids=str)
def test_an_event_with_no_edge_changes_nothing(before: Mode, event: Event) -> None:
    machine = ModeMachine(before)
    assert not machine.change(event)
    assert machine.mode is before
    assert machine.changes == 0


def test_closed_is_final() -> None:
    assert all(before is not Mode.CLOSED for before, _ in TRANSITIONS)


def test_every_mode_can_be_shut_down() -> None:
    assert {before for before, event in TRANSITIONS if event is Event.SHUTDOWN} == set(Mode) - {
        Mode.CLOSED
    }


def test_modes_compare_equal_to_their_names() -> None:
    assert str.__eq__(Mode.SPOOLING, "spooling")
    assert Mode("memory_only") is Mode.MEMORY_ONLY
