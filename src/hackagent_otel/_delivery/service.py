"""DeliveryService: records go out in the background, in order per key, and are not lost.

A thin service over small parts:

* :class:`~hackagent_otel._delivery.queue.PartitionedQueue`: the bounded memory queue,
  one partition per sender thread, chosen by ordering key (a result's records leave in
  submission order; other results travel in parallel on their own connections);
* :class:`~hackagent_otel._delivery.spool.Spool`: the outbox, and whether it can be
  written now;
* :mod:`~hackagent_otel._delivery.drain`: claim, send, settle (shared with ``push``);
* :class:`~hackagent_otel._delivery.modes.ModeMachine`: where records go, changed in
  one place along a table (docs/architecture.md);
* :class:`~hackagent_otel._delivery.bindings.Bindings`: ids from earlier answers for
  the records that depend on them.

``submit`` only appends to the queue; background threads do all I/O. In ``direct``
mode the senders send from the queue, retrying transient failures with jittered
backoff for up to ``policy.max_elapsed``. In ``spooling`` mode (the API stayed down,
the queue overflowed, or the outbox holds rows, e.g. left by a killed process) the
coordinator thread moves the queue to the outbox and drains it in claim order, the
batch spread over the senders by key, probing with backoff while the API is down; when
the outbox is empty it goes back to ``direct``. Without a sender the outbox is the sink
(for ``hackagent-otel push``). In ``memory_only`` mode (the outbox cannot be written:
locked, full, read-only, corrupt) the senders deliver from memory without a time limit,
what no longer fits is dropped and counted, and the outbox is probed with backoff; once
it can be written again, spooling and draining resume.

Order per key holds across retries and spills because each record gets a submission
number and the outbox hands rows back by that number; draining starts only after every
record still in memory or in flight has reached the outbox or been settled.

Every thread logs, counts (``errors``) and carries on after an unexpected error. Every
drop is counted and logged. Fork: a child starts empty (the inherited records belong to
the parent, which still delivers them), with its own threads, connections and outbox.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.drain import (
    Batch,
    Waiting,
    claim,
    learn_answer,
    request_for,
    safe_send,
    send_rows,
)
from hackagent_otel._delivery.modes import Event, Mode, ModeMachine
from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow, Settlement
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Sender, Transient
from hackagent_otel._delivery.queue import Item, PartitionedQueue
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.spool import OutboxHealth, Spool
from hackagent_otel._forksafe import register
from hackagent_otel._records import Call, Record
from hackagent_otel._throttle import ThrottledLog

__all__ = ["DeliveryService", "DeliveryStats"]

_log = logging.getLogger("hackagent_otel.delivery")

#: How long a multiprocessing child that ends normally waits for its records' delivery.
CHILD_EXIT_FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class DeliveryStats:
    """Counters since the service started (in a forked child: since the fork).

    ``sent`` counts records the API accepted, including rows drained from the outbox
    that other processes left there. ``spooled`` counts records this service wrote to
    the outbox as pending. ``queued`` is what waits in memory (including in flight);
    ``outbox_pending`` is read from the outbox (``None`` if it cannot be read).
    ``outbox`` says whether the outbox can be written (``outbox_error`` why not);
    ``errors`` counts unexpected errors the background threads survived.
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
    outbox: OutboxHealth = OutboxHealth.OK
    outbox_error: str | None = None
    errors: int = 0


class DeliveryService:
    """Delivers :class:`~hackagent_otel._records.Record` objects without blocking callers.

    ``sender`` makes the API calls (a :class:`HackAgentClient`; ``None`` means no API:
    everything is kept in the outbox). ``outbox`` is used if given (and not closed by
    the service); otherwise one is opened at ``outbox_path`` (one of the two is needed;
    where the file is, the settings say) when first needed, recording ``outbox_target``
    (default: the sender's ``base_url``) as the API its records are for. ``queue_size``
    bounds the records held in memory. ``policy`` shapes retries in direct mode (its
    ``max_elapsed`` is the budget before spooling); ``probe_policy`` (default:
    ``policy`` without a time limit) paces probes of a down API while draining and of an
    outbox that cannot be written. Every ``outbox_poll_interval`` seconds in direct mode
    the outbox is checked for rows other processes left, which are then drained.
    ``clock`` measures deadlines. The service owns ``sender`` and closes it at
    :meth:`shutdown`.
    """

    def __init__(
        self,
        sender: Sender | None,
        outbox: Outbox | None = None,
        *,
        outbox_path: str | os.PathLike[str] | None = None,
        outbox_target: str | None = None,
        queue_size: int = 2048,
        senders: int = 16,
        policy: RetryPolicy | None = None,
        probe_policy: RetryPolicy | None = None,
        drain_batch: int = 256,
        outbox_poll_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_size < 1 or senders < 1 or drain_batch < 1:
            raise ValueError("queue_size, senders and drain_batch must be >= 1")
        self._sender = sender
        self._given_outbox = outbox
        self._outbox_path = Path(outbox_path) if outbox_path is not None else None
        if outbox_target is None:
            base_url = getattr(sender, "base_url", None)
            outbox_target = base_url if isinstance(base_url, str) else None
        self._outbox_target = outbox_target
        self._queue_size = queue_size
        self._n = senders
        self._policy = policy or RetryPolicy()
        self._probe_policy = probe_policy or _unbounded(self._policy)
        self._drain_batch = drain_batch
        self._poll_interval = outbox_poll_interval
        self._clock = clock
        self._shutdown_result: bool | None = None
        self.bindings = Bindings()
        # A child process (forked, or started by multiprocessing) often ends without
        # warning: its drain commits each delivered row at once (see drain.send_rows).
        self._in_child = multiprocessing.parent_process() is not None
        self._init_state()
        register(self._after_fork_in_child)
        if self._in_child:
            self._flush_at_child_exit()
        multiprocessing.util.register_after_fork(self, DeliveryService._flush_at_child_exit)

    def _init_state(self) -> None:
        """(Re)build every lock, queue, counter and thread slot (also after fork)."""
        self._lock = threading.Lock()
        self._part_cv = [threading.Condition(self._lock) for _ in range(self._n)]
        self._coord_cv = threading.Condition(self._lock)
        self._idle_cv = threading.Condition(self._lock)
        self._spill_lock = threading.Lock()  # one writer of queued records at a time
        self._queue = PartitionedQueue(self._n, self._queue_size)
        self._modes = ModeMachine(Mode.DIRECT)
        self._spool = Spool(
            self._given_outbox,
            path=self._outbox_path,
            target=self._outbox_target,
            probe_policy=self._probe_policy,
            clock=self._clock,
        )
        self._tasks: list[list[OutboxRow] | None] = [None] * self._n
        self._results: list[Batch | None] = [None] * self._n
        self._seq = 0
        self._session = time.time_ns()
        self._started = False
        self._closing = False
        self._ready = False  # senders wait until the outbox has been checked for old rows
        self._flush_targets: list[int] = []  # seqs that force_flush callers wait for
        # What the last call showed: the API failed / another process holds the drain
        # lock. Either way force_flush does not wait for the outbox's drain.
        self._api_down = False
        self._drain_refused = False
        # A Retry-After that outlasted the direct retry budget: the drain waits for it.
        self._resume_at = 0.0
        # Rows shutdown wrote for records still in flight (seq -> row id).
        self._persisted_busy: dict[int, int] = {}
        # A drained batch's settlement the outbox did not take: applied first when back.
        self._unsettled: Settlement | None = None
        self._counters = dict.fromkeys(
            ("submitted", "sent", "retried", "spooled", "rejected", "dropped", "errors"), 0
        )
        self._drop_log = ThrottledLog(_log)
        self._threads: list[threading.Thread] = []

    # -- the caller's side -------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue ``record`` for delivery; never waits on the network, never raises.

        When the queue is full, the queue and the record are written to the outbox from
        this thread (one transaction); if that fails too, the record is dropped and
        counted.
        """
        try:
            call = Call.from_record(record)
        except (TypeError, ValueError, RecursionError) as exc:
            with self._lock:
                self._counters["submitted"] += 1
                self._drop_locked(1, f"{record.method} {record.path}: body is not JSON: {exc}")
            return
        with self._lock:
            self._counters["submitted"] += 1
            if self._closing or self._modes.mode is Mode.CLOSED:
                self._drop_locked(1, "the delivery service is shut down")
                return
            if not self._started:
                self._start_locked()
            item = Item(self._seq, call)
            self._seq += 1
            part = self._queue.offer(item)
            if part is not None:
                if self._modes.mode is Mode.SPOOLING:
                    self._coord_cv.notify()
                else:
                    self._part_cv[part].notify()
                return
            if self._modes.mode is Mode.MEMORY_ONLY:
                self._drop_locked(1, "the queue is full and the outbox cannot be written")
                return
            self._queue.begin_transit([item])
        self._spill(extra=[item])

    def start(self) -> None:
        """Start the background threads now instead of at the first record; idempotent.

        A long-running process (the bridge) calls it at start-up so rows an earlier
        process left in the outbox are delivered without waiting for new records.
        """
        with self._lock:
            if not self._started and not self._closing:
                self._start_locked()

    def accept_durably(self, records: Sequence[Record]) -> None:
        """Commit ``records`` to the outbox in one transaction, then have them drained now.

        For callers that must know records are durable before they answer someone (the
        bridge answers 200 only after this returns): when it returns, a SIGKILL loses
        none of them. They are delivered per key after everything submitted or accepted
        before them, in the order given. Raises :class:`OutboxError` when they could not
        be committed (then none of them is stored), also after shutdown. A record whose
        body is not JSON is dropped and counted.
        """
        calls: list[Call] = []
        for record in records:
            try:
                calls.append(Call.from_record(record))
            except (TypeError, ValueError, RecursionError) as exc:
                with self._lock:
                    self._drop_locked(1, f"{record.method} {record.path}: not JSON: {exc}")
        if not calls:
            return
        with self._spill_lock:
            with self._lock:
                if self._closing or self._modes.mode is Mode.CLOSED:
                    raise OutboxError("the delivery service is shut down")
                if not self._started:
                    self._start_locked()
                first = self._seq
                self._seq += len(calls)
            items = [Item(first + i, call) for i, call in enumerate(calls)]
            try:
                self._store(items)
            except OutboxError as exc:  # the numbers taken are simply unused
                self._outbox_failed(exc)
                raise
        with self._lock:
            self._counters["submitted"] += len(items)
            self._counters["spooled"] += len(items)
            self._modes.change(Event.OUTBOX_HAS_ROWS, "records accepted")
            self._coord_cv.notify()

    def wait_for(self, name: str, timeout: float) -> str | None:
        """The id an earlier record's answer bound to ``name``, waiting up to ``timeout``
        seconds for it; ``None`` past the bound or when its provider was rejected."""
        binding = self.bindings.wait(name, timeout)
        return None if binding is None else binding.value

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
                spooling = self._modes.mode is Mode.SPOOLING
            if spooling and not flushed:
                self._spill(extra=[])  # records handed back by senders: write them out
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
            self._modes.change(Event.SHUTDOWN)
            self._notify_all_locked()
            lost = self._counters["dropped"] > dropped_before
        # Let the coordinator settle what its last drain batch delivered; then close the
        # sender (which ends a call still hanging, so that batch settles too), and only
        # then the outbox.
        coordinator = self._threads[:1]
        for thread in coordinator:
            thread.join(timeout=max(0.0, timeout - reserve - (self._clock() - started)))
        if self._sender is not None:
            try:
                self._sender.close()
            except Exception:
                _log.exception("closing the sender failed")
        for thread in coordinator:
            thread.join(timeout=max(0.0, timeout - (self._clock() - started)))
        self._spool.close()
        for thread in self._threads[1:]:
            thread.join(timeout=max(0.0, timeout - (self._clock() - started)))
        self._shutdown_result = (flushed or persisted) and not lost
        return self._shutdown_result

    def stats(self) -> DeliveryStats:
        """A snapshot of the counters (reads the outbox's pending count)."""
        with self._lock:
            counters = dict(self._counters)
            queued = len(self._queue) + len(self._queue.in_flight())
            mode = self._modes.mode
        pending: int | None = None
        outbox = self._spool.opened
        if outbox is not None and self._spool.health is not OutboxHealth.BROKEN:
            try:
                pending = outbox.pending_count()
            except OutboxError:
                pending = None
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
            outbox=self._spool.health,
            outbox_error=self._spool.error,
            errors=counters["errors"],
        )

    @property
    def mode(self) -> Mode:
        """Where records go now (see :class:`~hackagent_otel._delivery.modes.Mode`)."""
        return self._modes.mode

    # -- threads -----------------------------------------------------------------------
    def _start_locked(self) -> None:
        self._started = True
        self._threads = [
            threading.Thread(
                target=self._survive,
                args=(self._coordinate, "outbox coordinator"),
                name="hackagent-otel-delivery-outbox",
                daemon=True,
            )
        ]
        self._threads += [
            threading.Thread(
                target=self._survive,
                args=(lambda i=i: self._send_loop(i), f"sender {i}"),
                name=f"hackagent-otel-sender-{i}",
                daemon=True,
            )
            for i in range(self._n)
        ]
        for thread in self._threads:
            thread.start()

    def _survive(self, loop: Callable[[], None], name: str) -> None:
        """Run a thread's loop; after an unexpected error, log, count and carry on."""
        while True:
            try:
                loop()
                return
            except Exception:
                _log.exception("delivery %s failed; carrying on", name)
                with self._lock:
                    self._counters["errors"] += 1
                    if self._closing:
                        return
                    self._coord_cv.wait(0.5)  # a bug must not spin

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
                    if self._modes.mode is Mode.CLOSED:
                        return
                    task = self._tasks[i]
                    if task is not None:
                        item = None
                        break
                    if (
                        self._ready
                        and self._modes.mode is not Mode.SPOOLING
                        and self._queue.has_work(i)
                        and not self._closing
                    ):
                        item = self._queue.take(i)
                        break
                    cv.wait()
            if task is not None:
                self._run_drain_task(i, task)
            elif item is not None:
                try:
                    self._send_direct(i, item)
                except BaseException:
                    with self._lock:  # not lost: back to the queue for the next try
                        self._hand_back_locked(i, item, "the sender thread failed")
                    raise

    def _send_direct(self, i: int, item: Item) -> None:
        assert self._sender is not None
        backoff = self._policy.backoff()
        while True:
            outcome = self._attempt(item.call)
            if isinstance(outcome, Delivered):
                learn_answer(item.call, outcome, self.bindings)
                with self._lock:
                    self._counters["sent"] += 1
                    self._settle_busy_locked(i, item, delivered=True)
                return
            if isinstance(outcome, Rejected):
                learn_answer(item.call, outcome, self.bindings)
                self._keep_rejected(item, outcome)
                with self._lock:
                    self._settle_busy_locked(i, item, delivered=False)
                return
            wait = backoff.next_wait(outcome.retry_after)
            with self._lock:
                mode = self._modes.mode
                if mode is Mode.MEMORY_ONLY and wait is None:
                    wait = self._policy.max_backoff  # nowhere else to keep it: go on trying
                if wait is None or self._closing or mode in (Mode.SPOOLING, Mode.CLOSED):
                    self._hand_back_locked(i, item, outcome.reason, outcome.retry_after)
                    return
                self._counters["retried"] += 1
            if not self._pause(wait, self._part_cv[i], direct=True):
                with self._lock:
                    self._hand_back_locked(i, item, outcome.reason)
                return

    def _attempt(self, call: Call) -> Outcome:
        """One try of ``call`` from memory (a dependent waiting for its provider is
        transient: its provider is ahead of it in the same partition)."""
        assert self._sender is not None
        outbox = self._spool.opened if self._spool.health is OutboxHealth.OK else None
        request = request_for(call, self.bindings, outbox)
        if isinstance(request, Waiting):
            return Transient(request.reason)
        if isinstance(request, Rejected):
            return request
        return safe_send(self._sender, request)

    def _settle_busy_locked(self, i: int, item: Item, *, delivered: bool) -> None:
        self._api_down = False  # it answered
        self._queue.settle(i, item)
        row_id = self._persisted_busy.pop(item.seq, None)
        outbox = self._spool.opened
        if row_id is not None and delivered and outbox is not None:
            # shutdown already saved it; it arrived after all: drop the saved copy.
            try:
                outbox.mark_delivered([row_id])
            except OutboxError:
                _log.info("a record delivered during shutdown stays in the outbox too")
        if self._modes.mode is Mode.SPOOLING:
            self._coord_cv.notify()  # it may be waiting for in-flight records to settle
        self._wake_flushers_locked()

    def _wake_flushers_locked(self) -> None:
        """Wake force_flush callers only when one of them can return (keeps senders lean)."""
        if self._flush_targets and self._flushed_locked(min(self._flush_targets)):
            self._idle_cv.notify_all()

    def _hand_back_locked(
        self, i: int, item: Item, reason: str, retry_after: float | None = None
    ) -> None:
        """Return an unsent record to the front of its partition and start spooling.

        A server's ``Retry-After`` that ran past the direct retry budget still holds:
        the outbox's drain sends nothing before it is over.
        """
        if retry_after is not None:
            until = self._clock() + min(retry_after, self._policy.max_retry_after)
            self._resume_at = max(self._resume_at, until)
        saved = item.seq in self._persisted_busy or self._modes.mode is Mode.CLOSED
        self._persisted_busy.pop(item.seq, None)
        self._queue.hand_back(i, item, requeue=not saved)
        self._api_down = True
        self._modes.change(Event.API_UNAVAILABLE, reason)
        self._coord_cv.notify()
        if self._flush_targets:
            self._idle_cv.notify_all()

    def _keep_rejected(self, item: Item, outcome: Rejected) -> None:
        call = item.call
        _log.warning(
            "HackAgent API rejected %s %s (%s); kept in the outbox's rejected rows",
            call.method,
            call.path,
            outcome.reason,
        )
        try:
            self._spool.store_rejected(
                call, outcome.status, outcome.reason, session=self._session, seq=item.seq
            )
        except OutboxError as exc:
            self._outbox_failed(exc)
            with self._lock:
                self._drop_locked(1, f"rejected record could not be kept: {exc}")
            return
        with self._lock:
            self._counters["rejected"] += 1

    # -- the outbox side ---------------------------------------------------------------
    def _coordinate(self) -> None:
        """Check the outbox for old rows, then follow the mode: poll, drain or probe."""
        if not self._ready:
            self._check_outbox_at_start()
        while True:
            with self._lock:
                if self._closing or self._modes.mode is Mode.CLOSED:
                    return
                mode = self._modes.mode
            if mode is Mode.SPOOLING:
                self._drain()
            elif mode is Mode.MEMORY_ONLY:
                self._probe_outbox()
            else:
                self._wait_in_direct_mode()

    def _check_outbox_at_start(self) -> None:
        try:
            outbox = self._spool.get()
            old_rows = outbox.pending_count()
        except OutboxError as exc:
            self._outbox_failed(exc)
        else:
            with self._lock:
                if self._sender is None:
                    self._modes.change(Event.OUTBOX_HAS_ROWS, "no API: the outbox is the sink")
                elif old_rows:
                    self._modes.change(Event.OUTBOX_HAS_ROWS, f"{old_rows} rows")
        with self._lock:
            self._ready = True
            for cv in self._part_cv:
                cv.notify_all()

    def _wait_in_direct_mode(self) -> None:
        """Sleep until the mode changes or the poll interval passes; then look for rows
        other processes left in the outbox."""
        with self._lock:
            if self._modes.mode is Mode.DIRECT and not self._closing:
                self._coord_cv.wait(self._poll_interval)
            if self._modes.mode is not Mode.DIRECT or self._closing:
                return
        outbox = self._spool.opened
        if outbox is None or self._spool.health is not OutboxHealth.OK or self._sender is None:
            return
        try:
            pending = outbox.pending_count()
        except OutboxError as exc:
            self._outbox_failed(exc)
            return
        if pending:
            with self._lock:
                if not self._closing:
                    self._modes.change(Event.OUTBOX_HAS_ROWS, f"{pending} rows left by others")

    def _probe_outbox(self) -> None:
        """In memory-only mode: try the outbox when the backoff says so."""
        wait = self._spool.probe_in()
        with self._lock:
            if self._closing or self._modes.mode is not Mode.MEMORY_ONLY:
                return
            if wait is None or wait > 0:
                self._coord_cv.wait(wait)  # None: broken for good, wait for shutdown
                return
        if self._spool.probe():
            with self._lock:
                self._modes.change(Event.OUTBOX_WRITABLE, "a probe succeeded")

    def _drain(self) -> None:
        """Spool what is queued and drain the outbox until empty (or the mode changes)."""
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
                    if not self._closing and self._modes.mode is Mode.SPOOLING:
                        self._coord_cv.wait(0.5 if self._sender is not None else None)
                continue
            outbox, rows = step
            failure = self._send_rows(outbox, rows)
            if failure is None:
                backoff.reset()
                continue
            wait = backoff.next_wait(failure.retry_after) or self._probe_policy.max_backoff
            self._pause(wait, self._coord_cv)

    def _drain_step(self) -> Literal["done", "idle"] | tuple[Outbox, list[OutboxRow]]:
        """Under the spill lock: spool the queue, then claim a batch or finish draining."""
        with self._spill_lock:
            with self._lock:
                if self._closing or self._modes.mode is not Mode.SPOOLING:
                    return "done"
                if self._queue.in_flight():
                    # A sender still holds a record taken in direct mode: claiming now
                    # could send its key's later rows before it. It settles or comes
                    # back shortly (the mode change cuts its retry pause short).
                    return "idle"
                # Taken in the same breath as the look above: nothing in flight now
                # can come back to the queue after this.
                items = self._queue.take_all()
            if items and not self._write_items(items, extra=[]):
                return "done"  # the outbox failed: memory-only now
            try:
                outbox = self._spool.get()
                self._apply_unsettled(outbox)
                rows = self._claim(outbox)
                # Only a sender waits on this process's own rows; without one, skip the look.
                needs_look = not rows and self._sender is not None
                own_pending = needs_look and outbox.has_pending(self._session)
            except OutboxError as exc:
                self._outbox_failed(exc)
                return "done"
            if rows:
                return outbox, rows
            with self._lock:
                if len(self._queue) or own_pending or self._sender is None:
                    if self._flush_targets:
                        self._idle_cv.notify_all()  # nothing is being delivered now
                    return "idle"
                self._modes.change(Event.OUTBOX_DRAINED)
                self._notify_all_locked()
            try:
                outbox.drain_lock.release()
            except OSError as exc:
                _log.info("could not release the drain lock: %s", exc)
            return "done"

    def _claim(self, outbox: Outbox) -> list[OutboxRow]:
        if self._sender is None:
            return []
        rows = claim(outbox, self._drain_batch, recover=self._unsettled is not None)
        with self._lock:
            self._drain_refused = rows is None
        return rows or []

    def _apply_unsettled(self, outbox: Outbox) -> None:
        """Write a settlement the outbox did not take before (so nothing is sent twice)."""
        if self._unsettled is not None:
            outbox.settle(self._unsettled)
            self._unsettled = None

    def _send_rows(self, outbox: Outbox, rows: list[OutboxRow]) -> Transient | None:
        """Send claimed rows on the sender threads, by key; settle them in the outbox."""
        by_part: list[list[OutboxRow]] = [[] for _ in range(self._n)]
        for row in rows:
            by_part[self._queue.partition_of(row.call.ordering_key)].append(row)
        with self._lock:
            for i, part_rows in enumerate(by_part):
                if part_rows:
                    self._results[i] = None
                    self._tasks[i] = part_rows
                    self._part_cv[i].notify()
            # Wait for every share, also while shutting down: a batch merged before its
            # senders are done would leave rows the API already took unsettled, and the
            # next drain would send them again. Shutdown bounds this by closing the
            # sender, which ends a call still hanging.
            while any(t is not None for t in self._tasks):
                self._coord_cv.wait()
            batch = Batch.merged(r for r in self._results if r is not None)
            self._results = [None] * self._n
            if batch.sent or batch.rejected or batch.failure:
                self._api_down = batch.failure is not None
            if batch.failure is not None:
                self._counters["retried"] += 1
        try:
            outbox.settle(batch.settlement)
        except OutboxError as exc:
            self._unsettled = batch.settlement
            self._outbox_failed(exc)
        with self._lock:
            self._counters["sent"] += batch.sent
            self._counters["rejected"] += batch.rejected
            if self._flush_targets:
                self._idle_cv.notify_all()  # their rows may be delivered, or the API down
        return batch.failure

    def _run_drain_task(self, i: int, rows: list[OutboxRow]) -> None:
        assert self._sender is not None
        batch = Batch(failure=Transient("the sender thread failed"))
        batch.settlement.released = [row.id for row in rows]
        try:
            batch = send_rows(
                rows,
                self._sender,
                self.bindings,
                self._spool.opened,
                stop=lambda: self._closing,
                settle_each=self._in_child,
            )
        finally:
            with self._lock:
                self._results[i] = batch
                self._tasks[i] = None
                self._coord_cv.notify()

    def _spill(self, extra: list[Item]) -> None:
        """Move the queue (and ``extra``, newer) to the outbox from the calling thread.

        ``extra`` is one record the caller has already counted in transit.
        """
        with self._spill_lock:
            with self._lock:
                items = self._queue.take_all()
                if items or extra:
                    self._modes.change(Event.QUEUE_FULL)
                self._coord_cv.notify()
            if items or extra:
                self._write_items(items, extra)

    def _write_items(self, items: list[Item], extra: list[Item]) -> bool:
        """Commit ``items`` and ``extra`` to the outbox; on failure put ``items`` back
        (and drop ``extra``, counted). Either way both leave transit once settled."""
        everything = items + extra
        try:
            self._store(everything)
        except OutboxError as exc:
            self._outbox_failed(exc)
            with self._lock:
                self._queue.put_back(items)
                for cv in self._part_cv:
                    cv.notify()
                self._drop_locked(len(extra), f"the queue is full and the outbox failed: {exc}")
                self._end_transit_locked(items, extra)
            return False
        with self._lock:
            self._counters["spooled"] += len(everything)
            self._end_transit_locked(items, extra)
        return True

    def _store(self, items: list[Item]) -> list[int]:
        """Commit ``items`` as pending rows under their submission numbers; a dependent
        whose provider's id is known already is stored with it filled in."""
        calls = []
        for item in items:
            call = item.call
            if call.needs is not None:
                binding = self.bindings.get(call.needs)
                if binding is not None and binding.value is not None:
                    call = call.resolved(binding.value)
            calls.append(call)
        ids = self._spool.store(calls, session=self._session, seqs=[it.seq for it in items])
        if self._modes.mode is Mode.MEMORY_ONLY:
            with self._lock:
                self._modes.change(Event.OUTBOX_WRITABLE, "a commit succeeded")
        return ids

    def _outbox_failed(self, exc: OutboxError) -> None:
        self._spool.failed(exc)
        with self._lock:
            if self._closing:
                _log.debug("outbox use during shutdown failed: %s", exc)
                return
            self._modes.change(Event.OUTBOX_FAILED, str(exc))
            self._notify_all_locked()

    def _end_transit_locked(self, *batches: list[Item]) -> None:
        for batch in batches:
            self._queue.end_transit(batch)
        if self._flush_targets:
            self._idle_cv.notify_all()

    def _persist_on_shutdown(self, timeout: float) -> bool:
        """Write what is still in memory, in flight included, to the outbox."""
        if not self._spill_lock.acquire(timeout=timeout):
            with self._lock:
                stranded = len(self._queue) + len(self._queue.in_flight())
                self._drop_locked(stranded, "shutdown timed out before the outbox was free")
            return False
        try:
            with self._lock:
                items = self._queue.take_all()
                busy = self._queue.in_flight()
            everything = sorted(items + busy, key=lambda it: it.seq)
            if not everything:
                return True
            try:
                ids = self._store(everything)
            except OutboxError as exc:
                self._spool.failed(exc)
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

    def _draining_toward(self, target: int) -> bool:
        """Whether own rows up to ``target`` wait in the outbox for a drain now delivering."""
        with self._lock:
            if (
                self._modes.mode is not Mode.SPOOLING
                or self._closing
                or self._sender is None
                or self._api_down
                or self._drain_refused
            ):
                return False
        outbox = self._spool.opened
        if outbox is None:
            return False
        try:
            return outbox.has_pending(self._session, up_to_seq=target)
        except OutboxError:
            return False

    def _pause(self, seconds: float, cv: threading.Condition, *, direct: bool = False) -> bool:
        """Wait ``seconds`` unless closing (or, with ``direct``, the mode turns to
        spooling). Returns False when cut short; other notifications do not end it."""
        deadline = self._clock() + seconds
        with self._lock:
            while True:
                if self._closing or (direct and self._modes.mode is Mode.SPOOLING):
                    return False
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return True
                cv.wait(remaining)

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
        """Whether no record up to ``target`` is queued, in flight or on its way out."""
        lowest = self._queue.lowest_unsettled()
        return lowest is None or lowest > target

    def _flush_at_child_exit(self) -> None:
        """A multiprocessing child that ends normally runs its finalizers, not the
        interpreter's exit hooks: deliver what its drain still has then (bounded), so
        fewer rows are left to be sent again by whoever drains the outbox next."""
        multiprocessing.util.Finalize(
            self,
            DeliveryService.force_flush,
            args=(self, CHILD_EXIT_FLUSH_SECONDS),
            exitpriority=10,
        )

    def _after_fork_in_child(self) -> None:
        self._init_state()
        self._shutdown_result = None
        self._in_child = True


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
