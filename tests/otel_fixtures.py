"""OpenTelemetry fixtures: real SDK spans, hackagent_otel configured on them.

Loaded by ``tests/conftest.py`` through ``pytest_plugins``. Every test gets
``_tracker._raise_internal_errors = True`` so an internal error of the tracker fails the
test loudly instead of being logged and swallowed.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

import hackagent_otel
from hackagent_otel import StepTracker, TrackingContext, _tracer, _tracker, semconv
from hackagent_otel._records import Record
from hackagent_otel.testing import FakeHackAgentAPI

#: Environment variables configure() reads; tests run with none of them set.
CONFIG_ENV_VARS = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "HACKAGENT_BASE_URL",
    "HACKAGENT_API_KEY",
    "HACKAGENT_OUTBOX_PATH",
    "HACKAGENT_REDACT_KEYS",
    "HACKAGENT_RECORDS",
    "XDG_STATE_HOME",
)


class RecordingProcessor(SpanProcessor):
    """Keeps every span that ends, sampled or not (what a records processor sees)."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


@dataclass
class OTel:
    """A configured provider and what it exported."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    recorder: RecordingProcessor
    telemetry: hackagent_otel.Telemetry
    extra: list[SpanProcessor] = field(default_factory=list)

    def spans(self) -> list[ReadableSpan]:
        """Finished spans that were exported (sampled)."""
        return list(self.exporter.get_finished_spans())

    def of_kind(self, kind: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if attrs(s).get(semconv.KIND) == kind]

    def steps(self) -> list[ReadableSpan]:
        return self.of_kind(semconv.KIND_STEP)

    def step(self, name: str) -> ReadableSpan:
        found = [s for s in self.steps() if s.name == name]
        assert len(found) == 1, f"expected one step {name!r}, got {[s.name for s in found]}"
        return found[0]

    def runs(self) -> list[ReadableSpan]:
        return self.of_kind(semconv.KIND_RUN)


ConfigureOTel = Callable[..., OTel]


@pytest.fixture(autouse=True)
def raise_internal_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal errors of the tracker raise instead of being logged (Logfire-style)."""
    monkeypatch.setattr(_tracker, "_raise_internal_errors", True)


@pytest.fixture(autouse=True)
def fresh_known_secrets() -> Iterator[None]:
    """Each test starts and ends with no known secrets (configured keys pin theirs):
    none in the tracker's sanitizer in force (after ``shutdown()``, the drop-in one,
    which took over what the configured one knew)."""
    _tracer.source.sanitizer.forget_known_secrets()
    yield
    _tracer.source.sanitizer.forget_known_secrets()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration env vars; anything written to disk goes under ``tmp_path``."""
    for name in CONFIG_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HACKAGENT_OUTBOX_PATH", str(tmp_path / "outbox.sqlite3"))


@pytest.fixture
def configure_otel(clean_env: None) -> Iterator[ConfigureOTel]:
    """Build an SDK provider (optionally with a sampler and extra processors) and
    ``configure()`` hackagent_otel on it (keyword arguments go to ``configure()``);
    everything is shut down after the test."""
    made: list[OTel] = []

    def make(
        sampler: Sampler | None = None, processors: Sequence[SpanProcessor] = (), **kwargs: Any
    ) -> OTel:
        provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
        exporter = InMemorySpanExporter()
        recorder = RecordingProcessor()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.add_span_processor(recorder)
        for processor in processors:
            provider.add_span_processor(processor)
        telemetry = hackagent_otel.configure(
            tracer_provider=provider, handle_sigterm=False, **kwargs
        )
        otel = OTel(provider, exporter, recorder, telemetry, list(processors))
        made.append(otel)
        return otel

    yield make
    hackagent_otel.shutdown()
    for otel in made:
        otel.provider.shutdown()


@pytest.fixture
def otel(configure_otel: ConfigureOTel) -> OTel:
    """A plain SDK provider with an in-memory exporter, hackagent_otel configured on it."""
    return configure_otel()


@pytest.fixture
def run_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def result_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def context(run_id: str, result_id: str) -> TrackingContext:
    return TrackingContext(run_id=run_id, parent_result_id=result_id)


@pytest.fixture
def tracker(context: TrackingContext) -> StepTracker:
    return StepTracker(context)


# -- helpers -------------------------------------------------------------------------


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def json_attr(span: ReadableSpan, key: str) -> Any:
    value = attrs(span)[key]
    assert isinstance(value, str), f"{key} is not a JSON string: {value!r}"
    return json.loads(value)


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def metadata_of(span: ReadableSpan) -> dict[str, Any]:
    """The step's metadata events as ``{key: decoded value}`` (in event order)."""
    return {
        e[semconv.METADATA_KEY]: json.loads(e[semconv.METADATA_VALUE])
        for e in events(span, semconv.EVENT_METADATA)
    }


def progress_of(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e[semconv.PROGRESS_MESSAGE], json.loads(e[semconv.PROGRESS_METRICS]))
        for e in events(span, semconv.EVENT_PROGRESS)
    ]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def assert_no_orphans(spans: Iterable[ReadableSpan]) -> None:
    """Every span with a parent has that parent among ``spans``."""
    spans = list(spans)
    ids = {span_id(s) for s in spans}
    orphans = [s.name for s in spans if s.parent is not None and s.parent.span_id not in ids]
    assert not orphans, f"spans whose parent never ended: {orphans}"


def dump_spans(spans: Iterable[ReadableSpan]) -> str:
    """Everything a span carries that could leave the process, as one string."""
    out = []
    for span in spans:
        out.append(
            {
                "name": span.name,
                "attributes": attrs(span),
                "events": [(e.name, dict(e.attributes or {})) for e in span.events],
                "links": [dict(link.attributes or {}) for link in span.links],
                "status": span.status.description,
                "resource": dict(span.resource.attributes),
            }
        )
    return json.dumps(out, default=repr)


# -- delivery to the fake HackAgent API (tests of the processor, exporter, sinks, CLI and
# -- the end-to-end pipeline) ---------------------------------------------------------

ConfigureAPI = Callable[..., OTel]


@pytest.fixture
def env_outbox_path(clean_env: None) -> Path:
    """The default outbox file ``configure()`` uses under ``clean_env`` (not created yet)."""
    return Path(os.environ["HACKAGENT_OUTBOX_PATH"])


@pytest.fixture
def configure_api(
    clean_env: None, fake_api: FakeHackAgentAPI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConfigureAPI]:
    """Like ``configure_otel``, but ``configure()`` delivers to ``fake_api`` (keyword
    arguments go to ``configure()`` and may override the API). Shut down before the fake
    API stops, so what is still queued is delivered to it."""
    monkeypatch.delenv("HACKAGENT_RECORDS", raising=False)
    made: list[OTel] = []

    def make(
        sampler: Sampler | None = None, processors: Sequence[SpanProcessor] = (), **kwargs: Any
    ) -> OTel:
        provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
        exporter = InMemorySpanExporter()
        recorder = RecordingProcessor()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.add_span_processor(recorder)
        for processor in processors:
            provider.add_span_processor(processor)
        kwargs.setdefault("hackagent_base_url", fake_api.base_url)
        kwargs.setdefault("hackagent_api_key", fake_api.api_key)
        telemetry = hackagent_otel.configure(
            tracer_provider=provider, handle_sigterm=False, **kwargs
        )
        otel = OTel(provider, exporter, recorder, telemetry, list(processors))
        made.append(otel)
        return otel

    yield make
    fake_api.clear_faults()
    hackagent_otel.shutdown()
    for otel in made:
        otel.provider.shutdown()


@pytest.fixture
def api_otel(configure_api: ConfigureAPI) -> OTel:
    """A plain SDK provider; ``configure()`` delivers records to ``fake_api``."""
    return configure_api()


def api_calls(api: FakeHackAgentAPI, prefix: str) -> list[tuple[str, str, Any]]:
    """Successful calls whose path starts with ``prefix``: (method, path, body without
    ``content.otel``), in arrival order."""
    out = []
    for call in api.calls:
        if call.path.startswith(prefix) and call.status is not None and call.status < 300:
            body = call.body
            if isinstance(body, dict) and isinstance(body.get("content"), dict):
                content = {k: v for k, v in body["content"].items() if k != "otel"}
                body = {**body, "content": content}
            out.append((call.method, call.path, body))
    return out


@dataclass(frozen=True)
class FilledOutbox:
    """An outbox holding the records of one run of the seed scenario, not delivered."""

    path: Path
    run_id: str
    result_id: str


@pytest.fixture
def filled_outbox(configure_otel: ConfigureOTel, env_outbox_path: Path) -> FilledOutbox:
    """The seed scenario run with no API configured: its 8 records wait in the outbox."""
    from apps.scenario import run_seed_scenario

    configure_otel()
    run_id, result_id = str(uuid.uuid4()), str(uuid.uuid4())
    run_seed_scenario(StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id)))
    hackagent_otel.shutdown()
    return FilledOutbox(env_outbox_path, run_id, result_id)


def in_ci() -> bool:
    """Whether this is a CI run (``CI`` set true), where a missing component fails."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(message: str) -> NoReturn:
    """A component a test needs is missing: a failure in CI, a skip with the reason on
    a user's machine (without Go, without network)."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


class ListSink:
    """A record sink that keeps what it is given, in order (thread-safe), and what
    shutting it down was asked for: the processor's and the exporter's far side."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.lock = threading.Lock()
        self.shut_down = 0
        self.shut_down_with: float | None = None

    def submit(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)

    def accept_durably(self, records: Sequence[Record]) -> None:
        with self.lock:
            self.records.extend(records)

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> bool:
        self.shut_down += 1
        self.shut_down_with = timeout
        return True

    def sinks(self) -> list[ListSink]:
        return [self]

    def __call__(self, run_id: str) -> ListSink | None:
        return self

    def calls(self, prefix: str) -> list[tuple[str, str, Any]]:
        """(method, path, body without ``content.otel``) of records under ``prefix``."""
        with self.lock:
            found = [r for r in self.records if r.path.startswith(prefix)]
        return [(r.method, r.path, _without_otel(r.body)) for r in found]

    def contents(self) -> list[str]:
        """The step names of the trace records, in order."""
        with self.lock:
            return [r.body["content"]["step_name"] for r in self.records if r.kind == "trace"]


def _without_otel(body: dict[str, Any]) -> dict[str, Any]:
    content = body.get("content")
    if isinstance(content, dict):
        return {**body, "content": {k: v for k, v in content.items() if k != "otel"}}
    return body


class UnprintableError(Exception):
    """An exception whose text cannot be had: ``str()`` of it raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")
