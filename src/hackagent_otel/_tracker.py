"""``StepTracker``: hackagent's step tracker, re-made on OpenTelemetry spans.

Each ``track_step`` is a span named after the step, carrying the ``hackagent.*``
attributes of :mod:`hackagent_otel.semconv`; metadata and progress become events on the
step they were recorded in; status updates are short spans of their own. Nothing here
touches the network or the SDK: turning spans into HackAgent records is the exporter's
job, off the pipeline's threads. Tracking never breaks the pipeline: internal errors are
logged and counted, and the caller's own exception is re-raised unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from hackagent_otel import _tracer, semconv
from hackagent_otel._context import MAX_METADATA_KEYS, MAX_PROGRESS_ENTRIES, TrackingContext
from hackagent_otel._enums import (
    TERMINAL_RUN_STATUSES,
    EvaluationStatusEnum,
    StatusEnum,
    StepTypeEnum,
    _ApiEnum,
    enum_value,
)
from hackagent_otel._forksafe import renew_after_fork
from hackagent_otel._routing import routes
from hackagent_otel._runs import runs
from hackagent_otel._sanitize import Sanitizer

__all__ = ["MAX_METADATA_KEYS", "MAX_PROGRESS_ENTRIES", "StepTracker", "TrackingStats", "stats"]

DEFAULT_EVALUATION_NOTES = "Status updated"
#: Read once: an enum member's ``.value`` is a property lookup on every step.
_TRACE_TYPE_OTHER: str = StepTypeEnum.OTHER.value


class TrackingStats:
    """Counts of what tracking itself had to drop or could not do; never reset silently."""

    __slots__ = ("__weakref__", "_lock", "counts")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self.counts: dict[str, int] = {
            "metadata_dropped": 0,
            "progress_dropped": 0,
            "late_entries_dropped": 0,
            "internal_errors": 0,
        }

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


#: A metadata key longer than this is cut (with a marker saying by how much): twenty
#: 1 MB keys made a 20 MB API body.
MAX_METADATA_KEY_CHARS = 256

stats = TrackingStats()


class _Step:
    """A step in flight: its span and what was recorded in it."""

    __slots__ = (
        "context",
        "ended",
        "kept",
        "metadata",
        "metadata_dropped",
        "parent",
        "progress",
        "progress_dropped",
        "span",
    )

    def __init__(
        self,
        context: TrackingContext,
        parent: _Step | None,
        span: trace.Span,
        kept: _tracer.KeptData | None,
        metadata: dict[str, tuple[int, str]],
        progress: list[tuple[int, str, str]],
    ) -> None:
        self.context = context
        self.parent = parent
        self.span = span
        self.kept = kept  # what is kept beside the span for the records, if anything
        self.metadata = metadata
        #: At most MAX_PROGRESS_ENTRIES, the oldest dropped first (a list: a step rarely
        #: has many, and a bounded deque costs more to make than every step saves).
        self.progress = progress
        self.metadata_dropped = 0
        self.progress_dropped = 0
        self.ended = False


class _RecordingOrder:
    """Orders recording in a step (from any thread running in its context) against the
    step's end, so an entry is either emitted or counted as late, never lost.

    One lock for all steps: it is held for a few dict or list operations only, and a
    lock per step cost more to make (and to renew after a fork) than it ever waited.
    """

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        renew_after_fork(self, "lock")  # a step may go on in a child forked inside it


_recording = _RecordingOrder()


_CURRENT_STEP: ContextVar[_Step | None] = ContextVar("hackagent_current_step", default=None)


def _record_metadata(step: _Step, key: str, entry: tuple[int, str]) -> str:
    """Store one metadata entry on a step (``_recording.lock`` held): what became of it."""
    if step.ended:
        return "late"
    if key in step.metadata or len(step.metadata) < MAX_METADATA_KEYS:
        step.metadata.pop(key, None)
        step.metadata[key] = entry
        return "stored"
    step.metadata_dropped += 1
    stats.add("metadata_dropped")
    return "first_dropped" if step.metadata_dropped == 1 else "dropped"


class _StepScope:
    """What ``track_step`` returns: starts the step on entry and ends it on exit.

    A plain class rather than a generator-based context manager: it is on every
    step's path, and this is the cheaper of the two.
    """

    __slots__ = ("_args", "_otel_token", "_step", "_step_token", "_tracker")

    def __init__(
        self, tracker: StepTracker, step_name: str, step_type: str, input_data: Any, config: Any
    ) -> None:
        self._tracker = tracker
        self._args = (step_name, step_type, input_data, config)
        self._step: _Step | None = None

    def __enter__(self) -> str | None:
        tracker = self._tracker
        if not tracker.context.is_enabled:
            return None
        step = tracker._start(*self._args)
        if step is None:
            return None
        self._step = step
        self._step_token = _CURRENT_STEP.set(step)
        self._otel_token = otel_context.attach(trace.set_span_in_context(step.span))
        span_context = step.span.get_span_context()
        return format(span_context.span_id, "016x") if span_context.is_valid else None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        step = self._step
        if step is None:
            return
        self._step = None
        if isinstance(exc, GeneratorExit):
            exc = None  # a generator holding the step was closed early: nothing failed
        try:
            self._tracker._end(step, exc)
        finally:
            otel_context.detach(self._otel_token)  # logs, never raises
            try:
                _CURRENT_STEP.reset(self._step_token)
            except ValueError:
                # Exited in another context than it was entered in (a framework running
                # __enter__ and __exit__ in separate copies): never let that replace the
                # user's exception; restore the enclosing step by hand instead.
                _CURRENT_STEP.set(step.parent)
                stats.add("internal_errors")


class StepTracker:
    """Tracks pipeline steps of one :class:`TrackingContext` as OpenTelemetry spans.

    Drop-in for ``hackagent.router.tracking.StepTracker``: same methods, same
    arguments, same return types; the pipeline no longer waits on the API.
    """

    def __init__(self, context: TrackingContext) -> None:
        self.context = context
        self.logger = context.logger

    # -- steps -------------------------------------------------------------------------
    def track_step(
        self,
        step_name: str,
        step_type: str,
        input_data: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> AbstractContextManager[str | None]:
        """Track the ``with`` block as one pipeline step.

        Yields the step's id (its span id, 16 hex digits), or ``None`` when tracking is
        disabled. The original yielded the API's trace record id, which only exists
        after a blocking round trip; records now carry the span id instead. An
        exception from the block marks the step failed and is re-raised unchanged.
        """
        return _StepScope(self, step_name, step_type, input_data, config)

    def _start(self, step_name: str, step_type: str, input_data: Any, config: Any) -> _Step | None:
        ctx = self.context
        try:
            sanitizer = _tracer.source.sanitizer
            run_id = str(ctx.run_id)
            if ctx.client is not None:
                routes.register(run_id, ctx.client)
            # Names are free text too (an f-string with a URL and its key): scrubbed.
            name = sanitizer.sanitize_text(step_name)
            attributes: dict[str, AttributeValue] = {
                semconv.KIND: semconv.KIND_STEP,
                semconv.RUN_ID: run_id,
                semconv.STEP_NAME: name,
                semconv.STEP_TYPE: sanitizer.sanitize_text(step_type, 256),
                semconv.STEP_TRACE_TYPE: _TRACE_TYPE_OTHER,
                semconv.STEP_SEQUENCE_START: ctx.increment_sequence(),
            }
            target = ctx.result_target()
            if target is not None:
                attributes[semconv.RESULT_ID if target[0] == "id" else semconv.GOAL_REF] = target[1]
            if config is not None:
                attributes[semconv.STEP_CONFIG] = sanitizer.dumps(config)
            if input_data is not None:
                attributes[semconv.STEP_INPUT] = sanitizer.dumps(input_data)
            pending_metadata, pending_progress, metadata_dropped, progress_dropped = (
                ctx.pending.take()
            )
            if ctx.metadata or pending_metadata or pending_progress:
                attributes[semconv.STEP_CONTEXT_METADATA] = _context_metadata(
                    ctx, pending_metadata, pending_progress, sanitizer
                )
            span, kept = _tracer.start_kept_span(
                name,
                runs.parent_for(run_id),
                attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            step = _Step(ctx, _CURRENT_STEP.get(), span, kept, pending_metadata, pending_progress)
            step.metadata_dropped = metadata_dropped
            step.progress_dropped = progress_dropped
            return step
        except Exception:
            self._internal_error("starting step %r", step_name)
            return None

    def _end(self, step: _Step, exc: BaseException | None) -> None:
        try:
            span = step.span
            attributes: dict[str, AttributeValue] = {
                semconv.STEP_STATUS: semconv.STEP_STATUS_FAILED
                if exc is not None
                else semconv.STEP_STATUS_COMPLETED,
                semconv.STEP_SEQUENCE_END: step.context.increment_sequence(),
            }
            with _recording.lock:  # from here on nothing is added to the step: read as is
                step.ended = True
                metadata_dropped, progress_dropped = step.metadata_dropped, step.progress_dropped
            if metadata_dropped:
                attributes[semconv.STEP_METADATA_DROPPED] = metadata_dropped
            if progress_dropped:
                attributes[semconv.STEP_PROGRESS_DROPPED] = progress_dropped
            kept = step.kept
            for key, (timestamp, value) in step.metadata.items():
                _tracer.add_kept_event(
                    span,
                    kept,
                    semconv.EVENT_METADATA,
                    {semconv.METADATA_KEY: key, semconv.METADATA_VALUE: value},
                    timestamp,
                    handed_over=True,
                )
            for timestamp, message, metrics in step.progress:
                _tracer.add_kept_event(
                    span,
                    kept,
                    semconv.EVENT_PROGRESS,
                    {semconv.PROGRESS_MESSAGE: message, semconv.PROGRESS_METRICS: metrics},
                    timestamp,
                    handed_over=True,
                )
            if exc is not None:
                message = _tracer.record_exception(span, exc)
                attributes[semconv.STEP_ERROR_MESSAGE] = message
                self.logger.error("Step '%s' failed: %s", _step_name(span), message)
            _tracer.set_kept_attributes(span, kept, attributes)
            span.end()
        except Exception:
            self._internal_error("ending a step")

    # -- metadata and progress -----------------------------------------------------------
    def add_step_metadata(self, key: str, value: Any) -> None:
        """Record ``key: value`` on the current step (last value per key wins).

        Outside any step of this context, it is kept for the next step, as the
        original did. Values are sanitized now, so later mutation does not leak in.
        """
        if not self.context.is_enabled:
            return
        try:
            sanitizer = _tracer.source.sanitizer
            text_key = (
                key
                if isinstance(key, str) and len(key) <= MAX_METADATA_KEY_CHARS
                else sanitizer.sanitize_text(key, MAX_METADATA_KEY_CHARS)
            )
            entry = (time.time_ns(), sanitizer.dumps_keyed(text_key, value))
            step = self._current_step()
            if step is None:
                if not self.context.pending.stash_metadata(text_key, entry):
                    stats.add("metadata_dropped")
                return
            with _recording.lock:
                outcome = _record_metadata(step, text_key, entry)
            if outcome == "late":
                self._drop_late("metadata", text_key)
            elif outcome == "first_dropped":
                self.logger.warning(
                    "hackagent_otel: step keeps at most %d metadata keys; dropping %r "
                    "and further new keys (counted in %s)",
                    MAX_METADATA_KEYS,
                    text_key,
                    semconv.STEP_METADATA_DROPPED,
                )
        except Exception:
            self._internal_error("recording metadata %r", key)

    def record_progress(self, message: str, **metrics: Any) -> None:
        """Record a progress entry on the current step; a step keeps the last 20."""
        if not self.context.is_enabled:
            return
        try:
            sanitizer = _tracer.source.sanitizer
            entry = (time.time_ns(), sanitizer.sanitize_text(message), sanitizer.dumps(metrics))
            step = self._current_step()
            if step is None:
                if self.context.pending.stash_progress(entry):
                    stats.add("progress_dropped")
                return
            with _recording.lock:
                late = step.ended
                if not late:
                    progress = step.progress
                    if len(progress) >= MAX_PROGRESS_ENTRIES:
                        del progress[0]
                        step.progress_dropped += 1
                        stats.add("progress_dropped")
                    progress.append(entry)
            if late:
                self._drop_late("progress", entry[1])
        except Exception:
            self._internal_error("recording progress")

    def _current_step(self) -> _Step | None:
        step = _CURRENT_STEP.get()
        while step is not None and step.context is not self.context:
            step = step.parent
        return step

    def _drop_late(self, what: str, detail: str) -> None:
        stats.add("late_entries_dropped")
        self.logger.warning(
            "hackagent_otel: %s %r recorded after its step ended; dropped", what, detail
        )

    # -- status updates ------------------------------------------------------------------
    def update_run_status(self, status: StatusEnum | str) -> bool:
        """Record a run status change; True once it is queued for delivery.

        The run's root span ends with a terminal status (COMPLETED, FAILED, CANCELLED).
        False when tracking is disabled, the status is not a ``StatusEnum`` value or the
        run id is not a UUID (the API would refuse it), as the original returned False.
        """
        ctx = self.context
        value = self._status_value(StatusEnum, status, "run")
        if value is None:
            return False

        def attributes(run_id: str) -> dict[str, AttributeValue]:
            return {
                semconv.KIND: semconv.KIND_RUN_STATUS,
                semconv.RUN_ID: run_id,
                semconv.RUN_STATUS: value,
            }

        if not self._status_span(semconv.SPAN_RUN_STATUS, attributes, "run"):
            return False
        if value in TERMINAL_RUN_STATUSES:
            try:
                runs.end_run(str(ctx.run_id), "status")
            except Exception:  # a span processor's on_end that raises
                self._internal_error("ending run %r", ctx.run_id)
        return ctx.get_run_uuid() is not None

    def update_result_status(
        self,
        evaluation_status: EvaluationStatusEnum | str,
        evaluation_notes: str | None = None,
        agent_specific_data: dict[str, Any] | None = None,
    ) -> bool:
        """Record a result evaluation status; True once it is queued for delivery.

        Notes default to ``"Status updated"`` (the API wants them non-null). False when
        tracking is disabled, there is no valid result id, or the status is unknown.
        """
        ctx = self.context
        target = ctx.result_target()
        if ctx.is_enabled and target is None:
            self.logger.warning("hackagent_otel: cannot update result status: no result id")
            return False
        value = self._status_value(EvaluationStatusEnum, evaluation_status, "result")
        if value is None or target is None:
            return False
        where, result = target

        def attributes(run_id: str) -> dict[str, AttributeValue]:
            sanitizer = _tracer.source.sanitizer
            found: dict[str, AttributeValue] = {
                semconv.KIND: semconv.KIND_RESULT_STATUS,
                semconv.RUN_ID: run_id,
                semconv.RESULT_ID if where == "id" else semconv.GOAL_REF: result,
                semconv.RESULT_EVALUATION_STATUS: value,
                semconv.RESULT_EVALUATION_NOTES: sanitizer.sanitize_text(
                    evaluation_notes or DEFAULT_EVALUATION_NOTES
                ),
            }
            if agent_specific_data is not None:
                found[semconv.RESULT_AGENT_SPECIFIC_DATA] = sanitizer.dumps(agent_specific_data)
            return found

        if not self._status_span(semconv.SPAN_RESULT_STATUS, attributes, "result"):
            return False
        return where == "ref" or ctx.get_result_uuid() is not None

    def _status_value(self, enum_type: type[_ApiEnum], status: object, what: str) -> str | None:
        """The API value of a status, or None (logged) when tracking is off or it is bad."""
        if not self.context.is_enabled:
            return None
        try:
            return enum_value(enum_type, status)
        except ValueError as exc:
            self.logger.error("hackagent_otel: cannot update %s status: %s", what, exc)
            return None

    def _status_span(
        self,
        name: str,
        attributes: Callable[[str], dict[str, AttributeValue]],
        what: str,
    ) -> bool:
        """Emit a zero-length status span for this context's run; False on internal error."""
        ctx = self.context
        try:
            run_id = str(ctx.run_id)
            if ctx.client is not None:
                routes.register(run_id, ctx.client)
            _tracer.start_span(name, runs.parent_for(run_id), attributes(run_id)).end()
        except Exception:
            self._internal_error("updating %s status", what)
            return False
        return True

    def _internal_error(self, what: str, *args: Any) -> None:
        stats.add("internal_errors")
        _log_exception_scrubbed(self.logger, "hackagent_otel: internal error " + what, args)
        if _raise_internal_errors:
            raise  # noqa: PLE0704 -- always called from an except block


#: Tests turn this on so internal errors fail loudly instead of being swallowed.
_raise_internal_errors = False


def _log_exception_scrubbed(logger: logging.Logger, message: str, args: tuple[Any, ...]) -> None:
    """``logger.exception(message, *args)``, with known secrets kept out of it.

    The context's logger may be the caller's own, which has none of the package's
    scrubbing filter: the message and the traceback are scrubbed here, and when that
    changed the traceback it is logged as text instead of as ``exc_info``.
    """
    try:
        text = message % args if args else message
    except Exception:  # arguments that do not fit the message: log both as they are
        text = f"{message} {args!r}"
    scrub = _tracer.source.sanitizer.scrub_known_secrets
    clean = scrub(text)
    trace_text = traceback.format_exc()
    clean_trace = scrub(trace_text)
    if clean_trace == trace_text:
        logger.exception("%s", clean)
    else:
        logger.error("%s\n%s", clean, clean_trace.rstrip("\n"))


def _step_name(span: trace.Span) -> str:
    return str(getattr(span, "name", "step"))


def _context_metadata(
    ctx: TrackingContext,
    metadata: dict[str, tuple[int, str]],
    progress: list[tuple[int, str, str]],
    sanitizer: Sanitizer,
) -> str:
    """The ``context_metadata`` of a step's start record, as the original sent it (for a
    context with metadata, or entries recorded before the step)."""
    combined: dict[str, Any] = dict(ctx.metadata)
    if metadata:
        combined["step_metadata"] = {k: json.loads(v) for k, (_, v) in metadata.items()}
    if progress:
        combined["progress_log"] = [
            {"message": message, **json.loads(metrics)} for _, message, metrics in progress
        ]
    return sanitizer.dumps(combined)
