"""Outbox on real SQLite files: order, states, durability, locking, fork, disk trouble."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hackagent_otel._delivery.lock import DrainLock
from hackagent_otel._delivery.outbox import (
    Outbox,
    OutboxCounts,
    OutboxError,
)
from hackagent_otel._records import Call, Record


def rec(key: str, n: int) -> Record:
    return Record(
        "trace",
        "POST",
        f"/result/{key}/trace",
        {"sequence": n, "step_type": "OTHER", "content": {"n": n}},
        key,
    )


@pytest.fixture
def outbox(outbox_path: Path) -> Iterator[Outbox]:
    with Outbox(outbox_path) as box:
        yield box


def test_pending_rows_are_claimed_in_insertion_order(outbox: Outbox) -> None:
    outbox.put_many([rec("a", i) for i in range(5)])
    outbox.put_many([rec("b", i) for i in range(3)])
    claimed = outbox.claim_pending(100)
    assert [(r.call.ordering_key, r.call.parsed_body()["sequence"]) for r in claimed] == [
        ("a", 0), ("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 0), ("b", 1), ("b", 2)
    ]  # fmt: skip
    assert all(r.state == "inflight" for r in claimed)
    assert outbox.claim_pending(100) == []


def test_a_large_batch_is_stored_whole_and_in_order(outbox: Outbox) -> None:
    """Batches are written with multi-row INSERTs in chunks; none is lost or reordered."""
    records = [rec(f"k{n % 7}", n) for n in range(1000)]

    ids = outbox.put_many(records)
    claimed = outbox.claim_pending(2000)

    assert len(ids) == 1000
    assert ids == sorted(ids)
    assert [row.id for row in claimed] == ids
    assert [row.call for row in claimed] == [Call.from_record(r) for r in records]


def test_rows_keep_their_bytes_and_their_missing_names(outbox: Outbox) -> None:
    """Bodies are bound as bytearrays and a missing provides/needs as 0 (NULLIF): the
    row reads back as the call was, a text "0" included, and its columns have the types
    a plain INSERT by hand gives them."""
    calls = [
        Call("trace", "POST", "/result/a/trace", b'{"b":"\\u0000\\u00e9"}', "a"),
        Call("result_create", "POST", "/run/r/result", b"{}", "goal:x", 5.0, provides="0"),
        Call("trace", "POST", "/result/{ref}/trace", b"", "goal:x", 6.0, needs="goal:x"),
    ]
    other = Outbox(outbox.path)
    try:
        ids = outbox.put_many(calls)
        ids += outbox.put_many(calls[:1])
        claimed = other.claim_pending(10)
    finally:
        other.close()

    assert [row.id for row in claimed] == ids == list(range(ids[0], ids[0] + 4))
    assert [row.call for row in claimed] == [*calls, calls[0]]
    with sqlite3.connect(outbox.path) as conn:
        types = conn.execute(
            "SELECT typeof(body), typeof(provides), typeof(needs) FROM calls ORDER BY id"
        ).fetchall()
    assert types == [
        ("blob", "null", "null"),
        ("blob", "text", "null"),
        ("blob", "null", "text"),
        ("blob", "null", "null"),
    ]


def test_claim_order_follows_session_and_seq_not_write_order(outbox: Outbox) -> None:
    outbox.put_many([rec("a", 5), rec("a", 6)], session=10, seqs=[5, 6])
    outbox.put_many([rec("a", 3), rec("a", 4)], session=10, seqs=[3, 4])
    outbox.put_many([rec("a", 0)], session=9, seqs=[99])
    got = [r.call.parsed_body()["sequence"] for r in outbox.claim_pending(10)]
    assert got == [0, 3, 4, 5, 6]


def test_claim_respects_the_limit(outbox: Outbox) -> None:
    outbox.put_many([rec("a", i) for i in range(10)])
    assert [r.call.parsed_body()["sequence"] for r in outbox.claim_pending(3)] == [0, 1, 2]
    assert [r.call.parsed_body()["sequence"] for r in outbox.claim_pending(3)] == [3, 4, 5]


def test_records_round_trip_unchanged(outbox: Outbox) -> None:
    record = Record(
        "run_update", "PATCH", "/run/x", {"status": "RUNNING", "n": [1, None]}, "x", 5.5
    )
    outbox.put_many([record])
    (row,) = outbox.claim_pending(1)
    assert row.call == Call.from_record(record)
    assert row.call.created_at == 5.5


def test_delivered_rows_are_deleted_and_counted(outbox: Outbox) -> None:
    ids = outbox.put_many([rec("a", i) for i in range(4)])
    outbox.claim_pending(4)
    outbox.mark_delivered(ids[:3])
    assert outbox.counts() == OutboxCounts(pending=1, inflight=1, rejected=0, delivered=3)
    assert [r.id for r in outbox.list_pending()] == [ids[3]]


def test_rejected_rows_are_kept_with_status_and_reason_and_can_be_requeued(outbox: Outbox) -> None:
    ids = outbox.put_many([rec("a", 0), rec("a", 1)])
    outbox.claim_pending(2)
    outbox.mark_rejected(ids[0], 400, "HTTP 400: bad step_type")
    direct = outbox.put_rejected(rec("b", 0), 401, "HTTP 401: no key")
    rejected = outbox.list_rejected()
    assert [(r.id, r.status, r.last_error) for r in rejected] == [
        (ids[0], 400, "HTTP 400: bad step_type"),
        (direct, 401, "HTTP 401: no key"),
    ]
    assert outbox.counts().rejected == 2
    assert outbox.requeue_rejected([direct]) == 1
    assert outbox.requeue_rejected() == 1
    assert outbox.counts().rejected == 0
    assert {r.id for r in outbox.claim_pending(10)} == {ids[0], direct}


def test_release_returns_rows_to_pending_and_counts_failed_attempts(outbox: Outbox) -> None:
    ids = outbox.put_many([rec("a", 0), rec("a", 1)])
    outbox.claim_pending(2)
    outbox.release([ids[0]], error="HTTP 503")
    outbox.release([ids[1]])
    rows = outbox.claim_pending(2)
    assert [(r.id, r.attempts, r.last_error) for r in rows] == [
        (ids[0], 1, "HTTP 503"),
        (ids[1], 0, None),
    ]


def test_inflight_rows_of_a_dead_drainer_are_recovered(outbox_path: Path) -> None:
    with Outbox(outbox_path) as first:
        first.put_many([rec("a", 0)])
        first.claim_pending(1)
    with Outbox(outbox_path) as second:
        assert second.claim_pending(1) == []
        assert second.recover_inflight() == 1
        assert len(second.claim_pending(1)) == 1


def test_a_file_of_the_earlier_layout_is_converted_keeping_order_and_state(
    outbox_path: Path,
) -> None:
    """Whole records as JSON in a ``records`` table (the earlier layout) become calls
    with their exact body bytes; an unreadable row is kept as rejected, with its text."""
    outbox_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(outbox_path)) as raw, raw:
        raw.executescript(EARLIER_LAYOUT)
        rows = [(0, rec("a", 0).to_json(), "pending"), (1, "{broken", "pending")]
        rows += [(2, rec("a", 2).to_json(), "rejected"), (3, rec("b", 3).to_json(), "inflight")]
        raw.executemany(
            "INSERT INTO records (session, seq, ordering_key, record, state, created_at,"
            " updated_at) VALUES (7, ?, 'a', ?, ?, 1.0, 1.0)",
            rows,
        )
    with Outbox(outbox_path) as box:
        assert box.counts() == OutboxCounts(pending=2, inflight=1, rejected=2, delivered=0)
        assert [r.call for r in box.list_pending()] == [
            Call.from_record(rec("a", 0)), Call.from_record(rec("b", 3))
        ]  # fmt: skip
        unreadable = box.list_rejected()[0]
        assert unreadable.call.body == b"{broken"
        assert unreadable.status == 0
        assert unreadable.last_error is not None
        assert unreadable.last_error.startswith("unreadable record")
        assert box.counts() == _counted_by_scan(outbox_path)
    with contextlib.closing(sqlite3.connect(outbox_path)) as raw:
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
    assert "records" not in tables


EARLIER_LAYOUT = """
CREATE TABLE records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL, seq INTEGER NOT NULL,
    ordering_key TEXT NOT NULL, record TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, status INTEGER, last_error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (name, value) VALUES ('delivered', 0);
"""


def _counted_by_scan(path: Path) -> OutboxCounts:
    """The outbox's counts as a full scan of its rows gives them (the slow, sure way)."""
    with contextlib.closing(sqlite3.connect(path)) as raw:
        by_state = dict(raw.execute("SELECT state, COUNT(*) FROM calls GROUP BY state"))
        (delivered,) = raw.execute("SELECT value FROM meta WHERE name = 'delivered'").fetchone()
    return OutboxCounts(
        pending=by_state.get("pending", 0) + by_state.get("inflight", 0),
        inflight=by_state.get("inflight", 0),
        rejected=by_state.get("rejected", 0),
        delivered=delivered,
    )


def _drop_count_triggers(raw: sqlite3.Connection) -> None:
    """Make the file look as one written before the counts were kept (triggers gone)."""
    for name in ("after_insert", "after_delete", "after_update"):
        raw.execute(f"DROP TRIGGER state_counts_{name}")


@settings(max_examples=40, deadline=None)
@given(
    operations=st.lists(
        st.sampled_from(
            ["put", "put_rejected", "claim", "deliver", "reject", "release", "recover", "requeue"]
        ),
        max_size=30,
    )
)
def test_counts_match_a_scan_of_the_rows_through_every_state_change(
    tmp_path_factory: pytest.TempPathFactory, operations: list[str]
) -> None:
    path = tmp_path_factory.mktemp("counts") / "outbox.sqlite3"
    with Outbox(path) as box:
        inflight: list[int] = []
        for step, operation in enumerate(operations):
            if operation == "put":
                box.put_many([rec("a", step), rec("b", step), rec("a", step + 1)])
            elif operation == "put_rejected":
                box.put_rejected(rec("c", step), 400, "HTTP 400")
            elif operation == "claim":
                inflight += [row.id for row in box.claim_pending(2)]
            elif operation == "deliver":
                box.mark_delivered(inflight[:2])
                del inflight[:2]
            elif operation == "reject" and inflight:
                box.mark_rejected(inflight.pop(0), 422, "HTTP 422")
            elif operation == "release":
                box.release(inflight[:1], error="HTTP 503")
                del inflight[:1]
            elif operation == "recover":
                box.recover_inflight()
                inflight.clear()
            elif operation == "requeue":
                box.requeue_rejected()
            scanned = _counted_by_scan(path)
            assert box.counts() == scanned
            assert box.pending_count() == scanned.pending


def test_has_pending_looks_only_at_the_sessions_waiting_rows_up_to_a_seq(outbox: Outbox) -> None:
    outbox.put_many([rec("a", 0), rec("a", 1)], session=7, seqs=[3, 4])
    outbox.put_many([rec("b", 0)], session=8, seqs=[1])
    (first, _) = outbox.claim_pending(2)

    assert outbox.has_pending(7)
    assert outbox.has_pending(7, up_to_seq=3)  # inflight still waits
    assert not outbox.has_pending(7, up_to_seq=2)
    assert not outbox.has_pending(9)
    assert outbox.has_pending(8)  # pending, never claimed
    outbox.mark_rejected(first.id, 400, "HTTP 400")  # rejected no longer waits
    assert not outbox.has_pending(7, up_to_seq=3)
    assert outbox.has_pending(7, up_to_seq=4)


def test_a_write_waiting_on_the_first_open_is_counted_after_it(outbox_path: Path) -> None:
    """Opening a file from before the triggers waits for another writer, then counts
    what it committed (the recount and the triggers are made in one transaction)."""
    with Outbox(outbox_path) as box:
        box.put_many([rec("a", 0)])
    with contextlib.closing(sqlite3.connect(outbox_path, isolation_level=None)) as raw:
        _drop_count_triggers(raw)
        raw.execute("BEGIN IMMEDIATE")  # another writer holds the file
        raw.execute(
            "INSERT INTO calls (session, seq, ordering_key, kind, method, path, body, state,"
            " created_at, updated_at) SELECT session, seq + 1, ordering_key, kind, method,"
            " path, body, state, created_at, updated_at FROM calls"
        )
        opened: list[Outbox] = []
        opening = threading.Thread(target=lambda: opened.append(Outbox(outbox_path)))
        opening.start()
        opening.join(0.3)
        assert opening.is_alive()  # waiting for the writer to finish
        raw.execute("COMMIT")
        opening.join(10)
    (box,) = opened
    with box:
        assert box.counts() == _counted_by_scan(outbox_path)
        assert box.pending_count() == 2


def test_rows_changed_by_another_writer_are_counted(outbox: Outbox) -> None:
    """The counts are kept by the database itself, whoever writes to it."""
    outbox.put_many([rec("a", i) for i in range(5)])
    with contextlib.closing(sqlite3.connect(outbox.path)) as raw, raw:
        raw.execute("DELETE FROM calls WHERE seq < 2")
        raw.execute("UPDATE calls SET state = 'rejected' WHERE seq = 4")
    assert outbox.counts() == OutboxCounts(pending=2, inflight=0, rejected=1, delivered=0)
    assert outbox.counts() == _counted_by_scan(outbox.path)


def test_an_outbox_from_before_counts_were_kept_is_counted_when_opened(
    outbox_path: Path,
) -> None:
    with Outbox(outbox_path) as box:
        ids = box.put_many([rec("a", i) for i in range(6)])
        box.claim_pending(2)
        box.mark_rejected(ids[0], 400, "HTTP 400")
    with contextlib.closing(sqlite3.connect(outbox_path)) as raw, raw:  # the older file
        _drop_count_triggers(raw)
        raw.execute("DROP TABLE state_counts")
        raw.execute("DELETE FROM calls WHERE seq = 5")  # written while nothing counted
    with Outbox(outbox_path) as box:
        assert box.counts() == OutboxCounts(pending=4, inflight=1, rejected=1, delivered=0)
        box.put_many([rec("b", 0)])
        box.recover_inflight()
        assert box.counts() == _counted_by_scan(outbox_path)
        assert box.pending_count() == 5


def test_rows_survive_reopening(outbox_path: Path) -> None:
    with Outbox(outbox_path) as box:
        box.put_many([rec("a", i) for i in range(3)])
    with Outbox(outbox_path) as box:
        assert box.counts().pending == 3


def test_committed_rows_survive_sigkill(outbox_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from hackagent_otel._delivery.outbox import Outbox
        from hackagent_otel._records import Call, Record
        box = Outbox({str(outbox_path)!r})
        box.put_many([Record("trace", "POST", "/result/k/trace", {{"sequence": i}}, "k")
                      for i in range(50)])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Outbox(outbox_path) as box:
        assert [r.call.parsed_body()["sequence"] for r in box.list_pending()] == list(range(50))


def test_concurrent_writers_from_threads_lose_nothing(outbox: Outbox) -> None:
    def write(key: str) -> None:
        for i in range(20):
            outbox.put_many([rec(key, i)])

    threads = [threading.Thread(target=write, args=(f"k{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = outbox.list_pending()
    assert len(rows) == 80
    for n in range(4):
        seqs = [r.call.parsed_body()["sequence"] for r in rows if r.call.ordering_key == f"k{n}"]
        assert seqs == list(range(20))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_writes_through_its_own_connection(outbox: Outbox) -> None:
    outbox.put_many([rec("parent", 0)])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            outbox.put_many([rec("child", 0)])
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    outbox.put_many([rec("parent", 1)])
    keys = [(r.call.ordering_key, r.call.parsed_body()["sequence"]) for r in outbox.list_pending()]
    assert keys == [("parent", 0), ("child", 0), ("parent", 1)]


def test_drain_lock_admits_one_holder_at_a_time(outbox_path: Path) -> None:
    outbox_path.parent.mkdir(parents=True)
    first = DrainLock(str(outbox_path) + ".lock")
    second = DrainLock(str(outbox_path) + ".lock")
    assert first.try_acquire()
    assert first.try_acquire()  # re-entrant for its holder
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_drain_lock_of_a_killed_process_is_free_again(outbox_path: Path) -> None:
    outbox_path.parent.mkdir(parents=True)
    lock_path = str(outbox_path) + ".lock"
    script = textwrap.dedent(
        f"""
        import sys, time
        from hackagent_otel._delivery.lock import DrainLock
        assert DrainLock({lock_path!r}).try_acquire()
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        assert not DrainLock(lock_path).try_acquire()
    finally:
        proc.kill()
        proc.wait()
    mine = DrainLock(lock_path)
    assert mine.try_acquire()
    mine.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_inherit_or_release_the_parents_drain_lock(
    outbox_path: Path,
) -> None:
    outbox_path.parent.mkdir(parents=True)
    lock = DrainLock(str(outbox_path) + ".lock")
    assert lock.try_acquire()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = not lock.held and not lock.try_acquire()
        lock.release()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not DrainLock(str(outbox_path) + ".lock").try_acquire()  # parent still holds it
    lock.release()


def test_outbox_under_a_regular_file_is_an_outbox_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutboxError, match="cannot open"):
        Outbox(tmp_path / "file" / "outbox.sqlite3")


def test_outbox_on_a_read_only_file_system_is_an_outbox_error() -> None:
    with pytest.raises(OutboxError):
        Outbox("/proc/hackagent-otel/outbox.sqlite3")


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """A directory nobody may create files in: immutable for root, mode 0500 otherwise."""
    path.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o500)
    try:
        yield path
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o700)


def test_outbox_in_a_read_only_directory_is_an_outbox_error(tmp_path: Path) -> None:
    with read_only_directory(tmp_path / "ro") as ro, pytest.raises(OutboxError):
        Outbox(ro / "outbox.sqlite3")


def test_corrupt_file_is_an_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(OutboxError, match="not usable"):
        Outbox(path)


def test_full_database_is_an_outbox_error_and_keeps_earlier_rows(outbox: Outbox) -> None:
    outbox.put_many([rec("a", 0)])
    with sqlite3.connect(outbox.path) as raw:
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
    assert outbox._conn is not None
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now "full"
    with pytest.raises(OutboxError, match="full"):
        outbox.put_many([rec("a", i) for i in range(1, 2000)])
    assert outbox.counts().pending == 1


def test_closed_outbox_raises_outbox_error(outbox_path: Path) -> None:
    box = Outbox(outbox_path)
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.put_many([rec("a", 0)])


def test_an_outbox_remembers_the_api_it_was_made_for(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path, target="http://api.example:8000/") as outbox:
        assert outbox.target == "http://api.example:8000/"
    with Outbox(path) as outbox:
        assert outbox.target == "http://api.example:8000/"


def test_an_outbox_keeps_its_first_target_and_logs_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.sqlite3"
    Outbox(path, target="http://a/").close()
    with caplog.at_level(logging.WARNING), Outbox(path, target="http://b/") as outbox:
        assert outbox.target == "http://a/"
    assert "made for http://a/" in caplog.text


def test_an_outbox_made_with_no_api_has_no_target(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        assert outbox.target is None


def test_a_new_outbox_and_the_folders_it_makes_are_for_the_owner_only(tmp_path: Path) -> None:
    """Its rows hold red-team prompts and answers: mode 0600 for the file and SQLite's
    files beside it, 0700 for each folder it had to make; what existed stays as it was."""
    import stat

    before = stat.S_IMODE(tmp_path.stat().st_mode)
    path = tmp_path / "made" / "deeper" / "outbox.sqlite3"
    with Outbox(path) as outbox:
        outbox.put_many([rec("a", 0)])  # the WAL and shared-memory files exist while open
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}

    assert files == {
        "outbox.sqlite3": 0o600,
        "outbox.sqlite3-wal": 0o600,
        "outbox.sqlite3-shm": 0o600,
    }
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == before
