"""The tracer the tracker draws its spans from.

The tracker speaks the OpenTelemetry API only. Two things it needs are SDK business,
so the SDK side registers them here instead of the tracker importing it:

* *adapters* that adjust our own tracer object (and no one else's): pinning a run's
  trace id, and keeping HackAgent spans recorded when the user's sampler drops them;
* a *fallback configurer*, called once when tracking is used before any SDK provider
  exists, so a drop-in user who never calls ``configure()`` still gets records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from hackagent_otel import semconv
from hackagent_otel._forksafe import renew_after_fork

TracerAdapter = Callable[[trace.Tracer], None]

#: Trace id the next root span started by our tracer must get (read by the SDK hook).
PINNED_TRACE_ID: ContextVar[int | None] = ContextVar("hackagent_pinned_trace_id", default=None)

_VERSION = "0.1.0"


class TracerSource:
    """Resolves, adapts and caches our tracer for the provider currently in force."""

    def __init__(self) -> None:
        self._adapters: list[TracerAdapter] = []
        self._provider: trace.TracerProvider | None = None
        self._cached: tuple[trace.TracerProvider, trace.Tracer] | None = None
        self._fallback: Callable[[], None] | None = None
        self._fallback_done = False
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def add_adapter(self, adapter: TracerAdapter) -> None:
        with self._lock:
            self._adapters.append(adapter)
            self._cached = None

    def use_provider(self, provider: trace.TracerProvider | None) -> None:
        """Draw spans from ``provider`` instead of the global one (``None``: global)."""
        with self._lock:
            self._provider = provider
            self._cached = None

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
        """Forget the provider and cache (``shutdown()``; tests)."""
        with self._lock:
            self._provider = None
            self._cached = None
            self._fallback_done = False


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
        return source.tracer().start_span(name, context=Context(), attributes=attributes)


def start_span(
    name: str, parent: Context | None, attributes: Mapping[str, AttributeValue], **kwargs: Any
) -> trace.Span:
    """Start a span of ours under ``parent`` (``None``: the current context)."""
    return source.tracer().start_span(name, context=parent, attributes=attributes, **kwargs)
