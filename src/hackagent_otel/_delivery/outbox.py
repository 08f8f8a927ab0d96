"""Outbox: a durable local SQLite store of records not (yet) delivered.

Rows are ``pending`` (to send), ``inflight`` (claimed by the drainer right now) or
``rejected`` (refused for good by the API: kept with status and reason for inspection and
:meth:`Outbox.requeue_rejected`, never deleted silently). Delivered rows are deleted at
once; a running total of them is kept so :meth:`Outbox.counts` can report it.

Order: rows are claimed by ``(session, seq)``, where ``session`` is the time (ns) the
writing service started and ``seq`` its submission counter. A service therefore gets its
records back in submission order even when they reached the outbox in another order
(a retry that gave up after newer records were spilled), and rows left by an earlier
process come before a later process's rows.

Durability: WAL journal with ``synchronous=NORMAL`` (default). A committed transaction
is in the operating system's hands before ``commit`` returns, so it survives the process
being killed (SIGKILL included); only an OS crash or power loss can take the last commits
back. ``synchronous="FULL"`` adds an fsync per commit for those too.

Counting is O(1) however large the outbox grows: SQLite triggers keep the number of
rows in each state in ``state_counts`` as rows are written, claimed, released, rejected
or deleted, by this module, another process or a plain ``INSERT``, ``UPDATE`` or
``DELETE`` by hand (``REPLACE`` deletes without firing them). A file from before the
triggers, or missing any part of them, is counted afresh when opened, in the
transaction that adds them.

Thread-safe (one connection behind a lock) and fork-safe (a child reopens its own
connection; the parent's is left untouched). Every SQLite or file-system failure becomes
:class:`OutboxError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hackagent_otel._delivery.lock import DrainLock
from hackagent_otel._records import Record

__all__ = [
    "OUTBOX_PATH_ENV",
    "Outbox",
    "OutboxCounts",
    "OutboxError",
    "OutboxRow",
    "default_outbox_path",
]

_log = logging.getLogger("hackagent_otel.delivery")

#: Environment variable naming the outbox file.
OUTBOX_PATH_ENV = "HACKAGENT_OUTBOX_PATH"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ordering_key TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'inflight', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_state_order ON records (state, session, seq, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('delivered', 0);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Rows per state, kept by triggers (``state`` is only ever one of these three).
_STATES = ("pending", "inflight", "rejected")
_COUNT_TRIGGERS = {
    "state_counts_after_insert": """
        CREATE TRIGGER state_counts_after_insert AFTER INSERT ON records BEGIN
            UPDATE state_counts SET row_count = row_count + 1 WHERE state = NEW.state;
        END""",
    "state_counts_after_delete": """
        CREATE TRIGGER state_counts_after_delete AFTER DELETE ON records BEGIN
            UPDATE state_counts SET row_count = row_count - 1 WHERE state = OLD.state;
        END""",
    "state_counts_after_update": """
        CREATE TRIGGER state_counts_after_update AFTER UPDATE OF state ON records
        WHEN OLD.state <> NEW.state BEGIN
            UPDATE state_counts SET row_count = row_count - 1 WHERE state = OLD.state;
            UPDATE state_counts SET row_count = row_count + 1 WHERE state = NEW.state;
        END""",
}
_COUNT_OBJECTS = {"state_counts", *_COUNT_TRIGGERS}
_COLUMNS = "id, session, seq, record, state, attempts, status, last_error, created_at, updated_at"
_ORDER = "ORDER BY session, seq, id"
_MAX_VARS = 500
#: Rows per multi-row INSERT: 6 values each, under SQLite's oldest variable limit (999).
_ROWS_PER_INSERT = 160

# Connections inherited across fork are never closed in the child (SQLite forbids
# using them there); they are parked here so garbage collection does not close them.
_ABANDONED: list[sqlite3.Connection] = []
_LIVE: weakref.WeakSet[Outbox] = weakref.WeakSet()
# Held while a connection is being opened, and across fork (see _before_fork).
_OPENING = threading.Lock()


class OutboxError(Exception):
    """The outbox cannot be used: unwritable or read-only location, full disk, corrupt file."""


@dataclass(frozen=True)
class OutboxRow:
    """One stored record with its bookkeeping.

    ``record`` is ``None`` only for a rejected row whose stored text could not be read
    back (``raw`` still has it); claimed rows always carry their record.
    """

    id: int
    record: Record | None
    state: Literal["pending", "inflight", "rejected"]
    attempts: int
    status: int | None
    last_error: str | None
    session: int
    seq: int
    created_at: float
    updated_at: float
    raw: str

    @property
    def sendable(self) -> Record:
        """The record, for rows known to be readable (claimed rows)."""
        if self.record is None:
            raise ValueError(f"outbox row {self.id} holds an unreadable record")
        return self.record


@dataclass(frozen=True)
class OutboxCounts:
    """How many rows are ``pending`` (including ``inflight``), rejected and delivered."""

    pending: int
    inflight: int
    rejected: int
    delivered: int


def default_outbox_path() -> Path:
    """Where the outbox lives unless told otherwise.

    ``$HACKAGENT_OUTBOX_PATH`` if set, else
    ``${XDG_STATE_HOME:-~/.local/state}/hackagent-otel/outbox.sqlite3``.
    """
    explicit = os.environ.get(OUTBOX_PATH_ENV)
    if explicit:
        return Path(explicit).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
    return Path(state_home).expanduser() / "hackagent-otel" / "outbox.sqlite3"


class Outbox:
    """The SQLite outbox at ``path`` (default :func:`default_outbox_path`), opened now.

    ``target``: the base URL of the HackAgent API its records are for (never a key). A
    new file records it, so ``hackagent-otel push`` later knows where each outbox's
    records go; an existing file keeps the target it was made for (a different one is
    logged and ignored). ``None`` records nothing: records made with no API.

    Raises :class:`OutboxError` if the file cannot be created or is not a database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        target: str | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path) if path is not None else default_outbox_path()
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        with _OPENING, self._lock:
            self._conn = self._open()
            _LIVE.add(self)
        self.drain_lock = DrainLock(str(self.path) + ".lock")
        if target is not None:
            self._record_target(target)

    @property
    def target(self) -> str | None:
        """The base URL of the API this outbox's records are for, if it was recorded."""
        with self._connection() as conn:
            found = conn.execute("SELECT value FROM info WHERE name = 'target'").fetchone()
        return str(found[0]) if found else None

    def _record_target(self, target: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO info (name, value) VALUES ('target', ?)", (target,))
            recorded = conn.execute("SELECT value FROM info WHERE name = 'target'").fetchone()[0]
        if recorded != target:
            _log.warning(
                "outbox %s was made for %s; its records stay addressed there, not to %s",
                self.path,
                recorded,
                target,
            )

    # -- writing -----------------------------------------------------------------------
    def put_many(
        self,
        records: Iterable[Record],
        *,
        session: int | None = None,
        seqs: Sequence[int] | None = None,
    ) -> list[int]:
        """Store ``records`` as pending in one transaction; returns their row ids.

        ``session``/``seqs`` give their place in the claim order (default: now, and
        their position in ``records``).
        """
        items = list(records)
        if seqs is not None and len(seqs) != len(items):
            raise ValueError("seqs must match records one to one")
        session = time.time_ns() if session is None else session
        now = time.time()
        rows = [
            (session, seqs[i] if seqs is not None else i, r.ordering_key, r.to_json(), now, now)
            for i, r in enumerate(items)
        ]
        if not rows:
            return []
        with self._transaction() as conn:
            first = conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0]
            # Multi-row INSERTs: one statement per chunk instead of one per row (the
            # bridge writes a whole export at a time), within SQLite's variable limit.
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(
                    "INSERT INTO records (session, seq, ordering_key, record, state,"
                    " created_at, updated_at) VALUES "
                    + ",".join(["(?, ?, ?, ?, 'pending', ?, ?)"] * len(chunk)),
                    [value for row in chunk for value in row],
                )
            found = conn.execute("SELECT id FROM records WHERE id > ? ORDER BY id", (first,))
            return [int(row[0]) for row in found.fetchall()]

    def put_rejected(
        self,
        record: Record,
        status: int,
        reason: str,
        *,
        session: int | None = None,
        seq: int = 0,
    ) -> int:
        """Keep a record the API refused for good, for inspection; returns its row id."""
        now = time.time()
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO records (session, seq, ordering_key, record, state, attempts,"
                " status, last_error, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'rejected', 1, ?, ?, ?, ?)",
                (
                    time.time_ns() if session is None else session,
                    seq,
                    record.ordering_key,
                    record.to_json(),
                    status,
                    reason,
                    now,
                    now,
                ),
            )
            return int(cursor.lastrowid or 0)

    def claim_pending(self, limit: int) -> list[OutboxRow]:
        """Mark up to ``limit`` pending rows ``inflight`` and return them in claim order.

        Rows whose stored record cannot be read are moved to ``rejected`` instead.
        """
        now = time.time()
        claimed: list[OutboxRow] = []
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE state = 'pending' {_ORDER} LIMIT ?",
                (limit,),
            ).fetchall()
            unreadable: list[tuple[float, str, int]] = []
            for row in rows:
                try:
                    claimed.append(_row(row, state="inflight"))
                except ValueError as exc:
                    unreadable.append((now, f"unreadable record: {exc}", row[0]))
            conn.executemany(
                "UPDATE records SET state = 'rejected', status = 0, updated_at = ?,"
                " last_error = ? WHERE id = ?",
                unreadable,
            )
            conn.executemany(
                "UPDATE records SET state = 'inflight', updated_at = ? WHERE id = ?",
                [(now, r.id) for r in claimed],
            )
        return claimed

    def mark_delivered(self, ids: Iterable[int]) -> None:
        """Delete delivered rows and add them to the delivered total."""
        id_list = list(ids)
        if not id_list:
            return
        with self._transaction() as conn:
            deleted = 0
            for chunk in _chunks(id_list):
                marks = ",".join("?" * len(chunk))
                deleted += conn.execute(
                    f"DELETE FROM records WHERE id IN ({marks})", chunk
                ).rowcount
            conn.execute("UPDATE meta SET value = value + ? WHERE name = 'delivered'", (deleted,))

    def mark_rejected(self, row_id: int, status: int, reason: str) -> None:
        """Move a row to ``rejected`` with the API's status and reason."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE records SET state = 'rejected', status = ?, last_error = ?,"
                " attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (status, reason, time.time(), row_id),
            )

    def release(self, ids: Iterable[int], error: str | None = None) -> None:
        """Put claimed rows back to pending; with ``error``, count a failed attempt."""
        id_list = list(ids)
        if not id_list:
            return
        now = time.time()
        with self._transaction() as conn:
            for chunk in _chunks(id_list):
                marks = ",".join("?" * len(chunk))
                if error is None:
                    conn.execute(
                        f"UPDATE records SET state = 'pending', updated_at = ?"
                        f" WHERE state = 'inflight' AND id IN ({marks})",
                        (now, *chunk),
                    )
                else:
                    conn.execute(
                        f"UPDATE records SET state = 'pending', updated_at = ?,"
                        f" attempts = attempts + 1, last_error = ?"
                        f" WHERE state = 'inflight' AND id IN ({marks})",
                        (now, error, *chunk),
                    )

    def recover_inflight(self) -> int:
        """Return every ``inflight`` row to pending (their drainer is gone); the count.

        Call it only while holding :attr:`drain_lock`.
        """
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE records SET state = 'pending', updated_at = ? WHERE state = 'inflight'",
                (time.time(),),
            ).rowcount

    def requeue_rejected(self, ids: Iterable[int] | None = None) -> int:
        """Make rejected rows (all, or ``ids``) pending again; returns how many."""
        now = time.time()
        with self._transaction() as conn:
            if ids is None:
                return conn.execute(
                    "UPDATE records SET state = 'pending', updated_at = ? WHERE state = 'rejected'",
                    (now,),
                ).rowcount
            count = 0
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                count += conn.execute(
                    f"UPDATE records SET state = 'pending', updated_at = ?"
                    f" WHERE state = 'rejected' AND id IN ({marks})",
                    (now, *chunk),
                ).rowcount
            return count

    # -- reading -----------------------------------------------------------------------
    def counts(self) -> OutboxCounts:
        """Row counts by state, and the delivered total."""
        with self._connection() as conn:
            by_state = dict(conn.execute("SELECT state, row_count FROM state_counts").fetchall())
            delivered = conn.execute("SELECT value FROM meta WHERE name = 'delivered'").fetchone()
        inflight = int(by_state.get("inflight", 0))
        return OutboxCounts(
            pending=int(by_state.get("pending", 0)) + inflight,
            inflight=inflight,
            rejected=int(by_state.get("rejected", 0)),
            delivered=int(delivered[0]) if delivered else 0,
        )

    def pending_count(self) -> int:
        """Pending and inflight rows (read from the kept counts, not by scanning)."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT COALESCE(SUM(row_count), 0) FROM state_counts"
                " WHERE state IN ('pending', 'inflight')"
            )
            return int(found.fetchone()[0])

    def has_pending(self, session: int, *, up_to_seq: int | None = None) -> bool:
        """Whether rows ``session`` wrote still wait, pending or inflight (only those
        with ``seq`` at most ``up_to_seq``, if given): one index lookup, however many."""
        seq_limit = (1 << 63) - 1 if up_to_seq is None else up_to_seq
        with self._connection() as conn:
            found = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM records"
                " WHERE state IN ('pending', 'inflight') AND session = ? AND seq <= ?)",
                (session, seq_limit),
            )
            return bool(found.fetchone()[0])

    def list_pending(self, limit: int | None = None) -> list[OutboxRow]:
        """Pending and inflight rows in claim order."""
        return self._list("state IN ('pending', 'inflight')", limit)

    def list_rejected(self, limit: int | None = None) -> list[OutboxRow]:
        """Rejected rows in their original order, with status and reason."""
        return self._list("state = 'rejected'", limit)

    def _list(self, where: str, limit: int | None) -> list[OutboxRow]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE {where} {_ORDER} LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [_row(row, strict=False) for row in rows]

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection and give up the drain lock; idempotent."""
        self.drain_lock.release()
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the outbox at {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(_SCHEMA)
            _ensure_state_counts(conn)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise OutboxError(f"the outbox at {self.path} is not usable: {exc}") from exc
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._closed:
                raise OutboxError(f"the outbox at {self.path} is closed")
            if self._conn is None:
                self._conn = self._open()
            try:
                yield self._conn
            except (sqlite3.Error, OSError) as exc:
                raise OutboxError(f"outbox {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn, _write_transaction(conn):
            yield conn

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        if self._conn is not None:
            _ABANDONED.append(self._conn)
            self._conn = None


def _ensure_state_counts(conn: sqlite3.Connection) -> None:
    """Give the file its per-state row counts and the triggers that keep them.

    Where the table or a trigger is missing (a new file, or one written before counts
    were kept), all of them are made and the rows counted afresh, in one transaction,
    so no write from another process falls between the count and the triggers.
    """
    if _schema_names(conn) >= _COUNT_OBJECTS:
        return
    with _write_transaction(conn):
        if _schema_names(conn) >= _COUNT_OBJECTS:  # another process got there first
            return
        conn.execute(
            "CREATE TABLE IF NOT EXISTS state_counts"
            " (state TEXT PRIMARY KEY, row_count INTEGER NOT NULL) WITHOUT ROWID"
        )
        for name, create in _COUNT_TRIGGERS.items():
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            conn.execute(create)
        conn.execute("DELETE FROM state_counts")
        conn.executemany(
            "INSERT INTO state_counts (state, row_count)"
            " VALUES (?, (SELECT COUNT(*) FROM records WHERE state = ?))",
            [(state, state) for state in _STATES],
        )


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock, waiting for it up to the busy timeout), then
    ``COMMIT``, or ``ROLLBACK`` if the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _schema_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


_HELD_ACROSS_FORK: list[threading.Lock] = []


def _before_fork() -> None:
    """Let in-progress outbox work finish, and hold it off until the fork is done.

    SQLite keeps per-process lock bookkeeping in memory; a child forked while another
    thread is inside a transaction inherits that state and finds the database locked
    by a connection that, in the child, will never finish. Holding every outbox lock
    across the fork guarantees no transaction is open at that moment.
    """
    _OPENING.acquire()
    _HELD_ACROSS_FORK.clear()
    for outbox in sorted(_LIVE, key=id):
        outbox._lock.acquire()
        _HELD_ACROSS_FORK.append(outbox._lock)


def _after_fork_in_parent() -> None:
    while _HELD_ACROSS_FORK:
        _HELD_ACROSS_FORK.pop().release()
    _OPENING.release()


def _after_fork_in_child() -> None:
    global _OPENING
    _HELD_ACROSS_FORK.clear()
    _OPENING = threading.Lock()
    for outbox in list(_LIVE):
        outbox._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _row(
    row: tuple[int, int, int, str, str, int, int | None, str | None, float, float],
    *,
    state: str | None = None,
    strict: bool = True,
) -> OutboxRow:
    """Build a row; an unreadable record raises ``ValueError`` unless not ``strict``."""
    row_id, session, seq, text, stored_state, attempts, status, last_error, created, updated = row
    try:
        record: Record | None = Record.from_json(text)
    except ValueError:
        if strict:
            raise
        record = None
    return OutboxRow(
        id=row_id,
        record=record,
        state=state or stored_state,  # type: ignore[arg-type]
        attempts=attempts,
        status=status,
        last_error=last_error,
        session=session,
        seq=seq,
        created_at=created,
        updated_at=updated,
        raw=text,
    )


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _MAX_VARS):
        yield ids[start : start + _MAX_VARS]
