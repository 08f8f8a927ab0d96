"""One trace per run: where each run's spans hang.

The first span of a run decides its anchor. If the caller has an active span, the run
joins the caller's trace under it. Otherwise a ``hackagent.run`` root span is started
whose trace id *is* the run's UUID, so a run's timeline is found in Jaeger from its run
id alone. Later spans of the run with no active span of their own (a bare thread, a
second tracker on the same run id) hang from the same anchor, so the run stays one
trace. A root span ends with the run's terminal status, at ``shutdown()`` or at exit,
so Jaeger never sees steps whose parent is missing.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context

from hackagent_otel import _tracer, semconv
from hackagent_otel._forksafe import renew_after_fork

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


@dataclass(slots=True)
class _Anchor:
    context: Context
    root: trace.Span | None


class RunAnchors:
    """Process-wide registry of run anchors; thread-safe."""

    def __init__(self) -> None:
        self._anchors: dict[str, _Anchor] = {}
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._exit_hook_registered = False

    def parent_for(self, run_id: str) -> Context | None:
        """Parent context for a new span of ``run_id``; ``None`` means the current one."""
        current = trace.get_current_span().get_span_context()
        anchor = self._anchors.get(run_id)
        if anchor is None:
            anchor = self._create(_canonical(run_id), current)
            self._anchors.setdefault(run_id, anchor)
        if current.is_valid:
            return None
        return anchor.context

    def _create(self, run_id: str, current: trace.SpanContext) -> _Anchor:
        with self._lock:
            anchor = self._anchors.get(run_id)
            if anchor is not None:
                return anchor
            if current.is_valid:
                anchor = _Anchor(trace.set_span_in_context(trace.NonRecordingSpan(current)), None)
            else:
                root = _tracer.start_root_span(
                    semconv.SPAN_RUN,
                    trace_id_for_run(run_id),
                    {semconv.KIND: semconv.KIND_RUN, semconv.RUN_ID: run_id},
                )
                anchor = _Anchor(trace.set_span_in_context(root, Context()), root)
                self._register_exit_hook()
            self._anchors[run_id] = anchor
            return anchor

    def _register_exit_hook(self) -> None:
        # Registered after the first root span exists, hence after its provider: atexit
        # runs handlers last-in first-out, so open runs end before providers shut down.
        if not self._exit_hook_registered:
            self._exit_hook_registered = True
            atexit.register(self.end_all, "exit")

    def end_run(self, run_id: str, ended_by: str) -> None:
        """End the run's root span, if we own one; its next span starts a new anchor."""
        with self._lock:
            anchor = self._anchors.pop(_canonical(run_id), None)
            if anchor is not None:  # and every spelling of the run id that led to it
                for alias in [k for k, v in self._anchors.items() if v is anchor]:
                    del self._anchors[alias]
        if anchor is not None and anchor.root is not None:
            anchor.root.set_attribute(semconv.RUN_ENDED_BY, ended_by)
            anchor.root.end()

    def end_all(self, ended_by: str) -> None:
        """End every open run (``shutdown()``, interpreter exit)."""
        with self._lock:
            run_ids = list(dict.fromkeys(_canonical(k) for k in self._anchors))
        for run_id in run_ids:
            try:
                self.end_run(run_id, ended_by)
            except Exception:  # a span processor's on_end that raises; the rest still end
                _logger.exception("hackagent_otel: ending run %s failed", run_id)

    def open_runs(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys(_canonical(k) for k in self._anchors))


runs = RunAnchors()
