"""Spiller: queued records reach the outbox in submission order, or stay counted.

A real outbox on disk; no threads: the spiller runs on the test's thread, as it does on
a caller's thread when the queue is full.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.modes import Event, Mode
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.queue import Item
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.spill import Spiller
from hackagent_otel._delivery.spool import Spool
from hackagent_otel._delivery.state import DeliveryState
from hackagent_otel._records import REF, Call


def trace_call(n: int, key: str = "r1") -> Call:
    return Call("trace", "POST", f"/result/{key}/trace", b'{"n":%d}' % n, key)


@pytest.fixture
def outbox(outbox_path: Path) -> Iterator[Outbox]:
    with Outbox(outbox_path, busy_timeout=0.05) as box:
        yield box


@pytest.fixture
def state(outbox: Outbox) -> DeliveryState:
    """Two partitions, room for two records in memory."""
    spool = Spool(outbox, path=None, target=None, probe_policy=RetryPolicy(), clock=time.monotonic)
    return DeliveryState(partitions=2, queue_size=2, spool=spool)


@pytest.fixture
def bindings() -> Bindings:
    return Bindings()


@pytest.fixture
def spiller(state: DeliveryState, bindings: Bindings) -> Spiller:
    return Spiller(state, bindings)


def queued(state: DeliveryState, count: int) -> list[Item]:
    items = [Item(n, trace_call(n)) for n in range(count)]
    for item in items:
        assert state.queue.offer(item) is not None
    return items


def stored_bodies(outbox: Outbox) -> list[bytes]:
    return [row.call.body for row in outbox.list_pending()]


def test_a_full_queue_and_the_record_that_did_not_fit_reach_the_outbox_in_order(
    state: DeliveryState, spiller: Spiller, outbox: Outbox
) -> None:
    queued(state, 2)
    extra = Item(2, trace_call(2))
    assert state.queue.offer(extra) is None  # full
    state.queue.begin_transit([extra])

    spiller.spill(extra=[extra])

    assert stored_bodies(outbox) == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert state.mode is Mode.SPOOLING
    assert state.counters["spooled"] == 3
    assert len(state.queue) == 0
    assert state.queue.lowest_unsettled() is None


def test_when_the_outbox_refuses_the_queue_stays_in_memory_and_the_extra_is_dropped(
    state: DeliveryState, spiller: Spiller, outbox: Outbox, outbox_path: Path
) -> None:
    queued(state, 2)
    extra = Item(2, trace_call(2))
    state.queue.begin_transit([extra])
    with contextlib.closing(sqlite3.connect(outbox_path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        spiller.spill(extra=[extra])
        other.execute("ROLLBACK")

    assert len(state.queue) == 2
    assert state.counters["dropped"] == 1
    assert state.counters["spooled"] == 0
    assert state.mode is Mode.MEMORY_ONLY
    assert stored_bodies(outbox) == []


def test_a_commit_that_succeeds_ends_memory_only_mode(
    state: DeliveryState, spiller: Spiller, outbox: Outbox
) -> None:
    state.modes.change(Event.OUTBOX_FAILED, "the disk was full")
    seen = [state.mode]

    spiller.store([Item(0, trace_call(0))])

    seen.append(state.mode)
    assert seen == [Mode.MEMORY_ONLY, Mode.SPOOLING]


def test_a_dependent_is_stored_with_its_providers_id_once_that_is_known(
    state: DeliveryState, spiller: Spiller, bindings: Bindings, outbox: Outbox
) -> None:
    dependent = Call("goal_trace", "POST", f"/result/{REF}/trace", b"{}", "goal-0", needs="g0")
    waiting = Call("goal_trace", "POST", f"/result/{REF}/trace", b"{}", "goal-1", needs="g1")
    bindings.learn("g0", "result-from-the-api")

    spiller.store([Item(0, dependent), Item(1, waiting)])

    rows = outbox.list_pending()
    assert [(row.call.path, row.call.needs) for row in rows] == [
        ("/result/result-from-the-api/trace", None),
        (f"/result/{REF}/trace", "g1"),
    ]


def test_shutdown_persists_records_in_flight_too_and_remembers_their_rows(
    state: DeliveryState, spiller: Spiller, outbox: Outbox
) -> None:
    items = queued(state, 2)
    part = state.queue.partition_of(items[0].call.ordering_key)
    in_flight = state.queue.take(part)

    assert spiller.persist_on_shutdown(timeout=1.0)

    rows = outbox.list_pending()
    assert [row.call.body for row in rows] == [b'{"n":0}', b'{"n":1}']
    assert state.persisted_busy == {in_flight.seq: rows[0].id}
    assert state.counters["spooled"] == 2


def test_shutdown_that_cannot_get_the_outbox_in_time_counts_what_it_leaves(
    state: DeliveryState, spiller: Spiller
) -> None:
    queued(state, 2)
    with state.spill_lock:  # a spill in another thread still writing
        assert not spiller.persist_on_shutdown(timeout=0.01)

    assert state.counters["dropped"] == 2
