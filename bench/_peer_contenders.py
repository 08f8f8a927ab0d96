"""The contenders of :mod:`bench.peers`, each recording the same step its own way.

Only importable in the peers' virtualenv (bench/_venv.py:peers_python), which has
Pydantic Logfire and Langfuse beside this checkout. The step is the hot path's
(:mod:`bench.hot_path`): a span with the config, an input sample, 2 metadata entries and
2 progress entries. Every contender ends in an exporter (or, for our records, a sender)
that drops what reaches it and counts it, so no network is timed; whatever runs between
the caller and that point (span processors, batching threads, mapping, delivery) runs
as each tool's users get it:

* ``bare``: an SDK span with the hot path's 11 attributes and 4 events, values
  precomputed, into a BatchSpanProcessor over the dropping exporter (the floor);
* ``ours, spans only``: ``StepTracker`` with records off, on the same pipeline;
* ``ours, records``: the same, and ``HackAgentSpanProcessor`` mapping each span to its
  records on its thread and handing them to a ``DeliveryService`` whose sender answers
  201 at once (queueing, encoding and sender threads as in production; no socket);
* ``logfire``: ``logfire.configure(send_to_logfire=False, console=False,
  additional_span_processors=[BatchSpanProcessor(dropping)])``, everything else at its
  defaults (scrubbing on, as a user gets it); one ``logfire.span`` with the config and
  input as arguments, the metadata as ``set_attribute`` and the progress as events on
  the span;
* ``logfire, progress as logs``: the same with each progress entry a ``logfire.info``
  inside the span, which is how Logfire's docs log progress lines;
* ``langfuse``: a ``Langfuse`` client with its own SDK ``TracerProvider`` (not the
  global one, which Logfire holds) and ``span_exporter`` the dropping exporter, behind
  Langfuse's own span processor (a BatchSpanProcessor); one
  ``start_as_current_observation`` with the input, the config as metadata, and each
  metadata and progress entry an ``update(metadata=...)``;
* ``langfuse, progress as events``: the same with each progress entry a Langfuse event
  (``create_event``), its native point-in-time record.

Langfuse masks nothing by default (``mask=None``); it is left so, as a user gets it.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import hackagent_otel as ho
from bench.hot_path import CONFIG, INPUT, bare_step, our_step
from hackagent_otel import _tracer
from hackagent_otel._delivery.outcome import Delivered
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._records import Request


class DroppingExporter(SpanExporter):
    """Counts the spans it is given and drops them: the end of every span pipeline."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class InstantSender:
    """A delivery sender that answers every call 201 with a fresh id, at once."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, request: Request) -> Delivered:
        self.calls += 1
        return Delivered(201, json_text=b'{"id": "%s"}' % uuid.uuid4().hex.encode())

    def close(self) -> None:
        pass


@dataclass
class Contender:
    """One way of recording the step: the step itself, what to do before each of its
    rounds, how to wait for its pipeline to drain, and how much reached its end."""

    name: str
    step: Callable[[], None]
    drain: Callable[[], None]
    reached_end: Callable[[], int]
    before_round: Callable[[], None] = lambda: None


def _exported_provider() -> tuple[TracerProvider, DroppingExporter]:
    exporter = DroppingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def _flush(provider: TracerProvider) -> Callable[[], None]:
    return lambda: None if provider.force_flush(60_000) else _stuck(provider)


def _stuck(what: object) -> None:
    raise RuntimeError(f"{what!r} did not drain within 60 s")


def ours_and_bare(folder: Path) -> list[Contender]:
    """The bare span and our two set-ups. Ours switch our tracer's provider before each
    round (one ``configure()`` set-up, records off, and a second provider carrying our
    span processor), so both run in one process without reconfiguring between rounds;
    the processor counts as alive (what makes our spans keep a whole copy of what they
    are given, for the records) only in the rounds with records, as in a process set up
    with records on, and not in those without, as in one set up with records off."""
    bare_provider, bare_exporter = _exported_provider()
    spans_provider, spans_exporter = _exported_provider()
    records_provider, _ = _exported_provider()
    ho.configure(tracer_provider=spans_provider, records="off", handle_sigterm=False)
    sender = InstantSender()
    delivery = DeliveryService(sender, outbox_path=folder / "outbox.sqlite3")
    processor = ho.HackAgentSpanProcessor(lambda _run_id: delivery)
    records_provider.add_span_processor(processor)

    def spans_only() -> None:
        _tracer.source.use_provider(spans_provider)
        _tracer.drop_taker(processor)

    def with_records() -> None:
        _tracer.source.use_provider(records_provider)
        _tracer.add_taker(processor)

    def tracker() -> ho.StepTracker:
        return ho.StepTracker(
            ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
        )

    def drain_records() -> None:
        _flush(records_provider)()  # mapped and handed to delivery
        if not delivery.force_flush(60.0):  # and delivered
            _stuck(delivery)

    return [
        Contender(
            "bare",
            bare_step(bare_provider.get_tracer("bench")),
            _flush(bare_provider),
            lambda: bare_exporter.spans,
        ),
        Contender(
            "ours, spans only",
            our_step(tracker()),
            _flush(spans_provider),
            lambda: spans_exporter.spans,
            spans_only,
        ),
        Contender(
            "ours, records",
            our_step(tracker()),
            drain_records,
            lambda: sender.calls,
            with_records,
        ),
    ]


def logfire_contenders() -> list[Contender]:
    """Logfire, configured as globally as a user does, its spans into a dropping exporter."""
    import logfire

    exporter = DroppingExporter()
    logfire.configure(
        send_to_logfire=False,
        console=False,
        additional_span_processors=[BatchSpanProcessor(exporter)],
    )

    def one_span() -> None:
        with logfire.span("Generate", config=CONFIG, input_data=INPUT) as span:
            span.set_attribute("prefixes", 150)
            span.set_attribute("success_rate", 0.85)
            span.add_event("batch 1/2", {"items": 50, "errors": 0})
            span.add_event("batch 2/2", {"items": 100, "errors": 1})

    def with_logs() -> None:
        with logfire.span("Generate", config=CONFIG, input_data=INPUT) as span:
            span.set_attribute("prefixes", 150)
            span.set_attribute("success_rate", 0.85)
            logfire.info("batch 1/2", items=50, errors=0)
            logfire.info("batch 2/2", items=100, errors=1)

    def drain() -> None:
        if not logfire.force_flush(60_000):
            _stuck("logfire")

    return [
        Contender("logfire", one_span, drain, lambda: exporter.spans),
        Contender("logfire, progress as logs", with_logs, drain, lambda: exporter.spans),
    ]


def langfuse_contenders() -> list[Contender]:
    """Langfuse on a provider of its own, its exporter the dropping one; the base URL is
    the discard port on loopback, so nothing could leave the machine anyway."""
    from langfuse import Langfuse

    exporter = DroppingExporter()
    client: Any = Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",
        base_url="http://127.0.0.1:9",
        tracer_provider=TracerProvider(),
        span_exporter=exporter,
    )

    def one_observation() -> None:
        with client.start_as_current_observation(
            name="Generate", as_type="span", input=INPUT, metadata={"config": CONFIG}
        ) as span:
            span.update(metadata={"prefixes": 150})
            span.update(metadata={"success_rate": 0.85})
            span.update(metadata={"batch 1/2": {"items": 50, "errors": 0}})
            span.update(metadata={"batch 2/2": {"items": 100, "errors": 1}})

    def with_events() -> None:
        with client.start_as_current_observation(
            name="Generate", as_type="span", input=INPUT, metadata={"config": CONFIG}
        ) as span:
            span.update(metadata={"prefixes": 150})
            span.update(metadata={"success_rate": 0.85})
            span.create_event(name="batch 1/2", metadata={"items": 50, "errors": 0})
            span.create_event(name="batch 2/2", metadata={"items": 100, "errors": 1})

    return [
        Contender("langfuse", one_observation, client.flush, lambda: exporter.spans),
        Contender(
            "langfuse, progress as events", with_events, client.flush, lambda: exporter.spans
        ),
    ]


def all_contenders(folder: Path | None = None) -> list[Contender]:
    """Every contender, bare first (the floor the others are divided by)."""
    where = folder or Path(tempfile.mkdtemp(prefix="hackagent-otel-peers-"))
    return [*ours_and_bare(where), *logfire_contenders(), *langfuse_contenders()]
