"""``HackAgentSpanExporter``: finished spans -> HackAgent records, as a standard exporter.

This is the piece for OpenTelemetry's own plumbing: it is registered under the
``opentelemetry_traces_exporter`` entry point as ``hackagent``, so
``OTEL_TRACES_EXPORTER=otlp,hackagent opentelemetry-instrument python app.py`` feeds
Jaeger and HackAgent at once, configured from env vars only. An exporter sees a span
once, when it has ended, so each step's start and summary records are made then.
(``hackagent_otel.configure()`` uses :class:`HackAgentSpanProcessor` instead, which
sends start records live and also sees spans the sampler dropped.)

``export()`` never raises and never waits on the network: records are queued for
delivery, which retries and spools to the outbox on its own threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hackagent_otel import _mapping, _tracer, semconv
from hackagent_otel._processor import (
    LIVE_PROCESSORS,
    MappingCounters,
    RecordSink,
    submit_mapped,
)
from hackagent_otel._spanview import from_sdk_span

_logger = logging.getLogger("hackagent_otel.exporter")


class HackAgentSpanExporter(SpanExporter):
    """Maps finished spans to HackAgent records and queues them for delivery.

    Args:
        sink: where records go; default: delivery built from the ``HACKAGENT_*``
            env vars (the API when ``HACKAGENT_API_KEY``/``HACKAGENT_BASE_URL`` are
            set, else the local outbox).
    """

    def __init__(self, sink: RecordSink | None = None) -> None:
        if sink is None:
            from hackagent_otel._sinks import sink_from_env

            sink = sink_from_env(_tracer.source.sanitizer)
        self._sink = sink
        self.counters = MappingCounters()
        self._shut_down = False
        self._deferred_logged = False
        _tracer.add_taker(self)  # our spans keep what they are given whole, for us

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            _logger.warning("hackagent_otel: export after shutdown; %d spans ignored", len(spans))
            return SpanExportResult.FAILURE
        if LIVE_PROCESSORS:
            if not self._deferred_logged:
                self._deferred_logged = True
                _logger.info(
                    "hackagent_otel: configure() delivers records in this process; the "
                    "hackagent exporter leaves them to it (no duplicates)"
                )
            return SpanExportResult.SUCCESS
        for span in spans:
            try:
                kept = _tracer.take_kept(span)  # what span limits cannot cut
                attributes = kept.attributes if kept is not None else span.attributes
                if attributes is None or semconv.KIND not in attributes:
                    continue
                with self.counters.lock:
                    self.counters.spans += 1
                view = from_sdk_span(span, kept=kept)
                mapped = _mapping.map_end(view, _tracer.source.sanitizer, include_start=True)
                submit_mapped(mapped, self._sink, self.counters)
            except Exception:
                with self.counters.lock:
                    self.counters.unmappable += 1
                _logger.exception("hackagent_otel: could not export span %r", span.name)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._sink.force_flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        if not self._shut_down:
            self._shut_down = True
            _tracer.drop_taker(self)
            self._sink.shutdown(10.0)
