"""DeliveryService: records go out in the background, in order per key, and are not lost.

A thin service over small parts, each readable alone:

* :class:`~hackagent_otel._delivery.state.DeliveryState`: the one lock, its conditions,
  and what they guard (queue, mode, spool, counters, the shared flags);
* :class:`~hackagent_otel._delivery.queue.PartitionedQueue`: the bounded memory queue,
  one partition per sender thread, chosen by ordering key (a result's records leave in
  submission order; other results travel in parallel on their own connections);
* :class:`~hackagent_otel._delivery.modes.ModeMachine`: where records go (``direct``,
  ``spooling``, ``memory_only``, ``closed``), changed in one place along a table
  (docs/architecture.md);
* :class:`~hackagent_otel._delivery.senders.Senders`: the sender threads, from memory
  in direct mode, a drain batch's shares while spooling;
* :class:`~hackagent_otel._delivery.coordinator.Coordinator`: the thread that follows
  the mode: polls, drains the outbox, probes it while it cannot be written;
* :class:`~hackagent_otel._delivery.spill.Spiller`: queued records to the outbox (full
  queue, drain, shutdown);
* :class:`~hackagent_otel._delivery.spool.Spool`: the outbox, and whether it can be
  written now; :mod:`~hackagent_otel._delivery.drain`: claim, send, settle (shared with
  ``push``); :class:`~hackagent_otel._delivery.bindings.Bindings`: ids from earlier
  answers for the records that depend on them.

The service itself is the callers' side: ``submit`` only appends to the queue and
background threads do all I/O; ``accept_durably``, ``force_flush``, ``shutdown`` and
``stats``; it starts the threads and rebuilds the parts in a forked child.

Order per key holds across retries and spills because each record gets a submission
number and the outbox hands rows back by that number; draining starts only after every
record still in memory or in flight has reached the outbox or been settled.

Every thread logs, counts (``errors``) and carries on after an unexpected error. Every
drop is counted and logged. Fork: a child starts empty (the inherited records belong to
the parent, which still delivers them), with its own threads, connections and outbox.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.util
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.coordinator import Coordinator
from hackagent_otel._delivery.modes import Event, Mode
from hackagent_otel._delivery.outbox import Outbox, OutboxError
from hackagent_otel._delivery.outcome import Sender
from hackagent_otel._delivery.queue import Item
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.senders import Senders
from hackagent_otel._delivery.spill import Spiller
from hackagent_otel._delivery.spool import OutboxHealth, Spool
from hackagent_otel._delivery.state import COUNTERS, DeliveryState
from hackagent_otel._forksafe import register
from hackagent_otel._records import Call, Record

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
        """(Re)build the shared state and the parts over it (also after fork)."""
        spool = Spool(
            self._given_outbox,
            path=self._outbox_path,
            target=self._outbox_target,
            probe_policy=self._probe_policy,
            clock=self._clock,
        )
        self._state = state = DeliveryState(self._n, self._queue_size, spool, self._clock)
        self._spiller = Spiller(state, self.bindings)
        self._senders = Senders(
            state, self._sender, self._policy, self.bindings, settle_each=self._in_child
        )
        self._coordinator = Coordinator(
            state,
            self._senders,
            self._spiller,
            self._sender,
            probe_policy=self._probe_policy,
            drain_batch=self._drain_batch,
            poll_interval=self._poll_interval,
        )
        self._seq = 0
        self._started = False
        self._threads: list[threading.Thread] = []

    # -- the caller's side -------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue ``record`` for delivery; never waits on the network, never raises.

        When the queue is full, the queue and the record are written to the outbox from
        this thread (one transaction); if that fails too, the record is dropped and
        counted.
        """
        state = self._state
        try:
            call = Call.from_record(record)
        except (TypeError, ValueError, RecursionError) as exc:
            with state.lock:
                state.counters["submitted"] += 1
                state.drop_locked(1, f"{record.method} {record.path}: body is not JSON: {exc}")
            return
        with state.lock:
            state.counters["submitted"] += 1
            if state.stopped_locked():
                state.drop_locked(1, "the delivery service is shut down")
                return
            if not self._started:
                self._start_locked()
            item = Item(self._seq, call)
            self._seq += 1
            part = state.queue.offer(item)
            if part is not None:
                if state.modes.mode is Mode.SPOOLING:
                    state.coord_cv.notify()
                else:
                    state.part_cv[part].notify()
                return
            if state.modes.mode is Mode.MEMORY_ONLY:
                state.drop_locked(1, "the queue is full and the outbox cannot be written")
                return
            state.queue.begin_transit([item])
        self._spiller.spill(extra=[item])

    def start(self) -> None:
        """Start the background threads now instead of at the first record; idempotent.

        A long-running process (the bridge) calls it at start-up so rows an earlier
        process left in the outbox are delivered without waiting for new records.
        """
        with self._state.lock:
            if not self._started and not self._state.closing:
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
        state = self._state
        calls: list[Call] = []
        for record in records:
            try:
                calls.append(Call.from_record(record))
            except (TypeError, ValueError, RecursionError) as exc:
                with state.lock:
                    state.drop_locked(1, f"{record.method} {record.path}: not JSON: {exc}")
        if not calls:
            return
        with state.spill_lock:
            with state.lock:
                if state.stopped_locked():
                    raise OutboxError("the delivery service is shut down")
                if not self._started:
                    self._start_locked()
                first = self._seq
                self._seq += len(calls)
            items = [Item(first + i, call) for i, call in enumerate(calls)]
            try:
                self._spiller.store(items)
            except OutboxError as exc:  # the numbers taken are simply unused
                state.outbox_failed(exc)
                raise
        with state.lock:
            state.counters["submitted"] += len(items)
            state.counters["spooled"] += len(items)
            state.modes.change(Event.OUTBOX_HAS_ROWS, "records accepted")
            state.coord_cv.notify()

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
        state = self._state
        deadline = self._clock() + max(0.0, timeout)
        with state.lock:
            target = self._seq - 1
        while True:
            with state.lock:
                flushed = state.flushed_locked(target)
                spooling = state.modes.mode is Mode.SPOOLING
            if spooling and not flushed:
                self._spiller.spill(extra=[])  # records handed back by senders: write them
                with state.lock:
                    flushed = state.flushed_locked(target)
            if flushed and not self._coordinator.draining_toward(target):
                return True
            with state.lock:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return state.flushed_locked(target)  # if so, the rest is in the outbox
                state.flush_targets.append(target)
                try:
                    state.idle_cv.wait(min(remaining, 0.05 if spooling else 0.1))
                finally:
                    state.flush_targets.remove(target)

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Deliver what can be delivered within ``timeout``, persist the rest; idempotent.

        Returns within ``timeout`` even when the API hangs: in-flight calls are not
        waited for past the deadline (their records are written to the outbox and may
        be delivered twice, never lost). True when nothing was dropped meanwhile.
        """
        if self._shutdown_result is not None:
            return self._shutdown_result
        state = self._state
        started = self._clock()
        with state.lock:
            dropped_before = state.counters["dropped"]
        reserve = min(1.0, timeout * 0.2)
        flushed = self.force_flush(max(0.0, timeout - reserve))
        with state.lock:
            state.closing = True
            state.notify_all_locked()
        remaining = max(0.05, timeout - (self._clock() - started))
        persisted = self._spiller.persist_on_shutdown(remaining)
        with state.lock:
            state.modes.change(Event.SHUTDOWN)
            state.notify_all_locked()
            lost = state.counters["dropped"] > dropped_before
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
        state.spool.close()
        for thread in self._threads[1:]:
            thread.join(timeout=max(0.0, timeout - (self._clock() - started)))
        self._shutdown_result = (flushed or persisted) and not lost
        return self._shutdown_result

    def stats(self) -> DeliveryStats:
        """A snapshot of the counters (reads the outbox's pending count)."""
        state = self._state
        with state.lock:
            counters = dict(state.counters)
            queued = len(state.queue) + len(state.queue.in_flight())
            mode = state.modes.mode
        pending: int | None = None
        spool = state.spool
        outbox = spool.opened
        if outbox is not None and spool.health is not OutboxHealth.BROKEN:
            try:
                pending = outbox.pending_count()
            except OutboxError:
                pending = None
        return DeliveryStats(
            **{name: counters[name] for name in COUNTERS},
            queued=queued,
            outbox_pending=pending,
            mode=mode,
            outbox=spool.health,
            outbox_error=spool.error,
        )

    @property
    def mode(self) -> Mode:
        """Where records go now (see :class:`~hackagent_otel._delivery.modes.Mode`)."""
        return self._state.modes.mode

    # -- threads -----------------------------------------------------------------------
    def _start_locked(self) -> None:
        self._started = True
        survive = self._state.survive
        self._threads = [
            threading.Thread(
                target=survive,
                args=(self._coordinator.run, "outbox coordinator"),
                name="hackagent-otel-delivery-outbox",
                daemon=True,
            )
        ]
        self._threads += [
            threading.Thread(
                target=survive,
                args=(functools.partial(self._senders.loop, i), f"sender {i}"),
                name=f"hackagent-otel-sender-{i}",
                daemon=True,
            )
            for i in range(self._n)
        ]
        for thread in self._threads:
            thread.start()

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
        self._in_child = True
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
