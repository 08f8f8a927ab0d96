"""Spilling: records in memory move to the outbox, in submission order, or stay counted.

Three moments write queued records to the outbox: the queue is full (from the caller's
thread, with the record that did not fit), the coordinator starts a drain (everything
still queued goes first, so the drain sees every record in order), and shutdown (also
what is in flight: it may never settle). A record is stored under its submission
number, so the outbox hands rows back in the order they were made; a dependent whose
provider's id is known already is stored with it filled in. When the outbox refuses,
queued records go back to memory and the one that did not fit is dropped and counted.

Works on the :class:`~hackagent_otel._delivery.state.DeliveryState` it is given, under
its ``spill_lock`` (one writer at a time) and ``lock``; starts no thread.
"""

from __future__ import annotations

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.modes import Event, Mode
from hackagent_otel._delivery.outbox import OutboxError
from hackagent_otel._delivery.queue import Item
from hackagent_otel._delivery.state import DeliveryState

__all__ = ["Spiller"]


class Spiller:
    """Writes the state's queued records to its outbox."""

    def __init__(self, state: DeliveryState, bindings: Bindings) -> None:
        self._state = state
        self._bindings = bindings

    def spill(self, extra: list[Item]) -> None:
        """Move the queue (and ``extra``, newer) to the outbox from the calling thread.

        ``extra`` is one record the caller has already counted in transit.
        """
        state = self._state
        with state.spill_lock:
            with state.lock:
                items = state.queue.take_all()
                if items or extra:
                    state.modes.change(Event.QUEUE_FULL)
                state.coord_cv.notify()
            if items or extra:
                self.write(items, extra)

    def write(self, items: list[Item], extra: list[Item]) -> bool:
        """Commit ``items`` and ``extra`` to the outbox; on failure put ``items`` back
        (and drop ``extra``, counted). Either way both leave transit once settled.
        The caller holds ``spill_lock``."""
        state = self._state
        everything = items + extra
        try:
            self.store(everything)
        except OutboxError as exc:
            state.outbox_failed(exc)
            with state.lock:
                state.queue.put_back(items)
                for cv in state.part_cv:
                    cv.notify()
                state.drop_locked(len(extra), f"the queue is full and the outbox failed: {exc}")
                state.end_transit_locked(items, extra)
            return False
        with state.lock:
            state.counters["spooled"] += len(everything)
            state.end_transit_locked(items, extra)
        return True

    def store(self, items: list[Item]) -> list[int]:
        """Commit ``items`` as pending rows under their submission numbers (raises
        :class:`OutboxError`); a commit that succeeds ends memory-only mode."""
        state = self._state
        calls = []
        for item in items:
            call = item.call
            if call.needs is not None:
                binding = self._bindings.get(call.needs)
                if binding is not None and binding.value is not None:
                    call = call.resolved(binding.value)
            calls.append(call)
        ids = state.spool.store(calls, session=state.session, seqs=[it.seq for it in items])
        if state.modes.mode is Mode.MEMORY_ONLY:
            with state.lock:
                state.modes.change(Event.OUTBOX_WRITABLE, "a commit succeeded")
        return ids

    def persist_on_shutdown(self, timeout: float) -> bool:
        """Write what is still in memory, in flight included, to the outbox; False when
        some of it was dropped (counted) because the outbox was busy or refused."""
        state = self._state
        if not state.spill_lock.acquire(timeout=timeout):
            with state.lock:
                stranded = len(state.queue) + len(state.queue.in_flight())
                state.drop_locked(stranded, "shutdown timed out before the outbox was free")
            return False
        try:
            with state.lock:
                items = state.queue.take_all()
                busy = state.queue.in_flight()
            everything = sorted(items + busy, key=lambda it: it.seq)
            if not everything:
                return True
            try:
                ids = self.store(everything)
            except OutboxError as exc:
                state.spool.failed(exc)
                with state.lock:
                    state.drop_locked(len(everything), f"could not persist at shutdown: {exc}")
                    state.end_transit_locked(items)
                return False
            busy_seqs = {b.seq for b in busy}
            with state.lock:
                state.counters["spooled"] += len(everything)
                state.end_transit_locked(items)
                for item, row_id in zip(everything, ids, strict=True):
                    if item.seq in busy_seqs:
                        state.persisted_busy[item.seq] = row_id
            return True
        finally:
            state.spill_lock.release()
