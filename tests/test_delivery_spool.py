"""Spool: an outbox that cannot be written now is probed with backoff and recovers;
one that can never be used stays broken. Backoff runs on a fake clock."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from hackagent_otel._delivery.outbox import Outbox, OutboxError
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.spool import OutboxHealth, Spool
from hackagent_otel._records import Call


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


POLICY = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=8.0, jitter="none")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def spool_at(path: Path, clock: FakeClock) -> Spool:
    return Spool(
        None,
        path=path,
        target="http://api.test/",
        probe_policy=RetryPolicy(**{**POLICY.__dict__, "clock": clock}),
        clock=clock,
    )


CALL = Call("trace", "POST", "/result/r/trace", b"{}", "r")


def test_a_transient_fault_is_probed_again_with_growing_waits(
    outbox_path: Path, clock: FakeClock
) -> None:
    spool = spool_at(outbox_path, clock)
    spool.failed(OutboxError("database is locked"))
    assert spool.health is OutboxHealth.RETRYING
    assert spool.probe_in() == 1.0
    clock.now += 1.0
    assert spool.probe_in() == 0.0
    spool.failed(OutboxError("database is locked"))
    assert spool.probe_in() == 2.0


def test_a_probe_that_can_write_makes_the_outbox_healthy_again(
    outbox_path: Path, clock: FakeClock
) -> None:
    spool = spool_at(outbox_path, clock)
    spool.failed(OutboxError("database is locked"))
    assert spool.probe()
    assert (spool.health, spool.error) == (OutboxHealth.OK, None)
    assert spool.store([CALL], session=1, seqs=[0])
    spool.close()


def test_a_probe_fails_while_another_process_holds_the_write_lock(
    outbox_path: Path, clock: FakeClock
) -> None:
    outbox = Outbox(outbox_path, busy_timeout=0.05)
    spool = Spool(outbox, path=None, target=None, probe_policy=POLICY, clock=clock)
    with contextlib.closing(sqlite3.connect(outbox_path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        assert not spool.probe()
        assert spool.health is OutboxHealth.RETRYING
        assert spool.error is not None
        assert "locked" in spool.error
        other.execute("COMMIT")
    assert spool.probe()
    assert spool.error is None
    outbox.close()


def test_a_file_that_is_not_a_database_stays_broken(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    spool = spool_at(path, clock)
    with pytest.raises(OutboxError) as raised:
        spool.get()
    assert not raised.value.transient
    spool.failed(raised.value)
    assert spool.health is OutboxHealth.BROKEN
    assert spool.probe_in() is None
    assert not spool.probe()
    assert spool.health is OutboxHealth.BROKEN
