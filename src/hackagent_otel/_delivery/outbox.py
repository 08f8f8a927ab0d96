"""Outbox: a durable local SQLite store of calls not (yet) delivered.

Rows are ``pending`` (to send), ``inflight`` (claimed by the drainer right now) or
``rejected`` (refused for good by the API: kept with status and reason for inspection and
:meth:`Outbox.requeue_rejected`, never deleted silently). Delivered rows are deleted at
once; a running total of them is kept so :meth:`Outbox.counts` can report it.

A row keeps the exact request: method, path and body bytes as they are sent, so the
drain and ``push`` send what was stored without parsing and encoding it again. A row
may depend on an earlier row's answer (:class:`~hackagent_otel._records.Call`'s
``provides``/``needs``): the value a delivered provider's answer gave is kept in
``bindings`` (in the transaction that deletes the provider), and so is the reason a
provider was rejected, so a dependent is sent with the value filled in, or kept as
rejected with that reason, also by another process after a crash.

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
transaction that adds them. A file written by an earlier version (whole records as JSON
in a ``records`` table) is converted when opened, in one transaction.

Faults: every SQLite or file-system failure becomes :class:`OutboxError`, whose
``transient`` says whether trying again later may work (a lock held past the busy
timeout, a full disk, a read-only file or directory, an I/O error) or not (a file that
is not a database or is corrupt). After a transient failure the connection is opened
afresh on the next use.

Thread-safe (one connection behind a lock) and fork-safe (a child reopens its own
connection; the parent's is left untouched).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hackagent_otel._delivery.lock import DrainLock
from hackagent_otel._forksafe import register
from hackagent_otel._records import Call, Record

__all__ = [
    "Binding",
    "Outbox",
    "OutboxCounts",
    "OutboxError",
    "OutboxRow",
    "Settlement",
]

_log = logging.getLogger("hackagent_otel.delivery")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ordering_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body BLOB NOT NULL,
    provides TEXT,
    needs TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'inflight', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_state_order ON calls (state, session, seq, id);
CREATE INDEX IF NOT EXISTS calls_by_provides ON calls (provides) WHERE provides IS NOT NULL;
CREATE TABLE IF NOT EXISTS bindings (
    name TEXT PRIMARY KEY,
    value TEXT,
    error TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('delivered', 0);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Rows per state, kept by triggers (``state`` is only ever one of these three).
_STATES = ("pending", "inflight", "rejected")
_COUNT_TRIGGERS = {
    "state_counts_after_insert": """
        CREATE TRIGGER state_counts_after_insert AFTER INSERT ON calls BEGIN
            UPDATE state_counts SET row_count = row_count + 1 WHERE state = NEW.state;
        END""",
    "state_counts_after_delete": """
        CREATE TRIGGER state_counts_after_delete AFTER DELETE ON calls BEGIN
            UPDATE state_counts SET row_count = row_count - 1 WHERE state = OLD.state;
        END""",
    "state_counts_after_update": """
        CREATE TRIGGER state_counts_after_update AFTER UPDATE OF state ON calls
        WHEN OLD.state <> NEW.state BEGIN
            UPDATE state_counts SET row_count = row_count - 1 WHERE state = OLD.state;
            UPDATE state_counts SET row_count = row_count + 1 WHERE state = NEW.state;
        END""",
}
_COUNT_OBJECTS = {"state_counts", *_COUNT_TRIGGERS}
_COLUMNS = (
    "id, session, seq, ordering_key, kind, method, path, body, provides, needs, state,"
    " attempts, status, last_error, created_at, updated_at"
)
_ORDER = "ORDER BY session, seq, id"
_MAX_VARS = 500
#: Rows per multi-row INSERT: 11 values each, under SQLite's oldest variable limit (999).
_ROWS_PER_INSERT = 90
#: sqlite3 binds exact ints, floats, strs and bytearrays as they are; anything else
#: (``bytes``, ``None``) it first offers to adapters, two failed attribute lookups that
#: build AttributeErrors: 13% of an export's commit. So :meth:`Outbox.put_many`
#: binds bodies as bytearrays and a missing provides or needs as this int, which
#: ``NULLIF(?, 0)`` stores as NULL (a text value never equals an integer in SQLite).
_NO_VALUE = 0
_ROW_VALUES = "(?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0), ?, 'pending', ?)"
#: SQLite result codes of files that trying again cannot fix.
_PERMANENT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT"})
_PERMANENT_TEXT = ("file is not a database", "malformed", "file is encrypted")
#: After these the connection is still fine; after other errors it is opened afresh.
_KEEPS_CONNECTION = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_CONSTRAINT"})

# Connections inherited across fork are never closed in the child (SQLite forbids
# using them there); they are parked here so garbage collection does not close them.
_ABANDONED: list[sqlite3.Connection] = []
_LIVE: weakref.WeakSet[Outbox] = weakref.WeakSet()
# Held while a connection is being opened, and across fork (see _before_fork).
_OPENING = threading.Lock()


class OutboxError(Exception):
    """The outbox cannot be used now: locked past the busy timeout, full disk, read-only
    file or folder, corrupt file.

    ``transient`` is False only when trying again cannot help (not a database, corrupt).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


def _create_for_owner_only(path: Path) -> None:
    """Make the outbox's missing folders (mode 0700) and its file (0600): its rows hold
    red-team prompts and answers. SQLite gives the ``-wal`` and ``-shm`` files the
    database file's mode. Folders and files that exist are left as they are."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):
            made.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _error(context: str, exc: BaseException) -> OutboxError:
    """An :class:`OutboxError` for ``exc``, classified as transient or not."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    permanent = name in _PERMANENT or (
        not name and any(marker in text for marker in _PERMANENT_TEXT)
    )
    error = OutboxError(f"{context}: {exc}", transient=not permanent)
    error.__cause__ = exc
    return error


@dataclass(frozen=True)
class OutboxRow:
    """One stored call with its bookkeeping."""

    id: int
    call: Call
    state: Literal["pending", "inflight", "rejected"]
    attempts: int
    status: int | None
    last_error: str | None
    session: int
    seq: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class OutboxCounts:
    """How many rows are ``pending`` (including ``inflight``), rejected and delivered."""

    pending: int
    inflight: int
    rejected: int
    delivered: int


@dataclass(frozen=True)
class Binding:
    """What a provider's answer gave its dependents: the ``value`` (an id), or the
    ``error`` it was rejected with."""

    value: str | None
    error: str | None = None


@dataclass
class Settlement:
    """How a drained batch went, written to the outbox in one transaction.

    ``delivered`` rows are deleted, ``bindings`` (provider name -> value) are kept for
    their dependents, ``rejected`` rows (id, status, reason) are kept for inspection
    (a rejected provider's reason is kept for its dependents), ``failed`` rows (id,
    reason) go back to pending with an attempt counted, ``released`` rows go back to
    pending as they were.
    """

    delivered: list[int] = field(default_factory=list)
    bindings: dict[str, str] = field(default_factory=dict)
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.delivered or self.rejected or self.failed or self.released)


class Outbox:
    """The SQLite outbox at ``path``, opened now (where the file is, the settings say).

    ``target``: the base URL of the HackAgent API its records are for (never a key). A
    new file records it, so ``hackagent-otel push`` later knows where each outbox's
    records go; an existing file keeps the target it was made for (a different one is
    logged and ignored). ``None`` records nothing: records made with no API.

    Raises :class:`OutboxError` if the file cannot be created or is not a database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        target: str | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
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
        calls: Iterable[Call | Record],
        *,
        session: int | None = None,
        seqs: Sequence[int] | None = None,
    ) -> list[int]:
        """Store ``calls`` as pending in one transaction; returns their row ids.

        ``session``/``seqs`` give their place in the claim order (default: now, and
        their position in ``calls``). A :class:`Record` is encoded first (``TypeError``
        or ``ValueError`` if its body is not JSON; then nothing is stored).
        """
        items = [c if isinstance(c, Call) else Call.from_record(c) for c in calls]
        if seqs is not None and len(seqs) != len(items):
            raise ValueError("seqs must match calls one to one")
        session = time.time_ns() if session is None else session
        now = time.time()
        # Bound as sqlite3 binds them without "adapting" (see _NO_VALUE): the body as a
        # bytearray (stored as the same BLOB), a missing provides/needs as 0, which
        # NULLIF turns into NULL.
        rows = [
            (
                session,
                seqs[i] if seqs is not None else i,
                c.ordering_key,
                c.kind,
                c.method,
                c.path,
                bytearray(c.body),
                _NO_VALUE if c.provides is None else c.provides,
                _NO_VALUE if c.needs is None else c.needs,
                c.created_at or now,
                now,
            )
            for i, c in enumerate(items)
        ]
        if not rows:
            return []
        with self._transaction() as conn:
            # Multi-row INSERTs: one statement per chunk instead of one per row (the
            # bridge writes a whole export at a time), within SQLite's variable limit.
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                last = conn.execute(
                    "INSERT INTO calls (session, seq, ordering_key, kind, method, path, body,"
                    " provides, needs, created_at, state, updated_at) VALUES "
                    + ",".join([_ROW_VALUES] * len(chunk)),
                    [value for row in chunk for value in row],
                ).lastrowid
        # The transaction held the write lock, and AUTOINCREMENT gives each row the next
        # id: they are consecutive, ending at the last row's.
        assert last is not None
        return list(range(last - len(rows) + 1, last + 1))

    def put_rejected(
        self,
        call: Call | Record,
        status: int,
        reason: str,
        *,
        session: int | None = None,
        seq: int = 0,
    ) -> int:
        """Keep a call the API refused for good, for inspection; returns its row id.

        A rejected provider's reason is kept for its dependents too.
        """
        item = call if isinstance(call, Call) else Call.from_record(call)
        now = time.time()
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO calls (session, seq, ordering_key, kind, method, path, body,"
                " provides, needs, state, attempts, status, last_error, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'rejected', 1, ?, ?, ?, ?)",
                (
                    time.time_ns() if session is None else session,
                    seq,
                    item.ordering_key,
                    item.kind,
                    item.method,
                    item.path,
                    item.body,
                    item.provides,
                    item.needs,
                    status,
                    reason,
                    item.created_at or now,
                    now,
                ),
            )
            if item.provides is not None:
                _keep_binding(conn, item.provides, None, reason, now)
            return int(cursor.lastrowid or 0)

    def claim_pending(self, limit: int) -> list[OutboxRow]:
        """Mark up to ``limit`` pending rows ``inflight`` and return them in claim order."""
        now = time.time()
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM calls WHERE state = 'pending' {_ORDER} LIMIT ?",
                (limit,),
            ).fetchall()
            claimed = [_row(row, state="inflight") for row in rows]
            for chunk in _chunks([r.id for r in claimed]):
                conn.execute(
                    f"UPDATE calls SET state = 'inflight', updated_at = ?"
                    f" WHERE id IN ({','.join('?' * len(chunk))})",
                    (now, *chunk),
                )
        return claimed

    def settle(self, settlement: Settlement) -> None:
        """Record how a drained batch went, in one transaction (see :class:`Settlement`)."""
        if not settlement and not settlement.bindings:
            return
        now = time.time()
        with self._transaction() as conn:
            for name, value in settlement.bindings.items():
                _keep_binding(conn, name, value, None, now)
            deleted = 0
            for chunk in _chunks(settlement.delivered):
                marks = ",".join("?" * len(chunk))
                deleted += conn.execute(f"DELETE FROM calls WHERE id IN ({marks})", chunk).rowcount
            if deleted:
                conn.execute(
                    "UPDATE meta SET value = value + ? WHERE name = 'delivered'", (deleted,)
                )
            for row_id, status, reason in settlement.rejected:
                conn.execute(
                    "UPDATE calls SET state = 'rejected', status = ?, last_error = ?,"
                    " attempts = attempts + 1, updated_at = ? WHERE id = ?",
                    (status, reason, now, row_id),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO bindings (name, value, error, created_at)"
                    " SELECT provides, NULL, ?, ? FROM calls WHERE id = ? AND provides IS NOT NULL",
                    (reason, now, row_id),
                )
            for row_id, reason in settlement.failed:
                conn.execute(
                    "UPDATE calls SET state = 'pending', updated_at = ?, attempts = attempts + 1,"
                    " last_error = ? WHERE state = 'inflight' AND id = ?",
                    (now, reason, row_id),
                )
            for chunk in _chunks(settlement.released):
                conn.execute(
                    f"UPDATE calls SET state = 'pending', updated_at = ?"
                    f" WHERE state = 'inflight' AND id IN ({','.join('?' * len(chunk))})",
                    (now, *chunk),
                )

    def mark_delivered(self, ids: Iterable[int], bindings: dict[str, str] | None = None) -> None:
        """Delete delivered rows, add them to the delivered total, keep ``bindings``."""
        self.settle(Settlement(delivered=list(ids), bindings=dict(bindings or {})))

    def mark_rejected(self, row_id: int, status: int, reason: str) -> None:
        """Move a row to ``rejected`` with the API's status and reason."""
        self.settle(Settlement(rejected=[(row_id, status, reason)]))

    def release(self, ids: Iterable[int], error: str | None = None) -> None:
        """Put claimed rows back to pending; with ``error``, count a failed attempt."""
        id_list = list(ids)
        if error is None:
            self.settle(Settlement(released=id_list))
        else:
            self.settle(Settlement(failed=[(row_id, error) for row_id in id_list]))

    def recover_inflight(self) -> int:
        """Return every ``inflight`` row to pending (their drainer is gone); the count.

        Call it only while holding :attr:`drain_lock`.
        """
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE calls SET state = 'pending', updated_at = ? WHERE state = 'inflight'",
                (time.time(),),
            ).rowcount

    def requeue_rejected(self, ids: Iterable[int] | None = None) -> int:
        """Make rejected rows (all, or ``ids``) pending again; returns how many.

        A requeued provider is tried again, so the rejection its dependents would
        inherit is forgotten.
        """
        now = time.time()
        forget = (
            "DELETE FROM bindings WHERE value IS NULL AND name IN"
            " (SELECT provides FROM calls WHERE state = 'rejected' AND provides IS NOT NULL {})"
        )
        with self._transaction() as conn:
            if ids is None:
                conn.execute(forget.format(""))
                return conn.execute(
                    "UPDATE calls SET state = 'pending', updated_at = ? WHERE state = 'rejected'",
                    (now,),
                ).rowcount
            count = 0
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                conn.execute(forget.format(f"AND id IN ({marks})"), chunk)
                count += conn.execute(
                    f"UPDATE calls SET state = 'pending', updated_at = ?"
                    f" WHERE state = 'rejected' AND id IN ({marks})",
                    (now, *chunk),
                ).rowcount
            return count

    def probe(self) -> None:
        """Take and give back the write lock: raises :class:`OutboxError` while the
        outbox cannot be written (locked, read-only, full), returns once it can."""
        with self._transaction() as conn:
            conn.execute("UPDATE meta SET value = value WHERE name = 'delivered'")

    # -- reading -----------------------------------------------------------------------
    def binding(self, name: str) -> Binding | None:
        """What the provider ``name`` gave its dependents, if it was settled."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT value, error FROM bindings WHERE name = ?", (name,)
            ).fetchone()
        return None if found is None else Binding(found[0], found[1])

    def provider_waiting(self, name: str) -> bool:
        """Whether the row that provides ``name`` is still pending or inflight."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM calls WHERE provides = ?"
                " AND state IN ('pending', 'inflight'))",
                (name,),
            )
            return bool(found.fetchone()[0])

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
                "SELECT EXISTS (SELECT 1 FROM calls"
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
                f"SELECT {_COLUMNS} FROM calls WHERE {where} {_ORDER} LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [_row(row) for row in rows]

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
            _create_for_owner_only(self.path)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise _error(f"cannot open the outbox at {self.path}", exc) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(_SCHEMA)
            _convert_records_table(conn)
            _ensure_state_counts(conn)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise _error(f"the outbox at {self.path} is not usable", exc) from exc
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
                if getattr(exc, "sqlite_errorname", None) not in _KEEPS_CONNECTION:
                    self._drop_connection()
                raise _error(f"outbox {self.path}", exc) from exc

    def _drop_connection(self) -> None:
        """Forget a connection that failed; the next use opens the file afresh."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

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


def _keep_binding(
    conn: sqlite3.Connection, name: str, value: str | None, error: str | None, now: float
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO bindings (name, value, error, created_at) VALUES (?, ?, ?, ?)",
        (name, value, error, now),
    )


def _convert_records_table(conn: sqlite3.Connection) -> None:
    """Move the rows of a file written by an earlier version (whole records as JSON in
    ``records``) into ``calls``, keeping their order, state and history, in one
    transaction. A row whose JSON cannot be read is kept as rejected, with its text."""
    if "records" not in _schema_names(conn):
        return
    with _write_transaction(conn):
        if "records" not in _schema_names(conn):  # another process got there first
            return
        old = conn.execute(
            "SELECT session, seq, record, state, attempts, status, last_error, created_at,"
            " updated_at FROM records ORDER BY id"
        ).fetchall()
        for session, seq, text, *history, created, updated in old:
            state, attempts, status, last_error = history
            try:
                call = Call.from_record(Record.from_json(text))
            except (TypeError, ValueError) as exc:
                call = Call("unknown", "", "", str(text).encode("utf-8", "replace"), "")
                state, status, last_error = "rejected", 0, f"unreadable record: {exc}"
            conn.execute(
                "INSERT INTO calls (session, seq, ordering_key, kind, method, path, body,"
                " provides, needs, state, attempts, status, last_error, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session,
                    seq,
                    call.ordering_key,
                    call.kind,
                    call.method,
                    call.path,
                    call.body,
                    call.provides,
                    call.needs,
                    state,
                    attempts,
                    status,
                    last_error,
                    created,
                    updated,
                ),
            )
        conn.execute("DROP TABLE records")
        # The counts were kept for the old table: count the new one afresh.
        for name in _COUNT_OBJECTS:
            kind = "TABLE" if name == "state_counts" else "TRIGGER"
            conn.execute(f"DROP {kind} IF EXISTS {name}")
    _log.info("outbox converted: %d rows moved to the current layout", len(old))


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
            " VALUES (?, (SELECT COUNT(*) FROM calls WHERE state = ?))",
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


register(_after_fork_in_child, before=_before_fork, after_in_parent=_after_fork_in_parent)


def _row(row: tuple[object, ...], *, state: str | None = None) -> OutboxRow:
    (
        row_id, session, seq, key, kind, method, path, body, provides, needs, stored_state,
        attempts, status, last_error, created, updated,
    ) = row  # fmt: skip
    call = Call(
        str(kind),
        str(method),
        str(path),
        bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else str(body).encode(),
        str(key),
        float(created),  # type: ignore[arg-type]
        provides if isinstance(provides, str) else None,
        needs if isinstance(needs, str) else None,
    )
    return OutboxRow(
        id=int(row_id),  # type: ignore[call-overload]
        call=call,
        state=state or stored_state,  # type: ignore[arg-type]
        attempts=int(attempts),  # type: ignore[call-overload]
        status=None if status is None else int(status),  # type: ignore[call-overload]
        last_error=None if last_error is None else str(last_error),
        session=int(session),  # type: ignore[call-overload]
        seq=int(seq),  # type: ignore[call-overload]
        created_at=float(created),  # type: ignore[arg-type]
        updated_at=float(updated),  # type: ignore[arg-type]
    )


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _MAX_VARS):
        yield ids[start : start + _MAX_VARS]
