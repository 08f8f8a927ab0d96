"""DeliveryService: records go out in the background, in order per key, and are not lost.

``submit`` only appends to a bounded in-memory queue; background threads do all I/O.

Threads. ``senders`` sender threads each own a partition of the queue, chosen by
``hash(ordering_key)``: records with the same key share a thread, so they leave in
submission order while different keys travel in parallel on their own keep-alive
connections. A coordinator thread handles the outbox.

Two modes.

* ``direct``: senders send from the queue. A transient failure is retried with the
  policy's jittered backoff (honouring ``Retry-After``) for up to
  ``policy.max_elapsed`` seconds.
* ``spooling``: entered when a retry budget runs out, when the queue overflows (the
  caller then writes the whole queue plus its record to the outbox in one transaction:
  the documented back-pressure under overload), when the outbox holds pending rows at
  start (e.g. left by a killed process), or for good when there is no sender (the outbox
  is then the sink, for ``hackagent-otel push`` later). Senders stop taking records; once
  the in-flight ones are settled, the coordinator moves everything queued to the outbox
  and drains it in claim order, in batches spread over the senders by key, probing with
  backoff while the API is down. When the outbox is empty it returns to ``direct``.
  While that drain is delivering, ``force_flush`` and ``shutdown`` wait for it (within
  their timeout) to deliver their records after the older rows, so a short-lived process
  that finds rows left behind delivers them and its own; while the API is down they only
  make sure the records are committed to the outbox.

Order per key holds across retries and spills because each record gets a submission
number when submitted and the outbox hands rows back by that number; draining starts
only after every record still in memory or in flight has reached the outbox or been
settled. Only one process drains an outbox at a time (its drain lock); others append.

Outcomes: 2xx is sent; 408/429/502/503/504, timeouts and connection errors are
transient; anything else is final and goes to the outbox's rejected rows with status and
reason. Every rejection and drop is counted and logged on ``hackagent_otel.delivery``.
If the outbox is unusable (disk trouble), the service keeps delivering from memory,
retrying without end, and drops (counts and logs) what no longer fits.

Fork: a child process starts with an empty queue (the inherited records belong to the
parent, which still delivers them), its own threads, connections and outbox handle.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow
from hackagent_otel._delivery.outcome import (
    Delivered,
    Outcome,
    Rejected,
    Sender,
    Transient,
    request_or_rejection,
)
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._records import Record

__all__ = ["DeliveryService", "DeliveryStats"]

_log = logging.getLogger("hackagent_otel.delivery")
_LIVE: weakref.WeakSet[DeliveryService] = weakref.WeakSet()

Mode = Literal["direct", "spooling"]


@dataclass(frozen=True)
class DeliveryStats:
    """Counters since the service started (in a forked child: since the fork).

    ``sent`` counts records the API accepted, including rows drained from the outbox
    that other processes left there. ``spooled`` counts records this service wrote to
    the outbox as pending. ``queued`` is what waits in memory (including in flight);
    ``outbox_pending`` is read from the outbox (``None`` if it is not usable).
    """

    submitted: int
    sent: int
    retried: int
    spooled: int
    rejected: int
    dropped: int
    queued: int
    outbox_pending: int | None
    mode: Mode


@dataclass(slots=True)
class _Item:
    seq: int
    record: Record


@dataclass
class _DrainResult:
    delivered: list[int] = field(default_factory=list)
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    failed: tuple[int, str, float | None] | None = None
    unsent: list[int] = field(default_factory=list)


class _Throttled:
    """Log a repeated warning at most once per ``interval`` seconds, with a running total."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = -1e9
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        more = f" (+{self._suppressed} similar)" if self._suppressed else ""
        self._last, self._suppressed = now, 0
        _log.warning(message + more, *args)


class DeliveryService:
    """Delivers :class:`~hackagent_otel._records.Record` objects without blocking callers.

    ``sender`` makes the API calls (a :class:`HackAgentClient`; ``None`` means no API:
    everything is kept in the outbox). ``outbox`` is used if given (and not closed by
    the service); otherwise one is opened at ``outbox_path`` (default
    :func:`~hackagent_otel._delivery.outbox.default_outbox_path`) when first needed.
    ``queue_size`` bounds the records held in memory. ``policy`` shapes retries in
    direct mode (its ``max_elapsed`` is the budget before spooling); ``probe_policy``
    (default: ``policy`` without a time limit) paces probes of a down API while draining.
    Every ``outbox_poll_interval`` seconds in direct mode the outbox is checked for rows
    other processes left, which are then drained. ``clock`` measures deadlines. The
    service owns ``sender`` and closes it at :meth:`shutdown`.
    """

    def __init__(
        self,
        sender: Sender | None,
        outbox: Outbox | None = None,
        *,
        outbox_path: str | os.PathLike[str] | None = None,
        outbox_target: str | None = None,
        queue_size: int = 2048,
        senders: int = 4,
        policy: RetryPolicy | None = None,
        probe_policy: RetryPolicy | None = None,
        drain_batch: int = 256,
        outbox_poll_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_size < 1 or senders < 1 or drain_batch < 1:
            raise ValueError("queue_size, senders and drain_batch must be >= 1")
        self._sender = sender
        self._outbox = outbox
        self._owns_outbox = outbox is None
        self._outbox_path = Path(outbox_path) if outbox_path is not None else None
        self._outbox_target = outbox_target
        self._queue_size = queue_size
        self._n = senders
        self._policy = policy or RetryPolicy()
        self._probe_policy = probe_policy or _unbounded(self._policy)
        self._drain_batch = drain_batch
        self._poll_interval = outbox_poll_interval
        self._clock = clock
        self._shutdown_result: bool | None = None
        self._init_state()
        _LIVE.add(self)

    def _init_state(self) -> None:
        """(Re)build every lock, queue, counter and thread slot (also after fork)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._part_cv = [threading.Condition(self._lock) for _ in range(self._n)]
        self._coord_cv = threading.Condition(self._lock)
        self._idle_cv = threading.Condition(self._lock)
        self._spill_lock = threading.Lock()
        self._parts: list[deque[_Item]] = [deque() for _ in range(self._n)]
        self._busy: list[_Item | None] = [None] * self._n
        self._tasks: list[list[OutboxRow] | None] = [None] * self._n
        self._results: list[_DrainResult | None] = [None] * self._n
        self._size = 0
        self._seq = 0
        self._session = time.time_ns()
        self._mode: Mode = "direct"
        self._started = False
        self._closing = False
        self._closed = False
        self._broken = False
        self._ready = False  # senders wait until the outbox has been checked for old rows
        self._flush_targets: list[int] = []  # seqs that force_flush callers wait for
        # Records taken from the queue and not yet committed to the outbox, one entry
        # (the lowest seq) per batch: force_flush waits for them as for queued ones.
        self._transit: list[int] = []
        # What the last call to the API showed: it failed (transient) / the drain lock is
        # another process's. Either way force_flush does not wait for the outbox's drain.
        self._api_down = False
        self._drain_refused = False
        # A Retry-After that outlasted the direct retry budget: the drain waits for it.
        self._resume_at = 0.0
        self._persisted_busy: dict[int, int] = {}
        self._counters = {
            "submitted": 0,
            "sent": 0,
            "retried": 0,
            "spooled": 0,
            "rejected": 0,
            "dropped": 0,
        }
        self._drop_log = _Throttled()
        self._threads: list[threading.Thread] = []

    # -- the caller's side -------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue ``record`` for delivery; never waits on the network, never raises.

        When the queue is full, the queue and the record are written to the outbox from
        this thread (one transaction); if that fails too, the record is dropped and
        counted.
        """
        with self._lock:
            self._counters["submitted"] += 1
            if self._closed or self._closing:
                self._drop_locked(1, "the delivery service is shut down")
                return
            if not self._started:
                self._start_locked()
            item = _Item(self._seq, record)
            self._seq += 1
            if self._size < self._queue_size:
                p = hash(record.ordering_key) % self._n
                self._parts[p].append(item)
                self._size += 1
                if self._mode == "direct":
                    self._part_cv[p].notify()
                else:
                    self._coord_cv.notify()
                return
            if self._broken:
                self._drop_locked(1, "the queue is full and the outbox is not usable")
                return
            self._transit.append(item.seq)
        self._spill(extra=[item])

    def start(self) -> None:
        """Start the background threads now instead of at the first record; idempotent.

        A long-running process (the bridge) calls it at start-up so rows an earlier
        process left in the outbox are delivered without waiting for new records.
        """
        with self._lock:
            if not self._started and not (self._closed or self._closing):
                self._start_locked()

    def accept_durably(self, records: Sequence[Record]) -> None:
        """Commit ``records`` to the outbox in one transaction, then have them drained now.

        For callers that must know records are durable before they answer someone (the
        bridge answers 200 only after this returns): when it returns, a SIGKILL loses
        none of them. They are delivered per key after everything submitted or accepted
        before them, in the order given. Raises :class:`OutboxError` when they could not
        be committed (then none of them is stored), also after shutdown.
        """
        if not records:
            return
        with self._spill_lock:
            with self._lock:
                if self._closed or self._closing:
                    raise OutboxError("the delivery service is shut down")
                if not self._started:
                    self._start_locked()
                first = self._seq
                self._seq += len(records)
            items = [_Item(first + i, record) for i, record in enumerate(records)]
            self._store(items)  # raises OutboxError; the numbers taken are simply unused
        with self._lock:
            self._counters["submitted"] += len(items)
            self._counters["spooled"] += len(items)
            if self._mode == "direct" and not self._broken:
                self._mode = "spooling"  # the coordinator drains the outbox right away
            self._coord_cv.notify()

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is delivered, rejected or committed to
        the outbox (a SIGKILL right after the call loses none of it).

        In spooling mode records go through the outbox. While its drain is delivering
        (the API answers), the call waits, within ``timeout``, for them to be delivered
        after the older rows; when the time is up they are in the outbox and the call
        returns True. While the API is down, while another process drains the outbox, or
        without an API, it returns as soon as they are committed instead of waiting for
        the API. False on timeout with records still in memory.
        """
        deadline = self._clock() + max(0.0, timeout)
        with self._lock:
            target = self._seq - 1
        while True:
            with self._lock:
                flushed = self._flushed_locked(target)
                spooling = self._mode == "spooling" and not self._broken
            if spooling and not flushed:
                # Records handed back by senders reach the queue; write them out.
                self._spill(extra=[])
                with self._lock:
                    flushed = self._flushed_locked(target)
            if flushed and not self._draining_toward(target):
                return True
            with self._lock:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return self._flushed_locked(target)  # if so, the rest is in the outbox
                self._flush_targets.append(target)
                try:
                    self._idle_cv.wait(min(remaining, 0.05 if spooling else 0.1))
                finally:
                    self._flush_targets.remove(target)

    def _draining_toward(self, target: int) -> bool:
        """Whether own rows up to ``target`` wait in the outbox for a drain now delivering."""
        with self._lock:
            if (
                self._mode != "spooling"
                or self._broken
                or self._closing
                or self._sender is None
                or self._api_down
                or self._drain_refused
            ):
                return False
            outbox = self._outbox
        if outbox is None:
            return False
        try:
            return outbox.has_pending(self._session, up_to_seq=target)
        except OutboxError:
            return False

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Deliver what can be delivered within ``timeout``, persist the rest; idempotent.

        Returns within ``timeout`` even when the API hangs: in-flight calls are not
        waited for past the deadline (their records are written to the outbox and may
        be delivered twice, never lost). True when nothing was dropped meanwhile.
        """
        if self._shutdown_result is not None:
            return self._shutdown_result
        started = self._clock()
        with self._lock:
            dropped_before = self._counters["dropped"]
        reserve = min(1.0, timeout * 0.2)
        flushed = self.force_flush(max(0.0, timeout - reserve))
        with self._lock:
            self._closing = True
            self._notify_all_locked()
        remaining = max(0.05, timeout - (self._clock() - started))
        persisted = self._persist_on_shutdown(remaining)
        with self._lock:
            self._closed = True
            self._notify_all_locked()
            lost = self._counters["dropped"] > dropped_before
        # Let the coordinator record what its last drain batch delivered, then close.
        for thread in self._threads[:1]:
            thread.join(timeout=max(0.0, timeout - (self._clock() - started)))
        if self._outbox is not None:
            with contextlib.suppress(OutboxError, OSError):
                self._outbox.drain_lock.release()
            if self._owns_outbox:
                self._outbox.close()
        if self._sender is not None:
            with contextlib.suppress(Exception):
                self._sender.close()
        for thread in self._threads[1:]:
            thread.join(timeout=max(0.0, timeout - (self._clock() - started)))
        self._shutdown_result = (flushed or persisted) and not lost
        return self._shutdown_result

    def stats(self) -> DeliveryStats:
        """A snapshot of the counters (reads the outbox's pending count)."""
        with self._lock:
            counters = dict(self._counters)
            queued = self._size + sum(1 for b in self._busy if b is not None)
            mode = self._mode
        pending: int | None = None
        if self._outbox is not None and not self._broken:
            with contextlib.suppress(OutboxError):
                pending = self._outbox.counts().pending
        return DeliveryStats(
            submitted=counters["submitted"],
            sent=counters["sent"],
            retried=counters["retried"],
            spooled=counters["spooled"],
            rejected=counters["rejected"],
            dropped=counters["dropped"],
            queued=queued,
            outbox_pending=pending,
            mode=mode,
        )

    @property
    def mode(self) -> Mode:
        """``"direct"`` or ``"spooling"``."""
        return self._mode

    # -- threads -----------------------------------------------------------------------
    def _start_locked(self) -> None:
        self._started = True
        self._threads = [
            threading.Thread(
                target=self._coordinate, name="hackagent-otel-delivery-outbox", daemon=True
            )
        ]
        self._threads += [
            threading.Thread(
                target=self._send_loop, args=(i,), name=f"hackagent-otel-sender-{i}", daemon=True
            )
            for i in range(self._n)
        ]
        for thread in self._threads:
            thread.start()

    def _notify_all_locked(self) -> None:
        for cv in self._part_cv:
            cv.notify_all()
        self._coord_cv.notify_all()
        self._idle_cv.notify_all()

    def _send_loop(self, i: int) -> None:
        cv = self._part_cv[i]
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    task = self._tasks[i]
                    if task is not None:
                        item = None
                        break
                    if (
                        self._ready
                        and self._mode == "direct"
                        and self._parts[i]
                        and not self._closing
                    ):
                        item = self._parts[i].popleft()
                        self._size -= 1
                        self._busy[i] = item
                        break
                    cv.wait()
            if task is not None:
                self._run_drain_task(i, task)
            elif item is not None:
                self._send_direct(i, item)

    def _send_direct(self, i: int, item: _Item) -> None:
        assert self._sender is not None
        backoff = self._policy.backoff()
        while True:
            outcome = _send(self._sender, item.record)
            if isinstance(outcome, Delivered):
                with self._lock:
                    self._counters["sent"] += 1
                    self._settle_busy_locked(i, item, delivered=True)
                return
            if isinstance(outcome, Rejected):
                self._keep_rejected(item, outcome)
                with self._lock:
                    self._settle_busy_locked(i, item, delivered=False)
                return
            assert isinstance(outcome, Transient)
            wait = backoff.next_wait(outcome.retry_after)
            with self._lock:
                if self._broken and wait is None:
                    wait = self._policy.max_backoff
                if wait is None or self._mode != "direct" or self._closing:
                    self._hand_back_locked(i, item, outcome.reason, outcome.retry_after)
                    return
                self._counters["retried"] += 1
            if not self._pause(wait, self._part_cv[i], direct=True):
                with self._lock:
                    self._hand_back_locked(i, item, outcome.reason)
                return

    def _settle_busy_locked(self, i: int, item: _Item, *, delivered: bool) -> None:
        self._api_down = False  # it answered
        if self._busy[i] is item:
            self._busy[i] = None
        row_id = self._persisted_busy.pop(item.seq, None)
        if row_id is not None and delivered and self._outbox is not None:
            # shutdown already saved it; it arrived after all: drop the saved copy.
            with contextlib.suppress(OutboxError):
                self._outbox.mark_delivered([row_id])
        if self._mode == "spooling":
            self._coord_cv.notify()  # it may be waiting for in-flight records to settle
        self._wake_flushers_locked()

    def _wake_flushers_locked(self) -> None:
        """Wake force_flush callers only when one of them can return (keeps senders lean)."""
        if self._flush_targets and self._flushed_locked(min(self._flush_targets)):
            self._idle_cv.notify_all()

    def _hand_back_locked(
        self, i: int, item: _Item, reason: str, retry_after: float | None = None
    ) -> None:
        """Return an unsent record to the front of its partition and start spooling.

        A server's ``Retry-After`` that ran past the direct retry budget still holds:
        the outbox's drain sends nothing before it is over.
        """
        if retry_after is not None:
            until = self._clock() + min(retry_after, self._policy.max_retry_after)
            self._resume_at = max(self._resume_at, until)
        if self._busy[i] is item:
            self._busy[i] = None
        if item.seq in self._persisted_busy or self._closed:
            self._persisted_busy.pop(item.seq, None)  # shutdown saved it already
        else:
            self._parts[i].appendleft(item)
            self._size += 1
        self._api_down = True
        if self._mode == "direct" and not self._broken:
            _log.info("API unavailable (%s); spooling records to the outbox", reason)
            self._mode = "spooling"
        self._coord_cv.notify()
        if self._flush_targets:
            self._idle_cv.notify_all()

    def _keep_rejected(self, item: _Item, outcome: Rejected) -> None:
        _log.warning(
            "HackAgent API rejected %s %s (%s); kept in the outbox's rejected rows",
            item.record.method,
            item.record.path,
            outcome.reason,
        )
        outbox = self._get_outbox()
        try:
            if outbox is None:
                raise OutboxError("no usable outbox")
            outbox.put_rejected(
                item.record, outcome.status, outcome.reason, session=self._session, seq=item.seq
            )
        except OutboxError as exc:
            self._mark_broken(exc)
            with self._lock:
                self._drop_locked(1, f"rejected record could not be kept: {exc}")
            return
        with self._lock:
            self._counters["rejected"] += 1

    # -- the outbox side ---------------------------------------------------------------
    def _coordinate(self) -> None:
        try:
            self._coordinate_loop()
        except Exception:  # pragma: no cover - a bug; keep the process alive
            _log.exception("delivery coordinator failed; records stay queued or in the outbox")

    def _coordinate_loop(self) -> None:
        outbox = self._get_outbox()
        spool = self._sender is None
        if outbox is not None:
            try:
                spool = spool or outbox.counts().pending > 0
            except OutboxError as exc:
                self._mark_broken(exc)
        with self._lock:
            if spool and not self._broken:
                self._mode = "spooling"
            self._ready = True
            for cv in self._part_cv:
                cv.notify_all()
        while True:
            with self._lock:
                idle = self._idle_locked()
                if idle:
                    self._coord_cv.wait(self._poll_interval)
                    idle = self._idle_locked()
            if idle:
                self._poll_outbox()
                continue
            with self._lock:
                while any(b is not None for b in self._busy) and not self._closing:
                    self._coord_cv.wait()
                if self._closing:
                    return
            self._drain()

    def _idle_locked(self) -> bool:
        return self._mode != "spooling" and not self._closing

    def _poll_outbox(self) -> None:
        """In direct mode, now and then: rows appended by other processes? Drain them."""
        outbox = self._outbox
        if outbox is None or self._broken or self._sender is None:
            return
        try:
            pending = outbox.pending_count()
        except OutboxError:
            return
        if pending:
            with self._lock:
                if self._mode == "direct" and not self._closing and not self._broken:
                    _log.info("%d records waiting in the outbox; draining them", pending)
                    self._mode = "spooling"

    def _drain(self) -> None:
        """Spool what is queued and drain the outbox until empty (or closing)."""
        backoff = self._probe_policy.backoff()
        while True:
            with self._lock:
                hold = self._resume_at - self._clock()
            if hold > 0:
                self._pause(hold, self._coord_cv)  # the API asked for it (Retry-After)
            step = self._drain_step()
            if step == "done":
                return
            if step == "idle":
                # Nothing to send now: no API, or another process holds the drain lock.
                with self._lock:
                    if not self._closing:
                        self._coord_cv.wait(0.5 if self._sender is not None else None)
                continue
            outbox, rows = step
            failure = self._send_rows(outbox, rows)
            if failure is None:
                backoff.reset()
                continue
            wait = backoff.next_wait(failure[1]) or self._probe_policy.max_backoff
            self._pause(wait, self._coord_cv)

    def _drain_step(self) -> Literal["done", "idle"] | tuple[Outbox, list[OutboxRow]]:
        """Under the spill lock: spool the queue, then claim a batch or finish draining."""
        with self._spill_lock:
            if not self._move_queue_to_outbox():
                return "done"  # outbox broken: back to direct, from memory
            outbox = self._outbox
            assert outbox is not None
            with self._lock:
                if self._closing:
                    return "done"
            try:
                rows = self._claim(outbox)
                # Only a sender waits on this process's own rows; without one, skip the look.
                needs_look = not rows and self._sender is not None
                own_pending = needs_look and outbox.has_pending(self._session)
            except OutboxError as exc:
                self._mark_broken(exc)
                return "done"
            if rows:
                return outbox, rows
            with self._lock:
                if self._size or own_pending or self._sender is None:
                    if self._flush_targets:
                        self._idle_cv.notify_all()  # nothing is being delivered now
                    return "idle"
                self._mode = "direct"
                for cv in self._part_cv:
                    cv.notify_all()
                if self._flush_targets:
                    self._idle_cv.notify_all()
            _log.info("outbox drained; sending directly again")
            with contextlib.suppress(OSError):
                outbox.drain_lock.release()
            return "done"

    def _pause(self, seconds: float, cv: threading.Condition, *, direct: bool = False) -> bool:
        """Wait ``seconds`` unless closing (or, with ``direct``, the mode changes).

        Returns False when cut short. Notifications for other reasons do not end the wait.
        """
        deadline = self._clock() + seconds
        with self._lock:
            while True:
                if self._closing or (direct and self._mode != "direct"):
                    return False
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return True
                cv.wait(remaining)

    def _claim(self, outbox: Outbox) -> list[OutboxRow]:
        if self._sender is None:
            return []
        held = outbox.drain_lock.held
        try:
            acquired = outbox.drain_lock.try_acquire()
        except OSError as exc:
            raise OutboxError(f"cannot take the drain lock: {exc}") from exc
        with self._lock:
            self._drain_refused = not acquired
        if not acquired:
            return []
        if not held:
            recovered = outbox.recover_inflight()
            if recovered:
                _log.info("recovered %d in-flight outbox rows of a previous drainer", recovered)
        return outbox.claim_pending(self._drain_batch)

    def _send_rows(self, outbox: Outbox, rows: list[OutboxRow]) -> tuple[str, float | None] | None:
        """Send claimed rows on the sender threads, by key; settle them in the outbox."""
        by_part: list[list[OutboxRow]] = [[] for _ in range(self._n)]
        for row in rows:
            by_part[hash(row.sendable.ordering_key) % self._n].append(row)
        with self._lock:
            for i, part_rows in enumerate(by_part):
                if part_rows:
                    self._results[i] = None
                    self._tasks[i] = part_rows
                    self._part_cv[i].notify()
            while any(t is not None for t in self._tasks) and not self._closed:
                self._coord_cv.wait()
            results = [r for r in self._results if r is not None]
            self._results = [None] * self._n
            if any(r.delivered or r.rejected or r.failed for r in results):
                self._api_down = any(r.failed for r in results)
        failure: tuple[str, float | None] | None = None
        try:
            delivered = [d for r in results for d in r.delivered]
            outbox.mark_delivered(delivered)
            with self._lock:
                self._counters["sent"] += len(delivered)
            for result in results:
                for row_id, status, reason in result.rejected:
                    outbox.mark_rejected(row_id, status, reason)
                    with self._lock:
                        self._counters["rejected"] += 1
                if result.failed is not None:
                    row_id, reason, retry_after = result.failed
                    outbox.release([row_id], error=reason)
                    failure = (reason, retry_after)
                outbox.release(result.unsent)
        except OutboxError as exc:
            self._mark_broken(exc)
        with self._lock:
            if self._flush_targets:
                self._idle_cv.notify_all()  # their rows may be delivered, or the API down
        return failure

    def _run_drain_task(self, i: int, rows: list[OutboxRow]) -> None:
        assert self._sender is not None
        result = _DrainResult()
        for index, row in enumerate(rows):
            if self._closing:
                result.unsent = [r.id for r in rows[index:]]
                break
            outcome = _send(self._sender, row.sendable)
            if isinstance(outcome, Delivered):
                result.delivered.append(row.id)
            elif isinstance(outcome, Rejected):
                _log.warning(
                    "HackAgent API rejected %s %s (%s); kept in the outbox's rejected rows",
                    row.sendable.method,
                    row.sendable.path,
                    outcome.reason,
                )
                result.rejected.append((row.id, outcome.status, outcome.reason))
            else:
                result.failed = (row.id, outcome.reason, outcome.retry_after)
                result.unsent = [r.id for r in rows[index + 1 :]]
                break
        with self._lock:
            if result.failed is not None:
                self._counters["retried"] += 1
            self._results[i] = result
            self._tasks[i] = None
            self._coord_cv.notify()

    def _move_queue_to_outbox(self) -> bool:
        """Write every queued record to the outbox (caller holds the spill lock)."""
        with self._lock:
            items = self._take_all_locked()
            if not items:
                return True
            self._transit.append(items[0].seq)
        return self._write_items(items, extra=[])

    def _spill(self, extra: list[_Item]) -> None:
        """Move the queue (and ``extra``, newer) to the outbox from the calling thread.

        ``extra`` is one record the caller has already counted in transit.
        """
        with self._spill_lock:
            with self._lock:
                items = self._take_all_locked()
                if items:
                    self._transit.append(items[0].seq)
                if not self._broken and self._mode == "direct" and (items or extra):
                    _log.info("delivery queue full; spooling records to the outbox")
                    self._mode = "spooling"
                self._coord_cv.notify()
            if items or extra:
                self._write_items(items, extra)

    def _write_items(self, items: list[_Item], extra: list[_Item]) -> bool:
        """Commit ``items`` and ``extra`` to the outbox; on failure put ``items`` back.

        Either way both leave the transit list (see ``_transit``) once settled.
        """
        everything = items + extra
        try:
            self._store(everything)
        except OutboxError as exc:
            self._mark_broken(exc)
            with self._lock:
                self._put_back_locked(items)
                self._drop_locked(len(extra), f"the queue is full and the outbox failed: {exc}")
                self._end_transit_locked(items, extra)
            return False
        with self._lock:
            self._counters["spooled"] += len(everything)
            self._end_transit_locked(items, extra)
        return True

    def _store(self, items: list[_Item]) -> list[int]:
        """Commit ``items`` to the outbox as pending rows, under their submission numbers."""
        outbox = self._get_outbox()
        if outbox is None:
            raise OutboxError("no usable outbox")
        return outbox.put_many(
            [it.record for it in items], session=self._session, seqs=[it.seq for it in items]
        )

    def _end_transit_locked(self, *batches: list[_Item]) -> None:
        for batch in batches:
            if batch:
                self._transit.remove(batch[0].seq)
        if self._flush_targets:
            self._idle_cv.notify_all()

    def _persist_on_shutdown(self, timeout: float) -> bool:
        """Write what is still in memory, in flight included, to the outbox."""
        if not self._spill_lock.acquire(timeout=timeout):
            with self._lock:
                stranded = self._size + sum(1 for b in self._busy if b is not None)
                self._drop_locked(stranded, "shutdown timed out before the outbox was free")
            return False
        try:
            with self._lock:
                items = self._take_all_locked()
                busy = [b for b in self._busy if b is not None]
                if items:
                    self._transit.append(items[0].seq)
            everything = sorted(items + busy, key=lambda it: it.seq)
            if not everything:
                return True
            try:
                ids = self._store(everything)
            except OutboxError as exc:
                self._mark_broken(exc)
                with self._lock:
                    self._drop_locked(len(everything), f"could not persist at shutdown: {exc}")
                    self._end_transit_locked(items)
                return False
            busy_seqs = {b.seq for b in busy}
            with self._lock:
                self._counters["spooled"] += len(everything)
                self._end_transit_locked(items)
                for item, row_id in zip(everything, ids, strict=True):
                    if item.seq in busy_seqs:
                        self._persisted_busy[item.seq] = row_id
            return True
        finally:
            self._spill_lock.release()

    def _take_all_locked(self) -> list[_Item]:
        if not self._size:
            return []
        items = list(heapq.merge(*self._parts, key=lambda it: it.seq))
        for part in self._parts:
            part.clear()
        self._size = 0
        return items

    def _put_back_locked(self, items: list[_Item]) -> None:
        for item in reversed(items):
            self._parts[hash(item.record.ordering_key) % self._n].appendleft(item)
        self._size += len(items)
        for cv in self._part_cv:
            cv.notify()

    def _drop_locked(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        self._counters["dropped"] += count
        self._drop_log.warning(
            "dropped %d HackAgent record(s): %s (%d dropped in total)",
            count,
            reason,
            self._counters["dropped"],
        )

    def _flushed_locked(self, target: int) -> bool:
        """Whether no record up to ``target`` is queued, in flight or on its way to the outbox."""
        lowest = min(
            [p[0].seq for p in self._parts if p]
            + [b.seq for b in self._busy if b is not None]
            + self._transit,
            default=None,
        )
        return lowest is None or lowest > target

    def _get_outbox(self) -> Outbox | None:
        if self._broken:
            return None
        if self._outbox is None:
            try:
                self._outbox = Outbox(self._outbox_path, target=self._outbox_target)
            except OutboxError as exc:
                self._mark_broken(exc)
                return None
        return self._outbox

    def _mark_broken(self, exc: Exception) -> None:
        with self._lock:
            if self._closing:
                _log.debug("outbox use after shutdown: %s", exc)
                return
            if not self._broken:
                _log.error(
                    "outbox unusable (%s); delivering from memory only, dropping overflow", exc
                )
            self._broken = True
            self._mode = "direct"
            self._notify_all_locked()

    def _after_fork_in_child(self) -> None:
        self._init_state()
        self._shutdown_result = None


def _unbounded(policy: RetryPolicy) -> RetryPolicy:
    return RetryPolicy(
        initial_backoff=policy.initial_backoff,
        multiplier=policy.multiplier,
        max_backoff=policy.max_backoff,
        max_elapsed=None,
        jitter=policy.jitter,
        max_retry_after=policy.max_retry_after,
        random=policy.random,
        clock=policy.clock,
    )


def _reinit_after_fork() -> None:
    for service in list(_LIVE):
        service._after_fork_in_child()


os.register_at_fork(after_in_child=_reinit_after_fork)


def _send(sender: Sender, record: Record) -> Outcome:
    request = request_or_rejection(record)
    return request if isinstance(request, Rejected) else sender.send(request)
