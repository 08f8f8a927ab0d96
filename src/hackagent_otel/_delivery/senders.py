"""The sender threads: one per partition, each on its own connection.

In ``direct`` mode a sender takes its partition's records from the memory queue and
sends each one, retrying transient failures with jittered backoff for up to the
policy's ``max_elapsed``; past it (or when the mode turns to spooling) the record goes
back to the front of its partition and the service starts spooling. In
``memory_only`` mode there is nowhere else to keep a record, so it is retried without a
time limit. A rejected record is kept in the outbox's rejected rows. While the outbox
drains, the coordinator hands each sender its share of a claimed batch
(:meth:`Senders.dispatch`): rows of one key go to one sender, in claim order.

Works on the :class:`~hackagent_otel._delivery.state.DeliveryState` it is given; the
service starts the threads (:meth:`Senders.loop` is each one's body).
"""

from __future__ import annotations

import logging

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.drain import (
    Batch,
    Waiting,
    learn_answer,
    request_for,
    safe_send,
    send_rows,
)
from hackagent_otel._delivery.modes import Event, Mode
from hackagent_otel._delivery.outbox import OutboxError, OutboxRow
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Sender, Transient
from hackagent_otel._delivery.queue import Item
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.spool import OutboxHealth
from hackagent_otel._delivery.state import DeliveryState
from hackagent_otel._records import Call

__all__ = ["Senders"]

_log = logging.getLogger("hackagent_otel.delivery")


class Senders:
    """What the sender threads do; ``settle_each`` (a child process) commits each
    delivered drain row at once instead of per batch."""

    def __init__(
        self,
        state: DeliveryState,
        sender: Sender | None,
        policy: RetryPolicy,
        bindings: Bindings,
        *,
        settle_each: bool,
    ) -> None:
        self._state = state
        self._sender = sender
        self._policy = policy
        self._bindings = bindings
        self._settle_each = settle_each
        n = len(state.part_cv)
        self._shares: list[list[OutboxRow] | None] = [None] * n
        self._results: list[Batch | None] = [None] * n

    @property
    def count(self) -> int:
        return len(self._shares)

    def loop(self, i: int) -> None:
        """Sender ``i``'s body: a drain share when one is handed over, else its
        partition's records in direct (or memory-only) mode; returns once closed."""
        state = self._state
        cv = state.part_cv[i]
        while True:
            with state.lock:
                while True:
                    if state.modes.mode is Mode.CLOSED:
                        return
                    share = self._shares[i]
                    if share is not None:
                        item = None
                        break
                    if (
                        state.ready
                        and state.modes.mode is not Mode.SPOOLING
                        and state.queue.has_work(i)
                        and not state.closing
                    ):
                        item = state.queue.take(i)
                        break
                    cv.wait()
            if share is not None:
                self._send_share(i, share)
            elif item is not None:
                try:
                    self._send_direct(i, item)
                except BaseException:
                    with state.lock:  # not lost: back to the queue for the next try
                        self._hand_back_locked(i, item, "the sender thread failed")
                    raise

    # -- from memory -------------------------------------------------------------------
    def _send_direct(self, i: int, item: Item) -> None:
        state = self._state
        backoff = self._policy.backoff()
        while True:
            outcome = self._attempt(item.call)
            if isinstance(outcome, Delivered):
                learn_answer(item.call, outcome, self._bindings)
                with state.lock:
                    state.counters["sent"] += 1
                    self._settle_locked(i, item, delivered=True)
                return
            if isinstance(outcome, Rejected):
                learn_answer(item.call, outcome, self._bindings)
                self._keep_rejected(item, outcome)
                with state.lock:
                    self._settle_locked(i, item, delivered=False)
                return
            wait = backoff.next_wait(outcome.retry_after)
            with state.lock:
                mode = state.modes.mode
                if mode is Mode.MEMORY_ONLY and wait is None:
                    wait = self._policy.max_backoff  # nowhere else to keep it: go on trying
                if wait is None or state.closing or mode in (Mode.SPOOLING, Mode.CLOSED):
                    self._hand_back_locked(i, item, outcome.reason, outcome.retry_after)
                    return
                state.counters["retried"] += 1
            if not state.pause(wait, state.part_cv[i], direct=True):
                with state.lock:
                    self._hand_back_locked(i, item, outcome.reason)
                return

    def _attempt(self, call: Call) -> Outcome:
        """One try of ``call`` from memory (a dependent waiting for its provider is
        transient: its provider is ahead of it in the same partition)."""
        assert self._sender is not None
        spool = self._state.spool
        outbox = spool.opened if spool.health is OutboxHealth.OK else None
        request = request_for(call, self._bindings, outbox)
        if isinstance(request, Waiting):
            return Transient(request.reason)
        if isinstance(request, Rejected):
            return request
        return safe_send(self._sender, request)

    def _settle_locked(self, i: int, item: Item, *, delivered: bool) -> None:
        state = self._state
        state.api_down = False  # it answered
        state.queue.settle(i, item)
        row_id = state.persisted_busy.pop(item.seq, None)
        outbox = state.spool.opened
        if row_id is not None and delivered and outbox is not None:
            # shutdown already saved it; it arrived after all: drop the saved copy.
            try:
                outbox.mark_delivered([row_id])
            except OutboxError:
                _log.info("a record delivered during shutdown stays in the outbox too")
        if state.modes.mode is Mode.SPOOLING:
            state.coord_cv.notify()  # it may be waiting for in-flight records to settle
        state.wake_flushers_locked()

    def _hand_back_locked(
        self, i: int, item: Item, reason: str, retry_after: float | None = None
    ) -> None:
        """Return an unsent record to the front of its partition and start spooling.

        A server's ``Retry-After`` that ran past the direct retry budget still holds:
        the outbox's drain sends nothing before it is over.
        """
        state = self._state
        if retry_after is not None:
            until = state.clock() + min(retry_after, self._policy.max_retry_after)
            state.resume_at = max(state.resume_at, until)
        saved = item.seq in state.persisted_busy or state.modes.mode is Mode.CLOSED
        state.persisted_busy.pop(item.seq, None)
        state.queue.hand_back(i, item, requeue=not saved)
        state.api_down = True
        state.modes.change(Event.API_UNAVAILABLE, reason)
        state.coord_cv.notify()
        state.nudge_flushers_locked()

    def _keep_rejected(self, item: Item, outcome: Rejected) -> None:
        state = self._state
        call = item.call
        _log.warning(
            "HackAgent API rejected %s %s (%s); kept in the outbox's rejected rows",
            call.method,
            call.path,
            outcome.reason,
        )
        try:
            state.spool.store_rejected(
                call, outcome.status, outcome.reason, session=state.session, seq=item.seq
            )
        except OutboxError as exc:
            state.outbox_failed(exc)
            with state.lock:
                state.drop_locked(1, f"rejected record could not be kept: {exc}")
            return
        with state.lock:
            state.counters["rejected"] += 1

    # -- from the outbox ---------------------------------------------------------------
    def dispatch(self, rows: list[OutboxRow]) -> Batch:
        """Send claimed rows on the sender threads, by key, and wait for every share.

        Also while shutting down: a batch merged before its senders are done would
        leave rows the API already took unsettled, and the next drain would send them
        again. Shutdown bounds this by closing the sender, which ends a call still
        hanging.
        """
        state = self._state
        shares: list[list[OutboxRow]] = [[] for _ in range(self.count)]
        for row in rows:
            shares[state.queue.partition_of(row.call.ordering_key)].append(row)
        with state.lock:
            for i, share in enumerate(shares):
                if share:
                    self._results[i] = None
                    self._shares[i] = share
                    state.part_cv[i].notify()
            while any(share is not None for share in self._shares):
                state.coord_cv.wait()
            batch = Batch.merged(r for r in self._results if r is not None)
            self._results = [None] * self.count
        return batch

    def _send_share(self, i: int, rows: list[OutboxRow]) -> None:
        assert self._sender is not None
        state = self._state
        batch = Batch(failure=Transient("the sender thread failed"))
        batch.settlement.released = [row.id for row in rows]
        try:
            batch = send_rows(
                rows,
                self._sender,
                self._bindings,
                state.spool.opened,
                stop=lambda: state.closing,
                settle_each=self._settle_each,
            )
        finally:
            with state.lock:
                self._results[i] = batch
                self._shares[i] = None
                state.coord_cv.notify()
