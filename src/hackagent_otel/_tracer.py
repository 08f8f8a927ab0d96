"""The tracer the tracker draws its spans from.

The tracker speaks the OpenTelemetry API only. Two things it needs are SDK business,
so the set-up hands them over (``_setup.connect_tracer_source``, once, when the package
is imported) instead of the tracker importing them:

* *adapters* that adjust our own tracer object (and no one else's): pinning a run's
  trace id, and keeping HackAgent spans recorded when the user's sampler drops them;
* a *fallback configurer*, called once when tracking is used before any SDK provider
  exists, so a drop-in user who never calls ``configure()`` still gets records.

It also holds the :class:`~hackagent_otel._sanitize.Sanitizer` in force: the one the
set-up built (``configure()`` hands it over), or before any set-up the source's own,
for the drop-in path. The tracker, the goals and the SDK side read it here, at each
use, so what one configuration knows ends with it.

It also keeps, beside each span of ours, what the tracker set on it, whole
(:class:`KeptData`): the SDK's span limits (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``,
``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``, ``OTEL_SPAN_EVENT_COUNT_LIMIT``...) are
meant for span backends, and the HackAgent records made from our spans must not
depend on them. The span itself is still cut as configured; the records are not.
Only while something that makes records from our spans is alive (a
``HackAgentSpanProcessor`` or ``HackAgentSpanExporter``: a *taker*) is anything kept: with
records made elsewhere (a Collector and the bridge) or nowhere, keeping would cost every
span a copy and hold the last :data:`MAX_KEPT` of them for no one.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from hackagent_otel import semconv
from hackagent_otel._forksafe import register, renew_after_fork
from hackagent_otel._sanitize import Sanitizer

TracerAdapter = Callable[[trace.Tracer], None]

#: Trace id the next root span started by our tracer must get (read by the SDK hook).
PINNED_TRACE_ID: ContextVar[int | None] = ContextVar("hackagent_pinned_trace_id", default=None)

_VERSION = "0.1.0"


class TracerSource:
    """Resolves, adapts and caches our tracer for the provider currently in force, and
    holds the sanitizer in force."""

    def __init__(self) -> None:
        #: The sanitizer for code used before any set-up (the drop-in path); built once,
        #: never replaced.
        self._drop_in_sanitizer = Sanitizer()
        #: What the tracker sanitizes with: the set-up's (:meth:`use_sanitizer`), else
        #: the drop-in one.
        self.sanitizer = self._drop_in_sanitizer
        self._adapters: list[TracerAdapter] = []
        self._provider: trace.TracerProvider | None = None
        self._cached: tuple[trace.TracerProvider, trace.Tracer] | None = None
        self._fallback: Callable[[], None] | None = None
        self._fallback_done = False
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def add_adapter(self, adapter: TracerAdapter) -> None:
        """Have ``adapter`` adjust our tracer (once, however often it is added)."""
        with self._lock:
            if adapter not in self._adapters:
                self._adapters.append(adapter)
                self._cached = None

    def use_provider(self, provider: trace.TracerProvider | None) -> None:
        """Draw spans from ``provider`` instead of the global one (``None``: global)."""
        with self._lock:
            self._provider = provider
            self._cached = None

    def use_sanitizer(self, sanitizer: Sanitizer | None) -> None:
        """Sanitize with ``sanitizer`` from now on (``None``: the drop-in one again).

        It takes over the secrets the one in force knew: text made before the change (a
        step in flight, a traceback) may still quote them. Taken before the switch and
        again after it, so what a thread learned meanwhile on the old one is kept too.
        """
        if sanitizer is None:
            sanitizer = self._drop_in_sanitizer
        previous = self.sanitizer
        sanitizer.take_over_known_secrets(previous)
        self.sanitizer = sanitizer
        sanitizer.take_over_known_secrets(previous)

    @property
    def provider(self) -> trace.TracerProvider:
        return self._provider or trace.get_tracer_provider()

    def set_fallback_configurer(self, configure: Callable[[], None] | None) -> None:
        self._fallback = configure

    def tracer(self) -> trace.Tracer:
        """Our tracer; cheap after the first call for a given provider."""
        provider = self._provider or trace.get_tracer_provider()
        cached = self._cached
        if cached is not None and cached[0] is provider:
            return cached[1]
        if isinstance(provider, trace.ProxyTracerProvider) and self._run_fallback():
            provider = self._provider or trace.get_tracer_provider()
        tracer = provider.get_tracer(semconv.TRACER_NAME, _VERSION)
        with self._lock:
            for adapt in self._adapters:
                adapt(tracer)
            if not isinstance(provider, trace.ProxyTracerProvider):
                self._cached = (provider, tracer)
        return tracer

    def _run_fallback(self) -> bool:
        if self._fallback_done or self._fallback is None:
            return False
        self._fallback_done = True
        self._fallback()
        return True

    def reset(self) -> None:
        """Forget the provider and cache, and sanitize with the drop-in sanitizer again
        (``shutdown()``; tests)."""
        with self._lock:
            self._provider = None
            self._cached = None
            self._fallback_done = False
        self.use_sanitizer(None)


source = TracerSource()


@contextmanager
def pinned_trace_id(trace_id: int) -> Iterator[None]:
    """Within the block, a root span our tracer starts gets ``trace_id``."""
    token = PINNED_TRACE_ID.set(trace_id)
    try:
        yield
    finally:
        PINNED_TRACE_ID.reset(token)


def start_root_span(
    name: str, trace_id: int, attributes: Mapping[str, AttributeValue]
) -> trace.Span:
    """Start a span with no parent whose trace id is ``trace_id`` where the SDK allows it."""
    with pinned_trace_id(trace_id):
        return _started(name, Context(), attributes)[0]


def start_span(
    name: str, parent: Context | None, attributes: Mapping[str, AttributeValue], **kwargs: Any
) -> trace.Span:
    """Start a span of ours under ``parent`` (``None``: the current context)."""
    return _started(name, parent, attributes, **kwargs)[0]


def start_kept_span(
    name: str, parent: Context | None, attributes: dict[str, AttributeValue], **kwargs: Any
) -> tuple[trace.Span, KeptData | None]:
    """:func:`start_span`, and what is kept beside the span (``None``: nothing is), for a
    caller that sets more on it with :func:`add_kept_event` and
    :func:`set_kept_attributes` instead of looking it up by the span's ids each time.

    ``attributes`` is handed over: kept as it is, not copied, so the caller must not
    change it afterwards (the tracker builds a fresh dict for each step)."""
    return _started(name, parent, attributes, handed_over=True, **kwargs)


class KeptData:
    """Every attribute and event the tracker set on one span, uncut by span limits."""

    __slots__ = ("attributes", "events")

    def __init__(self, attributes: dict[str, AttributeValue]) -> None:
        self.attributes = attributes
        self.events: list[tuple[str, Mapping[str, AttributeValue], int]] = []


#: (trace id, span id) -> what was set on the span. The SDK hands span processors a
#: new ReadableSpan at the end, so a span is found by its ids; the processor takes the
#: entry when it maps the span's end. Bounded, oldest first out, so a set-up without
#: the processor (records made elsewhere) holds at most this many.
MAX_KEPT = 65_536
_kept: OrderedDict[tuple[int, int], KeptData] = OrderedDict()
_kept_lock = threading.Lock()

#: The takers alive (held weakly, so one dropped without being shut down goes too).
_takers: weakref.WeakSet[object] = weakref.WeakSet()


def add_taker(taker: object) -> None:
    """``taker`` makes records from our spans: from now on, what spans get is kept."""
    _takers.add(taker)


def drop_taker(taker: object) -> None:
    """``taker`` is shut down; with no taker left, spans started from now on keep nothing."""
    _takers.discard(taker)


def _ids(span: Any) -> tuple[int, int]:
    context = span.get_span_context()
    return (context.trace_id, context.span_id)


#: What the span being started right now was given: span processors' ``on_start`` runs
#: inside ``start_span``, before the span is in ``_kept``.
_STARTING: ContextVar[KeptData | None] = ContextVar("hackagent_starting_span", default=None)


def _started(
    name: str,
    parent: Context | None,
    attributes: Mapping[str, AttributeValue],
    *,
    handed_over: bool = False,
    **kwargs: Any,
) -> tuple[trace.Span, KeptData | None]:
    if not _takers:
        span = source.tracer().start_span(name, context=parent, attributes=attributes, **kwargs)
        return span, None
    kept = KeptData(attributes if handed_over and type(attributes) is dict else dict(attributes))
    token = _STARTING.set(kept)
    try:
        span = source.tracer().start_span(name, context=parent, attributes=attributes, **kwargs)
    finally:
        _STARTING.reset(token)
    return span, _keep(span, kept)


def kept_at_start(span: Any) -> KeptData | None:
    """In a span processor's ``on_start``: what the span was started with, whole."""
    return _STARTING.get() or kept_for(span)


def _keep(span: trace.Span, kept: KeptData) -> KeptData | None:
    if not span.is_recording():
        return None
    with _kept_lock:
        _kept[_ids(span)] = kept
        if len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)
    return kept


def kept_for(span: Any) -> KeptData | None:
    """What the tracker set on ``span`` (live or ended), whole, if it is ours."""
    return _kept.get(_ids(span)) if _kept else None


def take_kept(span: Any) -> KeptData | None:
    """:func:`kept_for`, and forget it (the span has ended and is being mapped)."""
    with _kept_lock:
        return _kept.pop(_ids(span), None)


def _renew_kept_lock() -> None:
    global _kept_lock
    _kept_lock = threading.Lock()


register(_renew_kept_lock)


def set_attributes(span: trace.Span, attributes: Mapping[str, AttributeValue]) -> None:
    """``span.set_attributes``, kept whole for the records too."""
    set_kept_attributes(span, kept_for(span), attributes)


def set_kept_attributes(
    span: trace.Span, kept: KeptData | None, attributes: Mapping[str, AttributeValue]
) -> None:
    """:func:`set_attributes` on a span whose kept data (if any) the caller holds."""
    span.set_attributes(attributes)
    if kept is not None:
        kept.attributes.update(attributes)


def add_event(
    span: trace.Span,
    name: str,
    attributes: Mapping[str, AttributeValue],
    timestamp: int | None = None,
) -> None:
    """``span.add_event``, kept whole for the records too."""
    add_kept_event(span, kept_for(span), name, attributes, timestamp)


def add_kept_event(
    span: trace.Span,
    kept: KeptData | None,
    name: str,
    attributes: Mapping[str, AttributeValue],
    timestamp: int | None = None,
    *,
    handed_over: bool = False,
) -> None:
    """:func:`add_event` on a span whose kept data (if any) the caller holds; with
    ``handed_over``, ``attributes`` is kept as it is, so the caller must not change it
    afterwards (the tracker builds a fresh dict for each event)."""
    when = time.time_ns() if timestamp is None else timestamp
    span.add_event(name, attributes, when)
    if kept is not None:
        kept.events.append((name, attributes if handed_over else dict(attributes), when))


def record_exception(span: trace.Span, exc: BaseException) -> str:
    """The ``exception`` event and the ERROR status for ``exc`` on ``span``, sanitized,
    the event kept whole for the records too; returns the sanitized message.

    Not the SDK's ``Span.record_exception``, although its ``attributes`` would replace
    the message and stack trace with ours before the event is added (so no secret in
    ``str(exc)`` would reach the span either way): it formats ``str(exc)`` and the whole
    traceback only to throw them away, and ``str(exc)`` raising there (a hostile
    ``__str__``) would lose the event; its event bypasses :func:`add_event`, so it is
    not kept beside the span; and it adds ``exception.escaped``, which the original
    tracker's spans never had.
    """
    sanitizer = source.sanitizer
    message = sanitizer.sanitize_text(exc)  # never raises, also where str(exc) does
    exc_type = type(exc)
    qualified = (
        exc_type.__qualname__
        if exc_type.__module__ in ("builtins", "__main__")
        else f"{exc_type.__module__}.{exc_type.__qualname__}"
    )
    stacktrace = "".join(traceback.format_exception(exc_type, exc, exc.__traceback__))
    add_event(
        span,
        "exception",
        {
            "exception.type": qualified,
            "exception.message": message,
            "exception.stacktrace": sanitizer.sanitize_text(stacktrace, 32_768),
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {message}"))
    return message
