"""DeliveryState: what every part of the delivery service relies on under its lock:
drops are counted and logged, waits end at shutdown, a failing loop carries on."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from hackagent_otel._delivery.modes import Event, Mode
from hackagent_otel._delivery.outbox import OutboxError
from hackagent_otel._delivery.queue import Item
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.spool import OutboxHealth, Spool
from hackagent_otel._delivery.state import DeliveryState
from hackagent_otel._records import Call


@pytest.fixture
def state(outbox_path: Path) -> DeliveryState:
    spool = Spool(
        None, path=outbox_path, target=None, probe_policy=RetryPolicy(), clock=time.monotonic
    )
    return DeliveryState(partitions=2, queue_size=4, spool=spool)


def test_every_drop_is_counted_and_logged_with_its_reason(
    state: DeliveryState, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "hackagent_otel.delivery"), state.lock:
        state.drop_locked(0, "nothing")
        state.drop_locked(3, "the outbox is full")

    assert state.counters["dropped"] == 3
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 3 HackAgent record(s): the outbox is full (3 dropped in total)"
    ]


def test_a_pause_runs_its_time_unless_shutdown_cuts_it_short(state: DeliveryState) -> None:
    assert state.pause(0.01, state.coord_cv)
    ended: list[bool] = []
    waiter = threading.Thread(target=lambda: ended.append(state.pause(30, state.coord_cv)))
    waiter.start()
    with state.lock:
        state.closing = True
        state.notify_all_locked()
    waiter.join(5)
    assert ended == [False]


def test_a_direct_pause_ends_when_the_mode_turns_to_spooling(state: DeliveryState) -> None:
    with state.lock:
        state.modes.change(Event.API_UNAVAILABLE, "down")
    assert not state.pause(30, state.part_cv[0], direct=True)
    assert state.pause(0.01, state.part_cv[0])  # not direct: the mode does not matter


def test_a_loop_that_fails_is_logged_counted_and_run_again(
    state: DeliveryState, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, "hackagent_otel.delivery"):
        state.survive(loop, "sender 0")

    assert len(runs) == 2
    assert state.counters["errors"] == 1
    assert "delivery sender 0 failed; carrying on" in caplog.text


def test_an_outbox_fault_turns_to_memory_only_but_not_while_shutting_down(
    state: DeliveryState,
) -> None:
    with state.lock:
        state.closing = True
    state.outbox_failed(OutboxError("database is locked", transient=True))
    seen = [(state.mode, state.spool.health)]

    with state.lock:
        state.closing = False
    state.outbox_failed(OutboxError("database is locked", transient=True))
    seen.append((state.mode, state.spool.health))

    assert seen == [
        (Mode.DIRECT, OutboxHealth.RETRYING),
        (Mode.MEMORY_ONLY, OutboxHealth.RETRYING),
    ]


def test_flushed_up_to_a_number_means_nothing_older_is_queued_or_in_flight(
    state: DeliveryState,
) -> None:
    call = Call("trace", "POST", "/result/r/trace", b"{}", "r")
    first, second = Item(0, call), Item(1, call)
    state.queue.offer(first)
    state.queue.offer(second)
    part = state.queue.partition_of("r")
    taken = state.queue.take(part)

    assert not state.flushed_locked(0)
    state.queue.settle(part, taken)
    assert state.flushed_locked(0)
    assert not state.flushed_locked(1)
