"""DeliveryService and push over real loopback HTTP and real SQLite outboxes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.push import push
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.service import DeliveryService, DeliveryStats
from hackagent_otel._records import REF, Record
from hackagent_otel.testing import FakeHackAgentAPI, Fault

KEY = "test-key"
FAST = RetryPolicy(initial_backoff=0.01, multiplier=2, max_backoff=0.05, max_elapsed=0.2)


def trace(result_id: str, seq: int, step_type: str = "OTHER") -> Record:
    return Record(
        "trace",
        "POST",
        f"/result/{result_id}/trace",
        {"sequence": seq, "step_type": step_type, "content": {"n": seq}},
        result_id,
    )


def keys(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def sequences(api: FakeHackAgentAPI, result_id: str) -> list[int]:
    return [t["sequence"] for t in api.traces_for(result_id)]


def assert_a_successor_continues_in_order(
    make: object, api: FakeHackAgentAPI, result_id: str, next_sequence: int
) -> None:
    """A new service on the same outbox delivers what was left, then its own record,
    so the API ends up with sequences 0..next_sequence in order."""
    successor: DeliveryService = make()  # type: ignore[operator]
    successor.submit(trace(result_id, next_sequence))
    total = next_sequence + 1
    assert api.wait_for(lambda: len(api.traces_for(result_id)) == total, timeout=10)
    assert sequences(api, result_id) == list(range(total))


@pytest.fixture
def services() -> Iterator[list[DeliveryService]]:
    """Services made by a test; shut down at teardown so no thread outlives it."""
    made: list[DeliveryService] = []
    yield made
    for service in made:
        service.shutdown(timeout=2)


@pytest.fixture
def make(fake_api: FakeHackAgentAPI, outbox_path: Path, services: list[DeliveryService]) -> object:
    def factory(**kwargs: object) -> DeliveryService:
        timeout = kwargs.pop("timeout", 2.0)
        client = HackAgentClient(fake_api.base_url, KEY, timeout=timeout)  # type: ignore[arg-type]
        kwargs.setdefault("policy", FAST)
        kwargs.setdefault("outbox_path", outbox_path)
        service = DeliveryService(client, **kwargs)  # type: ignore[arg-type]
        services.append(service)
        return service

    return factory


def settle(service: DeliveryService, check: Callable[[DeliveryStats], bool]) -> DeliveryStats:
    """Wait (up to 10 s) until the service's counters satisfy ``check``; return them."""
    deadline = time.monotonic() + 10
    while True:
        stats = service.stats()
        if check(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def submit_all(service: DeliveryService, result_ids: list[str], per_key: int) -> None:
    for seq in range(per_key):
        for result_id in result_ids:
            service.submit(trace(result_id, seq))


def test_records_are_delivered_in_submission_order_per_key(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    service: DeliveryService = make()  # type: ignore[operator]
    result_ids = keys(6)
    submit_all(service, result_ids, 40)
    assert service.force_flush(10)
    for result_id in result_ids:
        assert sequences(fake_api, result_id) == list(range(40))
    stats = service.stats()
    assert (stats.submitted, stats.sent, stats.dropped, stats.queued) == (240, 240, 0, 0)
    assert stats.mode == "direct"


def test_submit_never_waits_on_a_slow_api(fake_api: FakeHackAgentAPI, make: object) -> None:
    fake_api.set_latency(200)
    service: DeliveryService = make()  # type: ignore[operator]
    (result_id,) = keys(1)
    started = time.perf_counter()
    for seq in range(100):
        service.submit(trace(result_id, seq))
    assert time.perf_counter() - started < 0.1
    fake_api.set_latency(0)


def test_transient_5xx_is_retried_in_order(fake_api: FakeHackAgentAPI, make: object) -> None:
    service: DeliveryService = make()  # type: ignore[operator]
    fake_api.inject(Fault.status(503), times=2)
    fake_api.inject(Fault.status(502))
    fake_api.inject(Fault.reset())
    fake_api.inject(Fault.malformed_response())
    (result_id,) = keys(1)
    for seq in range(10):
        service.submit(trace(result_id, seq))
    assert service.force_flush(5)
    assert sequences(fake_api, result_id) == list(range(10))
    stats = service.stats()
    assert stats.retried >= 4
    assert (stats.sent, stats.rejected, stats.dropped) == (10, 0, 0)


def test_429_retry_after_seconds_is_honoured(fake_api: FakeHackAgentAPI, make: object) -> None:
    service: DeliveryService = make(policy=RetryPolicy(initial_backoff=0.01, max_elapsed=5))  # type: ignore[operator]
    fake_api.inject(Fault.status(429, retry_after=1))
    (result_id,) = keys(1)
    service.submit(trace(result_id, 0))
    assert service.force_flush(5)
    refused, accepted = fake_api.calls
    assert refused.status == 429
    assert accepted.received_at - refused.received_at >= 0.95


def test_hang_past_the_client_timeout_is_retried(fake_api: FakeHackAgentAPI, make: object) -> None:
    service: DeliveryService = make(timeout=0.2, policy=RetryPolicy(0.01, max_elapsed=3))  # type: ignore[operator]
    fake_api.inject(Fault.hang(seconds=1))
    (result_id,) = keys(1)
    service.submit(trace(result_id, 0))
    service.submit(trace(result_id, 1))
    assert service.force_flush(5)
    assert sequences(fake_api, result_id) == [0, 1]


def test_final_rejections_are_kept_in_the_outbox_counted_and_logged(
    fake_api: FakeHackAgentAPI,
    make: object,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service: DeliveryService = make()  # type: ignore[operator]
    fake_api.inject(Fault.status(500), path_prefix="/run/")
    (result_id,) = keys(1)
    run_id = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="hackagent_otel.delivery"):
        service.submit(trace(result_id, 0))
        service.submit(trace(result_id, 1, step_type="BOGUS"))
        service.submit(Record("run_update", "PATCH", f"/run/{run_id}", {"status": "X"}, run_id))
        service.submit(trace(result_id, 2))
        assert service.force_flush(5)
    assert sequences(fake_api, result_id) == [0, 2]
    stats = service.stats()
    assert (stats.sent, stats.rejected) == (2, 2)
    with Outbox(outbox_path) as box:
        statuses = sorted(r.status or 0 for r in box.list_rejected())
    assert statuses == [400, 500]
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 2


def test_order_per_key_holds_across_retries_and_queue_spills(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    service: DeliveryService = make(queue_size=16, senders=3)  # type: ignore[operator]
    fake_api.set_latency(2)
    fake_api.inject(Fault.status(503), times=20)
    result_ids = keys(5)
    submit_all(service, result_ids, 60)
    fake_api.set_latency(0)
    assert service.force_flush(10)
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 300, timeout=20)
    for result_id in result_ids:
        assert sequences(fake_api, result_id) == list(range(60))
    stats = settle(service, lambda s: s.sent == 300)
    assert stats.spooled > 0
    assert (stats.sent, stats.outbox_pending, stats.mode) == (300, 0, "direct")


def test_queue_full_spills_from_the_callers_thread_and_everything_arrives(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    fake_api.set_latency(50)
    service: DeliveryService = make(queue_size=5, senders=1)  # type: ignore[operator]
    (result_id,) = keys(1)
    for seq in range(40):
        service.submit(trace(result_id, seq))
    assert service.stats().spooled >= 30
    fake_api.set_latency(0)
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 40, timeout=10)
    assert sequences(fake_api, result_id) == list(range(40))


def test_api_down_then_back_delivers_everything_via_the_outbox_in_order(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    fake_api.stop()
    service: DeliveryService = make()  # type: ignore[operator]
    result_ids = keys(3)
    submit_all(service, result_ids, 30)
    assert service.force_flush(5)  # spooled: returns without waiting for the API
    stats = service.stats()
    assert stats.mode == "spooling"
    assert stats.outbox_pending == 90
    fake_api.start()
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 90, timeout=10)
    for result_id in result_ids:
        assert sequences(fake_api, result_id) == list(range(30))
    deadline = time.monotonic() + 5
    while service.mode != "direct" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.mode == "direct"
    stats = service.stats()
    assert (stats.sent, stats.outbox_pending, stats.queued) == (90, 0, 0)


def test_api_down_for_the_whole_run_is_delivered_by_the_next_process(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    fake_api.stop()
    first: DeliveryService = make()  # type: ignore[operator]
    result_ids = keys(2)
    submit_all(first, result_ids, 25)
    assert first.shutdown(timeout=2)
    assert fake_api.calls == []
    fake_api.start()
    second: DeliveryService = make()  # type: ignore[operator]
    second.submit(trace(result_ids[0], 25))  # starts the service; old rows go first
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 51, timeout=10)
    assert sequences(fake_api, result_ids[0]) == list(range(26))
    assert sequences(fake_api, result_ids[1]) == list(range(25))


def test_records_of_a_sigkilled_process_are_delivered_by_the_next(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    fake_api.stop()
    (result_id,) = keys(1)
    script = textwrap.dedent(
        f"""
        import os, time
        from hackagent_otel._delivery.client import HackAgentClient
        from hackagent_otel._delivery.retry import RetryPolicy
        from hackagent_otel._delivery.service import DeliveryService, DeliveryStats
        from hackagent_otel._records import Record
        service = DeliveryService(
            HackAgentClient({fake_api.base_url!r}, {KEY!r}),
            outbox_path={str(outbox_path)!r},
            policy=RetryPolicy(0.01, max_elapsed=0.1),
        )
        for i in range(30):
            path = "/result/{result_id}/trace"
            body = {{"sequence": i, "step_type": "OTHER", "content": {{}}}}
            service.submit(Record("trace", "POST", path, body, {result_id!r}))
        assert service.force_flush(5)
        print(service.stats().outbox_pending, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "30"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    fake_api.start()
    assert_a_successor_continues_in_order(make, fake_api, result_id, 30)


def test_shutdown_returns_within_its_timeout_when_the_api_hangs(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    fake_api.inject(Fault.hang(), times=None)
    service: DeliveryService = make(timeout=30.0)  # type: ignore[operator]
    (result_id,) = keys(1)
    for seq in range(20):
        service.submit(trace(result_id, seq))
    started = time.monotonic()
    assert service.shutdown(timeout=1.0)
    assert time.monotonic() - started < 1.3
    assert service.shutdown(timeout=1.0)  # idempotent
    fake_api.clear_faults()
    with Outbox(outbox_path) as box:
        pending = box.list_pending()
    assert [r.call.parsed_body()["sequence"] for r in pending] == list(range(20))


def test_submit_after_shutdown_is_dropped_and_counted(make: object) -> None:
    service: DeliveryService = make()  # type: ignore[operator]
    assert service.shutdown(1)
    service.submit(trace(str(uuid.uuid4()), 0))
    assert service.stats().dropped == 1


def test_a_record_whose_body_is_not_json_is_dropped_and_counted_without_a_call(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    service: DeliveryService = make()  # type: ignore[operator]
    run_id = str(uuid.uuid4())
    service.submit(Record("run_update", "PATCH", f"/run/{run_id}", {"n": float("nan")}, run_id))
    assert service.force_flush(2)
    stats = service.stats()
    assert (stats.submitted, stats.dropped, stats.sent) == (1, 1, 0)
    assert fake_api.calls == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_delivers_its_records_and_not_the_parents(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    fake_api.set_latency(20)
    service: DeliveryService = make(senders=1)  # type: ignore[operator]
    parent_key, child_key = keys(2)
    for seq in range(15):
        service.submit(trace(parent_key, seq))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            for seq in range(5):
                service.submit(trace(child_key, seq))
            code = 0 if service.shutdown(10) and service.stats().sent == 5 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fake_api.set_latency(0)
    assert service.force_flush(10)
    assert sequences(fake_api, parent_key) == list(range(15))
    assert sequences(fake_api, child_key) == list(range(5))
    assert fake_api.duplicate_traces() == []


def test_a_senders_first_call_imports_no_module(
    fake_api: FakeHackAgentAPI, outbox_path: Path
) -> None:
    # A fork while a sender thread imports a module leaves the child that module's import
    # lock, held by a thread it does not have: the child's senders would hang on it.
    script = textwrap.dedent(
        f"""
        import sys
        from hackagent_otel._delivery.client import HackAgentClient
        from hackagent_otel._delivery.service import DeliveryService
        from hackagent_otel._records import Record
        service = DeliveryService(
            HackAgentClient({fake_api.base_url!r}, {KEY!r}), outbox_path={str(outbox_path)!r}
        )
        before = set(sys.modules)
        body = {{"sequence": 0, "step_type": "OTHER", "content": {{}}}}
        service.submit(Record("trace", "POST", "/result/k/trace", body, "k"))
        assert service.force_flush(5)
        print(sorted(set(sys.modules) - before))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "[]"
    assert len(fake_api.calls) == 1


def test_unusable_outbox_leaves_the_caller_unaffected(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    service: DeliveryService = make(outbox_path="/proc/hackagent-otel/outbox.sqlite3")  # type: ignore[operator]
    (result_id,) = keys(1)
    for seq in range(20):
        service.submit(trace(result_id, seq))
    assert service.force_flush(5)
    assert sequences(fake_api, result_id) == list(range(20))
    stats = service.stats()
    assert (stats.sent, stats.outbox_pending, stats.dropped) == (20, None, 0)


def test_unusable_outbox_with_api_down_drops_overflow_and_counts_it(
    fake_api: FakeHackAgentAPI, make: object, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.stop()
    service: DeliveryService = make(  # type: ignore[operator]
        outbox_path="/proc/hackagent-otel/outbox.sqlite3", queue_size=10, senders=1
    )
    (result_id,) = keys(1)
    with caplog.at_level(logging.WARNING, logger="hackagent_otel.delivery"):
        for seq in range(50):
            service.submit(trace(result_id, seq))
    stats = service.stats()
    assert stats.dropped >= 39
    assert stats.submitted == 50
    assert any("dropped" in r.getMessage() for r in caplog.records)
    fake_api.start()
    assert service.force_flush(5)
    assert len(fake_api.traces_for(result_id)) == 50 - service.stats().dropped


def test_counts_add_up(fake_api: FakeHackAgentAPI, make: object) -> None:
    service: DeliveryService = make(queue_size=8)  # type: ignore[operator]
    fake_api.inject(Fault.status(400), times=3)
    fake_api.inject(Fault.status(503), times=5)
    result_ids = keys(4)
    submit_all(service, result_ids, 25)
    fake_api.stop()
    submit_all(service, keys(2), 5)
    assert service.force_flush(5)

    def balanced(s: DeliveryStats) -> bool:
        accounted = s.sent + s.rejected + s.queued + (s.outbox_pending or 0)
        return accounted == s.submitted and s.mode == "spooling"

    stats = settle(service, balanced)
    assert balanced(stats), stats
    assert stats.submitted == 110
    assert stats.dropped == 0


def test_without_a_sender_everything_waits_in_the_outbox_for_push(
    fake_api: FakeHackAgentAPI, outbox_path: Path
) -> None:
    service = DeliveryService(None, outbox_path=outbox_path)
    result_ids = keys(2)
    submit_all(service, result_ids, 10)
    assert service.shutdown(2)
    assert fake_api.calls == []
    seen: list[tuple[int, int]] = []
    with Outbox(outbox_path) as box, HackAgentClient(fake_api.base_url, KEY) as client:
        report = push(box, client, progress=lambda done, total: seen.append((done, total)))
        assert box.counts().pending == 0
    assert report.complete
    assert (report.delivered, report.rejected) == (20, 0)
    assert seen[0] == (0, 20)
    assert seen[-1] == (20, 20)
    for result_id in result_ids:
        assert sequences(fake_api, result_id) == list(range(10))


def test_push_keeps_rejections_and_honours_retry_after_dates(
    fake_api: FakeHackAgentAPI, outbox_path: Path
) -> None:
    (result_id,) = keys(1)
    records = [trace(result_id, 0), trace(result_id, 1, "BOGUS"), trace(result_id, 2)]
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    fake_api.inject(Fault.status(503, retry_after=later))
    slept: list[float] = []
    with Outbox(outbox_path) as box, HackAgentClient(fake_api.base_url, KEY) as client:
        box.put_many(records)
        report = push(box, client, sleep=slept.append, policy=RetryPolicy(0.01, max_elapsed=None))
        assert [r.status for r in box.list_rejected()] == [400]
    assert (report.delivered, report.rejected, report.remaining) == (2, 1, 0)
    assert len(slept) == 1
    assert 25 < slept[0] <= 30
    assert sequences(fake_api, result_id) == [0, 2]


def test_push_stops_with_a_reason_when_the_api_stays_down(
    fake_api: FakeHackAgentAPI, outbox_path: Path
) -> None:
    fake_api.stop()
    with Outbox(outbox_path) as box, HackAgentClient(fake_api.base_url, KEY) as client:
        box.put_many([trace("k", i) for i in range(5)])
        report = push(box, client, policy=RetryPolicy(0.01, max_elapsed=0.05))
        assert box.counts().pending == 5
    assert report.stopped is not None
    assert report.stopped.startswith("API unavailable")
    assert report.remaining == 5
    assert not report.complete


def test_push_refuses_while_another_process_drains(
    fake_api: FakeHackAgentAPI, outbox_path: Path
) -> None:
    with Outbox(outbox_path) as holder, Outbox(outbox_path) as box:
        holder.put_many([trace("k", 0)])
        assert holder.drain_lock.try_acquire()
        with HackAgentClient(fake_api.base_url, KEY) as client:
            report = push(box, client)
    assert report.stopped == "another process is draining"
    assert report.remaining == 1
    assert fake_api.calls == []


def test_rows_other_processes_leave_are_drained_by_a_direct_service(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    service: DeliveryService = make(outbox_poll_interval=0.05)  # type: ignore[operator]
    (mine, theirs) = keys(2)
    service.submit(trace(mine, 0))
    assert service.force_flush(5)
    with Outbox(outbox_path) as other_process:
        other_process.put_many([trace(theirs, i) for i in range(5)])
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(theirs)) == 5, timeout=5)
    assert sequences(fake_api, theirs) == list(range(5))


def test_a_backlog_is_drained_in_parallel_and_in_order(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    result_ids = keys(8)
    with Outbox(outbox_path) as box:
        box.put_many([trace(r, seq) for seq in range(50) for r in result_ids])
    service: DeliveryService = make()  # type: ignore[operator]
    service.submit(trace(result_ids[0], 50))
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 401, timeout=10)
    assert sequences(fake_api, result_ids[0]) == list(range(51))
    for result_id in result_ids[1:]:
        assert sequences(fake_api, result_id) == list(range(50))
    stats = settle(service, lambda s: s.mode == "direct")
    assert (stats.sent, stats.outbox_pending) == (401, 0)


def test_a_short_lived_service_delivers_old_rows_then_its_own_before_shutdown_returns(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    result_ids = keys(2)
    with Outbox(outbox_path) as box:  # left by a process that was killed
        box.put_many([trace(r, seq) for seq in range(10) for r in result_ids])
    service: DeliveryService = make()  # type: ignore[operator]
    for seq in range(10, 15):
        service.submit(trace(result_ids[0], seq))
    assert service.force_flush(5)
    assert sequences(fake_api, result_ids[0]) == list(range(15))
    assert sequences(fake_api, result_ids[1]) == list(range(10))
    service.submit(trace(result_ids[1], 10))
    assert service.shutdown(timeout=5)
    assert sequences(fake_api, result_ids[1]) == list(range(11))
    with Outbox(outbox_path) as box:
        assert box.counts().pending == 0


def test_with_old_rows_and_the_api_down_force_flush_returns_once_records_are_committed(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    fake_api.stop()
    (result_id,) = keys(1)
    with Outbox(outbox_path) as box:
        box.put_many([trace(result_id, seq) for seq in range(10)])
    service: DeliveryService = make()  # type: ignore[operator]
    service.submit(trace(result_id, 10))
    started = time.monotonic()
    assert service.force_flush(10)
    assert time.monotonic() - started < 2.0
    assert service.stats().outbox_pending == 11


def test_force_flush_does_not_wait_for_a_drain_another_process_holds(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    (result_id,) = keys(1)
    with Outbox(outbox_path) as holder:
        holder.put_many([trace(result_id, seq) for seq in range(10)])
        assert holder.drain_lock.try_acquire()  # another process drains (or will)
        service: DeliveryService = make()  # type: ignore[operator]
        service.submit(trace(result_id, 10))
        started = time.monotonic()
        assert service.force_flush(10)
        assert time.monotonic() - started < 2.0
        assert service.stats().outbox_pending == 11
        assert fake_api.calls == []


def test_shutdown_mid_drain_with_a_hanging_api_loses_nothing(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    (result_id,) = keys(1)
    with Outbox(outbox_path) as box:
        box.put_many([trace(result_id, seq) for seq in range(10)])
    fake_api.inject(Fault.hang(), times=None)
    draining: DeliveryService = make(timeout=30.0)  # type: ignore[operator]
    draining.submit(trace(result_id, 10))
    assert fake_api.wait_for(1, timeout=5)  # the drain batch is stuck on the first row
    started = time.monotonic()
    assert draining.shutdown(timeout=1.0)
    assert time.monotonic() - started < 1.3
    fake_api.clear_faults()
    fake_api.reset()
    assert_a_successor_continues_in_order(make, fake_api, result_id, 11)


# -- accept_durably and start (the bridge's way in) --------------------------------------


def test_accepted_records_are_in_the_outbox_when_accept_durably_returns(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    fake_api.stop()
    service: DeliveryService = make()  # type: ignore[operator]
    (result_id,) = keys(1)
    service.accept_durably([trace(result_id, i) for i in range(5)])
    with Outbox(outbox_path) as other_process:
        assert [r.call.parsed_body()["sequence"] for r in other_process.list_pending()] == list(
            range(5)
        )


def test_accepted_records_are_delivered_at_once_and_in_order_per_key(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    # The poll interval is an hour: only accept_durably's wake-up can start the drain.
    service: DeliveryService = make(outbox_poll_interval=3600)  # type: ignore[operator]
    result_ids = keys(3)
    for batch in range(4):
        service.accept_durably([trace(r, batch * 10 + i) for r in result_ids for i in range(10)])
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 120, timeout=5)
    for result_id in result_ids:
        assert sequences(fake_api, result_id) == list(range(40))
    stats = settle(service, lambda s: s.mode == "direct" and s.sent == 120)
    assert (stats.submitted, stats.spooled, stats.sent, stats.outbox_pending) == (120, 120, 120, 0)


def test_accept_durably_after_shutdown_raises_outbox_error(make: object) -> None:
    from hackagent_otel._delivery.outbox import OutboxError

    service: DeliveryService = make()  # type: ignore[operator]
    service.shutdown(timeout=1)
    with pytest.raises(OutboxError, match="shut down"):
        service.accept_durably([trace(keys(1)[0], 0)])


def test_start_drains_rows_left_in_the_outbox_without_a_new_record(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    (result_id,) = keys(1)
    with Outbox(outbox_path) as killed_process:
        killed_process.put_many([trace(result_id, i) for i in range(7)])
    service: DeliveryService = make(outbox_poll_interval=3600)  # type: ignore[operator]
    service.start()
    service.start()  # idempotent
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 7, timeout=5)
    assert sequences(fake_api, result_id) == list(range(7))


def _hold_write_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process takes the outbox's write lock and holds it for ``seconds``."""
    script = textwrap.dedent(
        f"""
        import sqlite3, time
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        print("holding", flush=True)
        time.sleep({seconds})
        conn.execute("COMMIT")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_an_outbox_locked_past_the_busy_timeout_recovers_and_nothing_is_dropped(
    fake_api: FakeHackAgentAPI, outbox_path: Path, services: list[DeliveryService]
) -> None:
    """The API is down and another process holds the outbox's write lock far longer
    than the busy timeout; once it lets go, spooling and draining resume by themselves."""
    Outbox(outbox_path).close()
    outbox = Outbox(outbox_path, busy_timeout=0.1)
    fast_probe = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, max_elapsed=None)
    client = HackAgentClient(fake_api.base_url, KEY, timeout=2.0)
    service = DeliveryService(client, outbox, policy=FAST, probe_policy=fast_probe)
    services.append(service)
    fake_api.stop()
    holder = _hold_write_lock(outbox_path, 1.5)
    result_ids = keys(3)
    submit_all(service, result_ids, 20)  # produced while the outbox is locked
    locked = settle(service, lambda s: s.mode == "memory_only")
    assert locked.outbox == "retrying"
    holder.wait(10)
    recovered = settle(service, lambda s: s.outbox == "ok" and s.queued == 0)
    assert recovered.outbox_pending == 60, recovered
    more = keys(2)
    submit_all(service, more, 10)  # produced after the outbox is writable again
    assert service.force_flush(5)
    fake_api.start()
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 80, timeout=20)
    for result_id in result_ids:
        assert sequences(fake_api, result_id) == list(range(20))
    for result_id in more:
        assert sequences(fake_api, result_id) == list(range(10))
    assert service.stats().dropped == 0


def _goal_records(run_id: str, goal: str, traces: int) -> list[Record]:
    body = {"run": run_id, "request_payload": {"goal": goal}, "evaluation_status": "NOT_EVALUATED"}
    records = [Record("result_create", "POST", f"/run/{run_id}/result", body, goal, provides=goal)]
    for n in range(1, traces + 1):
        content = {"sequence": n, "step_type": "OTHER", "content": {"n": n}}
        records.append(Record("trace", "POST", f"/result/{REF}/trace", content, goal, needs=goal))
    return records


def test_a_results_traces_reach_the_id_the_api_gave_it_after_an_outage(
    fake_api: FakeHackAgentAPI, make: object
) -> None:
    fake_api.stop()
    service: DeliveryService = make()  # type: ignore[operator]
    run_id, goal = str(uuid.uuid4()), f"goal:{uuid.uuid4()}"
    for record in _goal_records(run_id, goal, 5):
        service.submit(record)
    assert service.force_flush(5)
    assert service.wait_for(goal, timeout=0.1) is None  # not created yet: bounded, None
    fake_api.start()
    result_id = service.wait_for(goal, timeout=10)
    assert result_id is not None
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 5, timeout=10)
    assert sequences(fake_api, result_id) == [1, 2, 3, 4, 5]
    assert [c.path for c in fake_api.calls if c.status == 201] == [f"/run/{run_id}/result"] + [
        f"/result/{result_id}/trace"
    ] * 5


def test_a_sigkill_between_a_creations_answer_and_its_first_trace_loses_and_repeats_nothing(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    run_id, goal = str(uuid.uuid4()), f"goal:{uuid.uuid4()}"
    with Outbox(outbox_path) as box:  # what a run left while the API was down
        box.put_many(_goal_records(run_id, goal, 3))
    fake_api.inject(Fault.hang(), times=None, path_prefix="/result/", method="POST")
    script = textwrap.dedent(
        f"""
        import time
        from hackagent_otel._delivery.client import HackAgentClient
        from hackagent_otel._delivery.service import DeliveryService
        service = DeliveryService(
            HackAgentClient({fake_api.base_url!r}, {KEY!r}, timeout=30),
            outbox_path={str(outbox_path)!r},
        )
        service.start()
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        # The creation was answered and the first trace is hanging: kill it there.
        assert fake_api.wait_for(lambda: len(fake_api.calls) == 2, timeout=20)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    fake_api.clear_faults()
    successor: DeliveryService = make()  # type: ignore[operator]
    successor.start()
    result_id = fake_api.calls[1].path.split("/")[2]
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 3, timeout=10)
    assert successor.shutdown(5)
    creations = [c for c in fake_api.calls if c.path.endswith("/result")]
    assert len(creations) == 1  # created once, not again by the successor
    assert sequences(fake_api, result_id) == [1, 2, 3]
    assert fake_api.duplicate_traces() == []


def test_shutdown_during_a_drain_batch_settles_what_the_api_took_so_nothing_goes_twice(
    fake_api: FakeHackAgentAPI, make: object, outbox_path: Path
) -> None:
    (result_id,) = keys(1)
    with Outbox(outbox_path) as box:  # what an outage left
        box.put_many([trace(result_id, i) for i in range(20)])
    fake_api.set_latency(50)
    service: DeliveryService = make()  # type: ignore[operator]
    service.start()
    assert fake_api.wait_for(lambda: len(fake_api.calls) >= 3, timeout=10)  # mid-batch
    assert service.shutdown(5)
    fake_api.set_latency(0)
    with Outbox(outbox_path) as box, HackAgentClient(fake_api.base_url, KEY) as client:
        assert push(box, client).complete
    assert sequences(fake_api, result_id) == list(range(20))
    assert fake_api.duplicate_traces() == []
