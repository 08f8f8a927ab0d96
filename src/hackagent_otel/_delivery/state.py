"""What the delivery service's parts share: one lock, its conditions, and what they guard.

The senders, the coordinator and the spiller (and the service's own caller-side
methods) each work on one :class:`DeliveryState`. It holds the memory queue, the mode,
the outbox's spool, the counters and the few flags more than one part reads, all
guarded by :attr:`DeliveryState.lock`, plus the small helpers every part needs under
that lock (count a drop, wake whoever waits, wait cut short by shutdown). One lock for
everything, as in the SDK's ``BatchProcessor``: the parts are separate to be read, not
to be locked apart. A method named ``..._locked`` expects the lock held.

Starts no thread and does no I/O beyond logging; the spool is given, not opened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hackagent_otel._delivery.modes import Event, Mode, ModeMachine
from hackagent_otel._delivery.outbox import OutboxError
from hackagent_otel._delivery.queue import Item, PartitionedQueue
from hackagent_otel._delivery.spool import Spool
from hackagent_otel._throttle import ThrottledLog

__all__ = ["COUNTERS", "DeliveryState"]

_log = logging.getLogger("hackagent_otel.delivery")

#: The service's counters, in the order ``DeliveryStats`` lists them.
COUNTERS = ("submitted", "sent", "retried", "spooled", "rejected", "dropped", "errors")


class DeliveryState:
    """The queue, the mode, the spool, the counters and the shared flags, under one lock.

    ``partitions`` is the number of sender threads (one condition each); ``clock``
    measures every deadline.
    """

    def __init__(
        self,
        partitions: int,
        queue_size: int,
        spool: Spool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.Lock()
        #: One per sender: its partition has work, or a drain share was handed to it.
        self.part_cv = [threading.Condition(self.lock) for _ in range(partitions)]
        #: The coordinator's: the mode changed, rows arrived, a drain share settled.
        self.coord_cv = threading.Condition(self.lock)
        #: ``force_flush`` callers': something they wait for may have settled.
        self.idle_cv = threading.Condition(self.lock)
        #: One writer of queued records to the outbox at a time (taken before ``lock``).
        self.spill_lock = threading.Lock()
        self.queue = PartitionedQueue(partitions, queue_size)
        self.modes = ModeMachine(Mode.DIRECT)
        self.spool = spool
        self.clock = clock
        #: Marks this process's rows in the outbox (``has_pending`` asks by it).
        self.session = time.time_ns()
        self.closing = False
        #: Senders wait until the outbox has been checked for rows left by others.
        self.ready = False
        #: The last call showed the API failing (force_flush then does not wait for it).
        self.api_down = False
        #: A Retry-After that outlasted the direct retry budget: the drain waits for it.
        self.resume_at = 0.0
        #: Rows shutdown wrote for records still in flight (seq -> row id).
        self.persisted_busy: dict[int, int] = {}
        #: The highest submission numbers ``force_flush`` callers wait for.
        self.flush_targets: list[int] = []
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._drop_log = ThrottledLog(_log)

    @property
    def mode(self) -> Mode:
        return self.modes.mode

    def stopped_locked(self) -> bool:
        """Whether nothing more may be taken: shutting down or shut down."""
        return self.closing or self.modes.mode is Mode.CLOSED

    def notify_all_locked(self) -> None:
        for cv in self.part_cv:
            cv.notify_all()
        self.coord_cv.notify_all()
        self.idle_cv.notify_all()

    def flushed_locked(self, target: int) -> bool:
        """Whether no record up to ``target`` is queued, in flight or on its way out."""
        lowest = self.queue.lowest_unsettled()
        return lowest is None or lowest > target

    def wake_flushers_locked(self) -> None:
        """Wake force_flush callers only when one of them can return (keeps senders lean)."""
        if self.flush_targets and self.flushed_locked(min(self.flush_targets)):
            self.idle_cv.notify_all()

    def nudge_flushers_locked(self) -> None:
        """Wake force_flush callers to look again (their rows may have moved)."""
        if self.flush_targets:
            self.idle_cv.notify_all()

    def end_transit_locked(self, *batches: list[Item]) -> None:
        for batch in batches:
            self.queue.end_transit(batch)
        self.nudge_flushers_locked()

    def drop_locked(self, count: int, reason: str) -> None:
        """Count and log ``count`` records lost (repeated lines are throttled)."""
        if count <= 0:
            return
        self.counters["dropped"] += count
        self._drop_log.warning(
            "dropped %d HackAgent record(s): %s (%d dropped in total)",
            count,
            reason,
            self.counters["dropped"],
        )

    def outbox_failed(self, exc: OutboxError) -> None:
        """The outbox could not be used: the spool learns it and records stay in memory."""
        self.spool.failed(exc)
        with self.lock:
            if self.closing:
                _log.debug("outbox use during shutdown failed: %s", exc)
                return
            self.modes.change(Event.OUTBOX_FAILED, str(exc))
            self.notify_all_locked()

    def pause(self, seconds: float, cv: threading.Condition, *, direct: bool = False) -> bool:
        """Wait ``seconds`` unless closing (or, with ``direct``, the mode turns to
        spooling). Returns False when cut short; other notifications do not end it."""
        deadline = self.clock() + seconds
        with self.lock:
            while True:
                if self.closing or (direct and self.modes.mode is Mode.SPOOLING):
                    return False
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return True
                cv.wait(remaining)

    def survive(self, loop: Callable[[], None], name: str) -> None:
        """Run a thread's loop; after an unexpected error, log, count and carry on."""
        while True:
            try:
                loop()
                return
            except Exception:
                _log.exception("delivery %s failed; carrying on", name)
                with self.lock:
                    self.counters["errors"] += 1
                    if self.closing:
                        return
                    self.coord_cv.wait(0.5)  # a bug must not spin
