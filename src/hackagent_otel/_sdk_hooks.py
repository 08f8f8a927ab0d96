"""SDK-side adjustments to *our own* tracer object; no other tracer is touched.

Two things the OpenTelemetry API cannot express:

* a root span with a chosen trace id (a run's trace id is its UUID), done by wrapping
  the tracer's id generator so it honours :data:`hackagent_otel._tracer.PINNED_TRACE_ID`;
* HackAgent records that do not depend on sampling: when the user's sampler drops one
  of our spans, it is kept as RECORD_ONLY. Processors still see it (so records are
  delivered); exporters behind the SDK's batch and simple processors skip it, because
  it is not sampled, so Jaeger sees exactly what the user's sampler chose.

Tracers that are not the SDK's (no ``id_generator``/``sampler`` attributes) are left
as they are: their runs simply get random trace ids. The set-up hands
:func:`adapt_tracer` to the tracer source (``_setup.connect_tracer_source``).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from hackagent_otel import _tracer, semconv


class RunTraceIdGenerator(IdGenerator):
    """Delegates to the provider's generator, except for a pinned run trace id."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        return self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        pinned = _tracer.PINNED_TRACE_ID.get()
        return pinned if pinned is not None else self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        if _tracer.PINNED_TRACE_ID.get() is not None:
            return False
        return bool(getattr(self.inner, "is_trace_id_random", lambda: False)())


class RecordHackAgentSpans(Sampler):
    """The user's sampler, except that HackAgent spans it drops are still recorded."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.DROP and attributes and semconv.KIND in attributes:
            # The SDK gives a span the attributes of its sampling result, and a DROP
            # result carries none: keep the span's own, or its routing ids are lost.
            kept = {**attributes, **(result.attributes or {})}
            return SamplingResult(Decision.RECORD_ONLY, kept, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordHackAgentSpans{{{self.inner.get_description()}}}"


def adapt_tracer(tracer: trace.Tracer) -> None:
    """Wrap an SDK tracer's id generator and sampler, once."""
    generator = getattr(tracer, "id_generator", None)
    sampler = getattr(tracer, "sampler", None)
    if isinstance(generator, IdGenerator) and not isinstance(generator, RunTraceIdGenerator):
        tracer.id_generator = RunTraceIdGenerator(generator)  # type: ignore[attr-defined]
    if isinstance(sampler, Sampler) and not isinstance(sampler, RecordHackAgentSpans):
        tracer.sampler = RecordHackAgentSpans(sampler)  # type: ignore[attr-defined]
