"""The coordinator thread: it follows the mode, and in ``spooling`` mode drains the outbox.

At start it looks for rows an earlier process left (then it spools), and until it has
looked no sender sends. Then, by mode:

* ``direct``: sleep until the mode changes, looking every poll interval for rows other
  processes left in the outbox;
* ``spooling``: move what is queued to the outbox, claim a batch in claim order, hand
  it to the senders by key, settle it; probe with backoff while the API is down; back
  to ``direct`` when the outbox holds none of this process's rows;
* ``memory_only``: probe the outbox with backoff until it can be written again.

Draining starts only once nothing taken in direct mode is still in flight, so a key's
later rows never overtake a record a sender still holds. Works on the
:class:`~hackagent_otel._delivery.state.DeliveryState` it is given; the service starts
the thread (:meth:`Coordinator.run` is its body).
"""

from __future__ import annotations

import logging
from typing import Literal

from hackagent_otel._delivery.drain import claim
from hackagent_otel._delivery.modes import Event, Mode
from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow, Settlement
from hackagent_otel._delivery.outcome import Sender, Transient
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.senders import Senders
from hackagent_otel._delivery.spill import Spiller
from hackagent_otel._delivery.spool import OutboxHealth
from hackagent_otel._delivery.state import DeliveryState

__all__ = ["Coordinator"]

_log = logging.getLogger("hackagent_otel.delivery")


class Coordinator:
    """What the coordinator thread does. ``sender`` is ``None`` without an API (the
    outbox is then the sink and nothing is claimed)."""

    def __init__(
        self,
        state: DeliveryState,
        senders: Senders,
        spiller: Spiller,
        sender: Sender | None,
        *,
        probe_policy: RetryPolicy,
        drain_batch: int,
        poll_interval: float,
    ) -> None:
        self._state = state
        self._senders = senders
        self._spiller = spiller
        self._sender = sender
        self._probe_policy = probe_policy
        self._drain_batch = drain_batch
        self._poll_interval = poll_interval
        #: Another process held the drain lock at the last claim.
        self._drain_refused = False
        #: A drained batch's settlement the outbox did not take: applied first when back.
        self._unsettled: Settlement | None = None

    def run(self) -> None:
        """Check the outbox for old rows, then follow the mode: poll, drain or probe."""
        state = self._state
        if not state.ready:
            self._check_outbox_at_start()
        while True:
            with state.lock:
                if state.stopped_locked():
                    return
                mode = state.modes.mode
            if mode is Mode.SPOOLING:
                self._drain()
            elif mode is Mode.MEMORY_ONLY:
                self._probe_outbox()
            else:
                self._wait_in_direct_mode()

    def draining_toward(self, target: int) -> bool:
        """Whether own rows up to ``target`` wait in the outbox for a drain now delivering."""
        state = self._state
        with state.lock:
            if (
                state.modes.mode is not Mode.SPOOLING
                or state.closing
                or self._sender is None
                or state.api_down
                or self._drain_refused
            ):
                return False
        outbox = state.spool.opened
        if outbox is None:
            return False
        try:
            return outbox.has_pending(state.session, up_to_seq=target)
        except OutboxError:
            return False

    # -- by mode -----------------------------------------------------------------------
    def _check_outbox_at_start(self) -> None:
        state = self._state
        try:
            outbox = state.spool.get()
            old_rows = outbox.pending_count()
        except OutboxError as exc:
            state.outbox_failed(exc)
        else:
            with state.lock:
                if self._sender is None:
                    state.modes.change(Event.OUTBOX_HAS_ROWS, "no API: the outbox is the sink")
                elif old_rows:
                    state.modes.change(Event.OUTBOX_HAS_ROWS, f"{old_rows} rows")
        with state.lock:
            state.ready = True
            for cv in state.part_cv:
                cv.notify_all()

    def _wait_in_direct_mode(self) -> None:
        """Sleep until the mode changes or the poll interval passes; then look for rows
        other processes left in the outbox."""
        state = self._state
        with state.lock:
            if state.modes.mode is Mode.DIRECT and not state.closing:
                state.coord_cv.wait(self._poll_interval)
            if state.modes.mode is not Mode.DIRECT or state.closing:
                return
        outbox = state.spool.opened
        if outbox is None or state.spool.health is not OutboxHealth.OK or self._sender is None:
            return
        try:
            pending = outbox.pending_count()
        except OutboxError as exc:
            state.outbox_failed(exc)
            return
        if pending:
            with state.lock:
                if not state.closing:
                    state.modes.change(Event.OUTBOX_HAS_ROWS, f"{pending} rows left by others")

    def _probe_outbox(self) -> None:
        """In memory-only mode: try the outbox when the backoff says so."""
        state = self._state
        wait = state.spool.probe_in()
        with state.lock:
            if state.closing or state.modes.mode is not Mode.MEMORY_ONLY:
                return
            if wait is None or wait > 0:
                state.coord_cv.wait(wait)  # None: broken for good, wait for shutdown
                return
        if state.spool.probe():
            with state.lock:
                state.modes.change(Event.OUTBOX_WRITABLE, "a probe succeeded")

    # -- draining ----------------------------------------------------------------------
    def _drain(self) -> None:
        """Spool what is queued and drain the outbox until empty (or the mode changes)."""
        state = self._state
        backoff = self._probe_policy.backoff()
        while True:
            with state.lock:
                hold = state.resume_at - state.clock()
            if hold > 0:
                state.pause(hold, state.coord_cv)  # the API asked for it (Retry-After)
            step = self._drain_step()
            if step == "done":
                return
            if step == "idle":
                # Nothing to send now: no API, or another process holds the drain lock.
                with state.lock:
                    if not state.closing and state.modes.mode is Mode.SPOOLING:
                        state.coord_cv.wait(0.5 if self._sender is not None else None)
                continue
            outbox, rows = step
            failure = self._send_rows(outbox, rows)
            if failure is None:
                backoff.reset()
                continue
            wait = backoff.next_wait(failure.retry_after) or self._probe_policy.max_backoff
            state.pause(wait, state.coord_cv)

    def _drain_step(self) -> Literal["done", "idle"] | tuple[Outbox, list[OutboxRow]]:
        """Under the spill lock: spool the queue, then claim a batch or finish draining."""
        state = self._state
        with state.spill_lock:
            with state.lock:
                if state.closing or state.modes.mode is not Mode.SPOOLING:
                    return "done"
                if state.queue.in_flight():
                    # A sender still holds a record taken in direct mode: claiming now
                    # could send its key's later rows before it. It settles or comes
                    # back shortly (the mode change cuts its retry pause short).
                    return "idle"
                # Taken in the same breath as the look above: nothing in flight now
                # can come back to the queue after this.
                items = state.queue.take_all()
            if items and not self._spiller.write(items, extra=[]):
                return "done"  # the outbox failed: memory-only now
            try:
                outbox = state.spool.get()
                self._apply_unsettled(outbox)
                rows = self._claim(outbox)
                # Only a sender waits on this process's own rows; without one, skip the look.
                needs_look = not rows and self._sender is not None
                own_pending = needs_look and outbox.has_pending(state.session)
            except OutboxError as exc:
                state.outbox_failed(exc)
                return "done"
            if rows:
                return outbox, rows
            with state.lock:
                if len(state.queue) or own_pending or self._sender is None:
                    state.nudge_flushers_locked()  # nothing is being delivered now
                    return "idle"
                state.modes.change(Event.OUTBOX_DRAINED)
                state.notify_all_locked()
            try:
                outbox.drain_lock.release()
            except OSError as exc:
                _log.info("could not release the drain lock: %s", exc)
            return "done"

    def _claim(self, outbox: Outbox) -> list[OutboxRow]:
        if self._sender is None:
            return []
        rows = claim(outbox, self._drain_batch, recover=self._unsettled is not None)
        with self._state.lock:
            self._drain_refused = rows is None
        return rows or []

    def _apply_unsettled(self, outbox: Outbox) -> None:
        """Write a settlement the outbox did not take before (so nothing is sent twice)."""
        if self._unsettled is not None:
            outbox.settle(self._unsettled)
            self._unsettled = None

    def _send_rows(self, outbox: Outbox, rows: list[OutboxRow]) -> Transient | None:
        """Send claimed rows on the sender threads; settle them in the outbox."""
        state = self._state
        batch = self._senders.dispatch(rows)
        with state.lock:
            if batch.sent or batch.rejected or batch.failure:
                state.api_down = batch.failure is not None
            if batch.failure is not None:
                state.counters["retried"] += 1
        try:
            outbox.settle(batch.settlement)
        except OutboxError as exc:
            self._unsettled = batch.settlement
            state.outbox_failed(exc)
        with state.lock:
            state.counters["sent"] += batch.sent
            state.counters["rejected"] += batch.rejected
            state.nudge_flushers_locked()  # their rows may be delivered, or the API down
        return batch.failure
