"""``HackAgentSpanProcessor``: live HackAgent records from in-process spans.

An exporter only ever sees finished spans, but the original tracker made a step's
start record as the step began, so a long step showed up in HackAgent at once. This
processor hands a step's start to delivery from ``on_start`` and the rest from
``on_end``. It sees every span we record, sampled or not (our sampler hook keeps
HackAgent spans as RECORD_ONLY), so records do not depend on the user's sampler.

The pipeline's thread only appends the span to a queue; mapping to records and
delivery happen on a background thread. If that thread falls far behind, the caller
maps the span itself rather than drop it (backpressure, counted). In a child process
(forked, or started by multiprocessing) the caller maps each span itself and commits
its records to the outbox before going on, since such children often end without
running exit hooks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from hackagent_otel import _mapping, _tracer, semconv
from hackagent_otel._forksafe import register
from hackagent_otel._records import Record
from hackagent_otel._spanview import SpanView, from_sdk_span

_logger = logging.getLogger("hackagent_otel.processor")

_START = 0
_END = 1

#: How long ``shutdown()`` (also at interpreter exit) waits for delivery; what is not
#: delivered by then is written to the outbox and delivered later.
SHUTDOWN_TIMEOUT_MILLIS = 5_000

#: Processors not yet shut down; the exporter leaves their spans to them.
LIVE_PROCESSORS: weakref.WeakSet[HackAgentSpanProcessor] = weakref.WeakSet()

#: Processors with spans queued that their mapping thread has yet to take up. The thread
#: holds its processor only while it maps (:func:`_map_while_alive`); this holds it from
#: the first span queued until then, so a processor dropped without ``shutdown()``
#: maps what it was given before it is collected.
_QUEUED: set[HackAgentSpanProcessor] = set()
register(_QUEUED.clear)  # a child starts with empty queues


class RecordSink(Protocol):
    """Where records go: delivery to the API, or the outbox."""

    def submit(self, record: Record) -> None: ...

    def accept_durably(self, records: Sequence[Record]) -> None: ...

    def force_flush(self, timeout: float) -> bool: ...

    def shutdown(self, timeout: float) -> bool: ...


class MappingCounters:
    """Spans seen and records produced, and every span that could not be mapped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans = 0
        self.records = 0
        self.unmappable = 0
        self.inline = 0
        self.not_durable = 0
        self.cut_by_span_limits = 0

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "spans": self.spans,
                "records": self.records,
                "unmappable": self.unmappable,
                "mapped_inline": self.inline,
                "not_durable": self.not_durable,
                "cut_by_span_limits": self.cut_by_span_limits,
            }


def submit_mapped(mapped: _mapping.Mapped, sink: RecordSink, counters: MappingCounters) -> None:
    """Hand ``mapped``'s records to ``sink``; log and count what could not be mapped."""
    for record in mapped.records:
        sink.submit(record)
    with counters.lock:
        counters.records += len(mapped.records)
        counters.unmappable += len(mapped.problems)
    for problem in mapped.problems:
        _logger.warning("hackagent_otel: span left without records: %s", problem)


def _count_cuts(span: ReadableSpan, kept: _tracer.KeptData, counters: MappingCounters) -> None:
    """Count (and log once) spans the SDK's span limits cut: their records are whole,
    made from what the tracker set, but the span a backend sees is not."""
    attributes = span.attributes
    if attributes is None:
        cut = True
    else:
        dropped = getattr(span, "dropped_attributes", 0) or getattr(span, "dropped_events", 0)
        cut = (
            bool(dropped)
            or len(span.events) < len(kept.events)
            or (
                _values_may_be_cut(span)
                and any(attributes.get(key) != value for key, value in kept.attributes.items())
            )
        )
    if not cut:
        return
    with counters.lock:
        counters.cut_by_span_limits += 1
        first = counters.cut_by_span_limits == 1
    if first:
        _logger.warning(
            "hackagent_otel: span limits (OTEL_SPAN_*_LIMIT) cut span %r; its HackAgent "
            "records are whole, the span backends see is not (counted in "
            "cut_by_span_limits)",
            span.name,
        )


def _values_may_be_cut(span: ReadableSpan) -> bool:
    """Whether the SDK may have shortened the span's attribute values: only under a
    length limit, which its attributes hold (where they do not say, it may have). Without
    one, comparing every value with the tracker's copy at each span's end finds nothing."""
    return getattr(getattr(span, "_attributes", None), "max_value_len", 0) is not None


class HackAgentSpanProcessor(SpanProcessor):
    """Turns our spans into HackAgent records, live, off the pipeline's threads.

    Args:
        sink_for_run: the sink for a run id (a run's own client, or the default).
        max_backlog: spans queued for mapping before callers map inline. A queued span
            holds about 3 KB, so the default bounds the queue near 25 MB; a pipeline that
            outruns the mapping thread for longer then pays for its own mapping instead
            of growing memory (measured in ``bench/memory.py``).
    """

    def __init__(
        self, sink_for_run: Callable[[str], RecordSink | None], *, max_backlog: int = 8_192
    ) -> None:
        self._sink_for_run = sink_for_run
        self._max_backlog = max_backlog
        self.counters = MappingCounters()
        self._queue: deque[tuple[int, ReadableSpan]] = deque()
        self._wake = threading.Event()
        self._idle = True
        self._enqueued = 0
        self._done = 0
        self._progress = threading.Condition()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._enqueue_lock = threading.Lock()
        self._map_lock = threading.Lock()
        self._stopping = False
        self._detached = False
        self._pid = os.getpid()
        # In a child process (forked, or started by multiprocessing) records are
        # committed to the outbox as they are made: such children often end through
        # os._exit (multiprocessing, pre-fork servers) or SIGTERM (Pool.terminate), so
        # nothing kept in memory until exit would survive them.
        self._durable = multiprocessing.parent_process() is not None
        LIVE_PROCESSORS.add(self)
        _tracer.add_taker(self)  # our spans keep what they are given whole, for us
        register(self._after_fork_in_child)

    # -- SpanProcessor -------------------------------------------------------------------
    def detach(self) -> None:
        """Ignore every span from now on: a newer processor took over (``configure()``
        called again on a provider we do not own, which cannot drop a processor)."""
        self._detached = True
        _tracer.drop_taker(self)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._detached:
            return
        kept = _tracer.kept_at_start(span)  # what span limits cannot cut
        attributes = kept.attributes if kept is not None else span.attributes
        if attributes is None or attributes.get(semconv.KIND) != semconv.KIND_STEP:
            return
        # The span itself is queued, not a copy: the start record reads only attributes
        # the tracker sets at start and never changes, so mapping it later (possibly
        # after the step ended) gives the same record, at no cost to the caller.
        self._enqueue(_START, span)

    def on_end(self, span: ReadableSpan) -> None:
        if self._detached:
            return
        attributes = span.attributes
        if attributes is None or semconv.KIND not in attributes:
            # Ours too when span limits cut the kind: what the tracker kept says.
            kept = _tracer.kept_for(span)
            if kept is None or semconv.KIND not in kept.attributes:
                return
        self._enqueue(_END, span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        if not self._wait_mapped(deadline):
            return False
        # Every sink gets its flush, even after one has timed out.
        flushed = [
            sink.force_flush(max(deadline - time.monotonic(), 0.0)) for sink in self._sinks()
        ]
        return all(flushed)

    def shutdown(self, timeout_millis: int = SHUTDOWN_TIMEOUT_MILLIS) -> None:
        """Map what is queued, then stop delivery within the timeout.

        Each sink gets the time left: it delivers what it can and writes the rest to
        the outbox (so a hanging API costs at most the timeout, and nothing is lost).
        """
        if self._stopping:
            return
        deadline = time.monotonic() + timeout_millis / 1000
        self._wait_mapped(deadline)
        self._stopping = True
        self._wake.set()
        LIVE_PROCESSORS.discard(self)
        _tracer.drop_taker(self)
        for sink in self._sinks():
            sink.shutdown(max(deadline - time.monotonic(), 0.0))

    def _wait_mapped(self, deadline: float) -> bool:
        """Wait until every span enqueued so far has been mapped and handed to its sink."""
        with self._enqueue_lock:
            target = self._enqueued
        with self._progress:
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.set()
                self._progress.wait(min(remaining, 0.05))
        return True

    # -- the mapping thread ----------------------------------------------------------------
    def _enqueue(self, phase: int, span: ReadableSpan) -> None:
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if self._durable:
            with self._map_lock:
                self._map_guarded(phase, span)
            return
        if self._stopping:  # shut down: the sink counts what it can no longer take
            self._map_guarded(phase, span)
            return
        with self._enqueue_lock:  # a lost increment would let force_flush return early
            self._enqueued += 1
            self._queue.append((phase, span))
            if len(self._queue) == 1:
                _QUEUED.add(self)
        if self._worker is None:
            self._start_worker()
        if len(self._queue) > self._max_backlog:
            # Backpressure: the caller maps the OLDEST queued spans itself until the
            # backlog is back at its bound, so a result's records never jump the queue.
            while len(self._queue) > self._max_backlog and self._map_next():
                with self.counters.lock:
                    self.counters.inline += 1
        elif self._idle and not self._wake.is_set():
            # Set once until the mapping thread takes it up (it clears the event just
            # before each round): setting it again costs a lock and a notify each span.
            self._wake.set()

    def _start_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=_map_while_alive,
                    args=(weakref.ref(self),),
                    name="hackagent-otel-mapper",
                    daemon=True,
                )
                self._worker.start()

    def _map_queued(self) -> threading.Event | None:
        """One round of the mapping thread: map until the queue is empty. Returns the
        event to wait on before the next round, or ``None`` once shut down."""
        self._idle = False
        while True:
            while self._map_next():
                pass
            if self._stopping:
                _QUEUED.discard(self)
                return None
            self._idle = True  # from here on, a span queued sets the event
            with self._enqueue_lock:
                if not self._queue:
                    _QUEUED.discard(self)
                    return self._wake
            self._idle = False  # one came in before the flag was up

    def _map_next(self) -> bool:
        """Map the oldest queued span and hand its records on; False if none was queued.

        One lock around taking and submitting keeps records in queue order whether the
        mapping thread or a caller under backpressure does the work.
        """
        with self._map_lock:
            try:
                phase, span = self._queue.popleft()
            except IndexError:
                return False
            self._map_guarded(phase, span)
        with self._progress:
            self._done += 1
            self._progress.notify_all()
        return True

    def _map_guarded(self, phase: int, span: ReadableSpan) -> None:
        try:
            self._map(phase, span)
        except Exception:  # never into the pipeline's thread
            _logger.exception("hackagent_otel: mapping a span failed")
            with self.counters.lock:
                self.counters.unmappable += 1

    def _map(self, phase: int, span: ReadableSpan) -> None:
        started_only = phase == _START
        kept = _tracer.kept_for(span) if started_only else _tracer.take_kept(span)
        if kept is not None and not started_only:
            _count_cuts(span, kept, self.counters)
        view: SpanView = from_sdk_span(span, started_only=started_only, kept=kept)
        with self.counters.lock:
            self.counters.spans += phase == _END
        run_id = view.attributes.get(semconv.RUN_ID)
        sink = self._sink_for_run(run_id if isinstance(run_id, str) else "")
        if sink is None:  # records for this run are made elsewhere (a Collector + bridge)
            return
        # Our tracker's spans: mapped with the sanitizer it sanitized them with.
        sanitizer = _tracer.source.sanitizer
        mapped = (
            _mapping.map_start(view, sanitizer)
            if phase == _START
            else _mapping.map_end(view, sanitizer, include_start=False)
        )
        if self._durable and mapped.records:
            self._commit(mapped, sink)
        else:
            submit_mapped(mapped, sink, self.counters)

    def _commit(self, mapped: _mapping.Mapped, sink: RecordSink) -> None:
        """In a child process: the records into the outbox now, before the caller goes
        on (delivery sends them from there); if the outbox cannot take them, they are
        queued in memory, as in the parent, and that is counted and logged."""
        try:
            sink.accept_durably(mapped.records)
        except Exception as exc:
            with self.counters.lock:
                self.counters.not_durable += len(mapped.records)
            _logger.warning(
                "hackagent_otel: a child process could not commit %d record(s) to the "
                "outbox (%s); they wait in memory and are lost if it exits at once",
                len(mapped.records),
                exc,
            )
            submit_mapped(mapped, sink, self.counters)
            return
        with self.counters.lock:
            self.counters.records += len(mapped.records)
            self.counters.unmappable += len(mapped.problems)
        for problem in mapped.problems:
            _logger.warning("hackagent_otel: span left without records: %s", problem)

    def stats(self) -> dict[str, int]:
        """Spans mapped, records produced, spans that could not be mapped, backlog."""
        return {**self.counters.snapshot(), "backlog": len(self._queue)}

    def sinks(self) -> list[RecordSink]:
        """The sinks records went to so far."""
        return self._sinks()

    def _sinks(self) -> list[RecordSink]:
        sinks = getattr(self._sink_for_run, "sinks", None)
        return list(sinks()) if callable(sinks) else []

    def _after_fork_in_child(self) -> None:
        # The parent maps and delivers what it had queued; the child starts empty, with
        # fresh locks (the parent's mapping thread may have held one at the fork).
        self._pid = os.getpid()
        self.counters.lock = threading.Lock()
        self._queue = deque()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._worker_lock = threading.Lock()
        self._enqueue_lock = threading.Lock()
        self._map_lock = threading.Lock()
        self._worker = None
        self._idle = True
        self._enqueued = self._done = 0
        self._durable = True


def _map_while_alive(processor_ref: weakref.ref[HackAgentSpanProcessor]) -> None:
    """The mapping thread. It holds its processor only for a round of mapping, never
    while it waits, so a processor dropped without ``shutdown()`` is collected like any
    other object (and drops out of :data:`LIVE_PROCESSORS`); the thread then ends."""
    while (processor := processor_ref()) is not None:
        wake = processor._map_queued()
        del processor
        if wake is None:
            return
        wake.wait(0.5)
        wake.clear()
