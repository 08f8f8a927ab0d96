"""One trace per run: where each run's spans hang.

The first span of a run decides its anchor. If the caller has an active span, the run
joins the caller's trace under it. Otherwise a ``hackagent.run`` root span is started
whose trace id *is* the run's UUID, so a run's timeline is found in Jaeger from its run
id alone. Later spans of the run with no active span of their own (a bare thread, a
second tracker on the same run id) hang from the same anchor, so the run stays one
trace. A root span ends with the run's terminal status, at ``shutdown()`` or at exit,
so Jaeger never sees steps whose parent is missing; at most :data:`MAX_OPEN_RUNS` are
open at once (past it the oldest ends, so runs that never end cannot grow memory).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context

from hackagent_otel import _tracer, semconv
from hackagent_otel._forksafe import renew_after_fork
from hackagent_otel._throttle import ThrottledLog

_logger = logging.getLogger("hackagent_otel")


def trace_id_for_run(run_id: str) -> int:
    """The trace id of a run: its UUID's 128 bits, or a hash of a non-UUID id."""
    try:
        value = uuid.UUID(str(run_id)).int
    except ValueError:
        value = int.from_bytes(hashlib.sha256(str(run_id).encode()).digest()[:16], "big")
    return value or 1


def trace_id_hex_for_run(run_id: str) -> str:
    """The run's trace id as Jaeger shows it (32 hex digits)."""
    return format(trace_id_for_run(run_id), "032x")


def _canonical(run_id: str) -> str:
    """One spelling per run: UUIDs in their canonical lower-case form."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return run_id


#: Runs whose root span may be open at once. A run that never gets a terminal status
#: (a crashed loop, a pipeline that only ever sets RUNNING) would otherwise keep its
#: span for the life of the process: 40,000 such runs held 205 MB. Past the bound the
#: oldest run's root span ends (``ended_by=evicted``, counted and logged); a later step
#: of that run starts a new root span in the same trace. Records do not depend on it.
MAX_OPEN_RUNS = 1024


@dataclass(slots=True)
class _Anchor:
    context: Context
    root: trace.Span | None
    #: Every spelling of the run id it is found under (the canonical one first).
    spellings: list[str] = field(default_factory=list)


class RunAnchors:
    """Process-wide registry of run anchors, at most ``max_open`` of them; thread-safe."""

    def __init__(self, max_open: int = MAX_OPEN_RUNS) -> None:
        self._max_open = max_open
        self._anchors: dict[str, _Anchor] = {}  # any spelling of a run id -> its anchor
        self._oldest_first: OrderedDict[str, _Anchor] = OrderedDict()  # canonical ids
        self.evicted = 0
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._exit_hook_registered = False
        self._eviction_log = ThrottledLog(_logger)

    def parent_for(self, run_id: str) -> Context | None:
        """Parent context for a new span of ``run_id``; ``None`` means the current one."""
        current = trace.get_current_span().get_span_context()
        anchor = self._anchors.get(run_id)
        if anchor is None:
            anchor = self._create(run_id, current)
        if current.is_valid:
            return None
        return anchor.context

    def _create(self, spelling: str, current: trace.SpanContext) -> _Anchor:
        run_id = _canonical(spelling)
        evicted: list[_Anchor] = []
        with self._lock:
            anchor = self._anchors.get(run_id)
            if anchor is None:
                if current.is_valid:
                    context = trace.set_span_in_context(trace.NonRecordingSpan(current))
                    anchor = _Anchor(context, None)
                else:
                    root = _tracer.start_root_span(
                        semconv.SPAN_RUN,
                        trace_id_for_run(run_id),
                        {semconv.KIND: semconv.KIND_RUN, semconv.RUN_ID: run_id},
                    )
                    anchor = _Anchor(trace.set_span_in_context(root, Context()), root)
                    self._register_exit_hook()
                anchor.spellings.append(run_id)
                self._anchors[run_id] = anchor
                self._oldest_first[run_id] = anchor
                while len(self._oldest_first) > self._max_open:
                    evicted.append(self._forget(self._oldest_first.popitem(last=False)[1]))
            if spelling not in self._anchors:
                anchor.spellings.append(spelling)
                self._anchors[spelling] = anchor
        for old in evicted:
            self._end(old, "evicted")
        if evicted:
            with self._lock:
                self.evicted += len(evicted)
                total = self.evicted
            self._eviction_log.warning(
                "hackagent_otel: more than %d runs open at once; the oldest run's span was "
                "ended (%d so far; give runs a terminal status to end them yourself)",
                self._max_open,
                total,
            )
        return anchor

    def _forget(self, anchor: _Anchor) -> _Anchor:
        """Drop every spelling of ``anchor``'s run (the lock is held)."""
        for spelling in anchor.spellings:
            self._anchors.pop(spelling, None)
        return anchor

    @staticmethod
    def _end(anchor: _Anchor, ended_by: str) -> None:
        if anchor.root is not None:
            anchor.root.set_attribute(semconv.RUN_ENDED_BY, ended_by)
            anchor.root.end()

    def _register_exit_hook(self) -> None:
        # Registered after the first root span exists, hence after its provider: atexit
        # runs handlers last-in first-out, so open runs end before providers shut down.
        if not self._exit_hook_registered:
            self._exit_hook_registered = True
            atexit.register(self.end_all, "exit")

    def end_run(self, run_id: str, ended_by: str) -> None:
        """End the run's root span, if we own one; its next span starts a new anchor."""
        canonical = _canonical(run_id)
        with self._lock:
            anchor = self._oldest_first.pop(canonical, None)
            if anchor is not None:
                self._forget(anchor)
        if anchor is not None:
            self._end(anchor, ended_by)

    def end_all(self, ended_by: str) -> None:
        """End every open run (``shutdown()``, interpreter exit)."""
        for run_id in self.open_runs():
            try:
                self.end_run(run_id, ended_by)
            except Exception:  # a span processor's on_end that raises; the rest still end
                _logger.exception("hackagent_otel: ending run %s failed", run_id)

    def open_runs(self) -> list[str]:
        with self._lock:
            return list(self._oldest_first)


runs = RunAnchors()
