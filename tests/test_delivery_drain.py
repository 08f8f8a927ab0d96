"""The drain over real loopback HTTP: order, stops, and records that depend on an
earlier answer (a Result's creation and its traces)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.drain import claim, send_rows
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._records import REF, Record
from hackagent_otel.testing import FakeHackAgentAPI, Fault

KEY = "test-key"


def creation(run_id: str, goal: str) -> Record:
    body = {"run": run_id, "request_payload": {"goal": goal}, "evaluation_status": "NOT_EVALUATED"}
    return Record("result_create", "POST", f"/run/{run_id}/result", body, goal, provides=goal)


def goal_trace(goal: str, seq: int) -> Record:
    body = {"sequence": seq, "step_type": "OTHER", "content": {"n": seq}}
    return Record("trace", "POST", f"/result/{REF}/trace", body, goal, needs=goal)


@pytest.fixture
def outbox(outbox_path: Path) -> Iterator[Outbox]:
    with Outbox(outbox_path) as box:
        yield box


@pytest.fixture
def client(fake_api: FakeHackAgentAPI) -> Iterator[HackAgentClient]:
    with HackAgentClient(fake_api.base_url, KEY, timeout=2.0) as c:
        yield c


def test_dependents_are_sent_with_the_id_the_api_gave_their_provider(
    fake_api: FakeHackAgentAPI, outbox: Outbox, client: HackAgentClient
) -> None:
    run_id, goal = str(uuid.uuid4()), f"goal:{uuid.uuid4()}"
    outbox.put_many([creation(run_id, goal)] + [goal_trace(goal, n) for n in (1, 2, 3)])
    rows = claim(outbox, 10)
    assert rows is not None
    batch = send_rows(rows, client, Bindings(), outbox)
    outbox.settle(batch.settlement)
    result_id = fake_api.calls[1].path.split("/")[2]
    assert [c.path for c in fake_api.calls] == [f"/run/{run_id}/result"] + [
        f"/result/{result_id}/trace"
    ] * 3
    assert fake_api.result(result_id) is not None
    assert [t["sequence"] for t in fake_api.traces_for(result_id)] == [1, 2, 3]
    assert outbox.counts().pending == 0
    assert outbox.binding(goal) is not None


def test_a_provider_is_committed_before_its_first_dependent_is_sent(
    fake_api: FakeHackAgentAPI, outbox: Outbox, client: HackAgentClient
) -> None:
    run_id, goal = str(uuid.uuid4()), f"goal:{uuid.uuid4()}"
    outbox.put_many([creation(run_id, goal), goal_trace(goal, 1)])
    fake_api.inject(Fault.hang(seconds=5), path_prefix="/result/", method="POST")
    rows = claim(outbox, 10)
    assert rows is not None
    sending = threading.Thread(target=send_rows, args=(rows, client, Bindings(), outbox))
    sending.start()
    try:
        assert fake_api.wait_for(lambda: len(fake_api.calls) == 2, 5)  # the trace hangs
        with contextlib.closing(sqlite3.connect(outbox.path)) as other_process:
            kinds = [k for (k,) in other_process.execute("SELECT kind FROM calls")]
            (value,) = other_process.execute("SELECT value FROM bindings").fetchone()
        assert kinds == ["trace"]  # the creation is gone: it is never sent twice
        created = fake_api.result(value)
        assert created is not None
        assert created["run"] == run_id
    finally:
        fake_api.release()
        sending.join(10)


def test_the_dependents_of_a_rejected_provider_are_rejected_with_its_reason(
    fake_api: FakeHackAgentAPI, outbox: Outbox, client: HackAgentClient
) -> None:
    goal = f"goal:{uuid.uuid4()}"
    bad = Record(
        "result_create", "POST", f"/run/{uuid.uuid4()}/result", {"run": "x"}, goal, provides=goal
    )
    outbox.put_many([bad, goal_trace(goal, 1), goal_trace(goal, 2)])
    rows = claim(outbox, 10)
    assert rows is not None
    batch = send_rows(rows, client, Bindings(), outbox)
    outbox.settle(batch.settlement)
    assert len(fake_api.calls) == 1  # the traces were never sent
    rejected = outbox.list_rejected()
    assert [r.call.kind for r in rejected] == ["result_create", "trace", "trace"]
    assert all("HTTP 400" in (r.last_error or "") for r in rejected)
    assert "depends on" in (rejected[1].last_error or "")


def test_a_dependent_whose_provider_never_reached_the_outbox_is_rejected_not_stuck(
    fake_api: FakeHackAgentAPI, outbox: Outbox, client: HackAgentClient
) -> None:
    goal = f"goal:{uuid.uuid4()}"
    outbox.put_many([goal_trace(goal, 1)])
    rows = claim(outbox, 10)
    assert rows is not None
    outbox.settle(send_rows(rows, client, Bindings(), outbox).settlement)
    (row,) = outbox.list_rejected()
    assert "never delivered" in (row.last_error or "")
    assert fake_api.calls == []


def test_a_transient_failure_stops_the_run_and_keeps_the_rest_in_order(
    fake_api: FakeHackAgentAPI, outbox: Outbox, client: HackAgentClient
) -> None:
    result_id = str(uuid.uuid4())
    body = {"step_type": "OTHER", "content": {}}
    outbox.put_many(
        [
            Record(
                "trace", "POST", f"/result/{result_id}/trace", {**body, "sequence": n}, result_id
            )
            for n in range(4)
        ]
    )
    fake_api.inject(Fault.status(503), path_prefix=f"/result/{result_id}", method="POST")
    rows = claim(outbox, 10)
    assert rows is not None
    batch = send_rows(rows, client, Bindings(), outbox)
    outbox.settle(batch.settlement)
    assert batch.failure is not None
    assert batch.failure.status == 503
    pending = outbox.list_pending()
    assert [r.call.parsed_body()["sequence"] for r in pending] == [0, 1, 2, 3]
    assert pending[0].attempts == 1
    assert [r.attempts for r in pending[1:]] == [0, 0, 0]


def test_claim_says_so_when_another_process_drains(outbox_path: Path, outbox: Outbox) -> None:
    outbox.put_many([goal_trace("goal:g", 1)])
    with Outbox(outbox_path) as other:
        assert other.drain_lock.try_acquire()
        assert claim(outbox, 10) is None
