"""Read a run's timeline out of Jaeger's JSON and check it against what the pipeline did.

Jaeger's query API returns spans in its own model: tags as ``{key, type, value}``
lists, span events as ``logs`` whose ``event`` field is the event name, a span status
of ERROR as the tags ``otel.status_code=ERROR`` and ``error=true``, times in
microseconds. :func:`parse_trace` turns that into plain objects; the ``assert_*``
helpers state what a person looking at the run in Jaeger relies on.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from hackagent_otel import semconv

from ._pipeline_app import ATTACK_MIN_SECONDS, TIMELINE_STEPS

REDACTED = "***REDACTED***"

#: Jaeger keeps microseconds; start and duration are cut separately, so an end time
#: can be one microsecond short of the real one.
ROUNDING_US = 1

STEP_TYPES = {
    "Generate": "STEP1_GENERATE",
    "Attack": "STEP1A_ATTACK",
    "Evaluate": "STEP2_EVALUATE",
    "Summarize": "STEP3_SUMMARY",
}


@dataclass(frozen=True)
class Span:
    """One span of a Jaeger trace, with tags and event fields as plain dicts."""

    trace_id: str
    span_id: str
    name: str
    parent_id: str | None
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    events: list[dict[str, Any]]
    service: str

    @property
    def end_us(self) -> int:
        """End time in microseconds since the epoch."""
        return self.start_us + self.duration_us

    def events_named(self, name: str) -> list[dict[str, Any]]:
        """The span's events with this name, in the order they were recorded."""
        return [e for e in self.events if e.get("event") == name]


def _fields(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


def parse_trace(trace: dict[str, Any]) -> list[Span]:
    """Turn one trace of Jaeger's JSON (an element of ``data``) into :class:`Span`\\ s."""
    processes = trace.get("processes", {})
    spans = []
    for raw in trace["spans"]:
        parents = [r["spanID"] for r in raw.get("references", []) if r["refType"] == "CHILD_OF"]
        events = sorted(raw.get("logs", []), key=lambda log: log["timestamp"])
        spans.append(
            Span(
                trace_id=raw["traceID"],
                span_id=raw["spanID"],
                name=raw["operationName"],
                parent_id=parents[0] if parents else None,
                start_us=raw["startTime"],
                duration_us=raw["duration"],
                tags=_fields(raw.get("tags", [])),
                events=[_fields(log["fields"]) for log in events],
                service=processes.get(raw.get("processID"), {}).get("serviceName", ""),
            )
        )
    return spans


def step_spans(spans: list[Span]) -> dict[str, Span]:
    """The step spans by step name; fails if a name occurs twice."""
    steps = [s for s in spans if s.tags.get(semconv.KIND) == semconv.KIND_STEP]
    by_name = {s.name: s for s in steps}
    assert len(by_name) == len(steps), f"duplicate step spans: {[s.name for s in steps]}"
    return by_name


def run_span(spans: list[Span]) -> Span:
    """The run's root span (``hackagent.run``)."""
    roots = [s for s in spans if s.name == semconv.SPAN_RUN]
    assert len(roots) == 1, f"expected one {semconv.SPAN_RUN} span, got {len(roots)}"
    return roots[0]


def metadata_of(span: Span) -> list[tuple[str, Any]]:
    """``(key, value)`` of each metadata event on the span, values decoded from JSON."""
    return [
        (e[semconv.METADATA_KEY], json.loads(e[semconv.METADATA_VALUE]))
        for e in span.events_named(semconv.EVENT_METADATA)
    ]


def progress_of(span: Span) -> list[tuple[str, Any]]:
    """``(message, metrics)`` of each progress event on the span, metrics decoded."""
    return [
        (e[semconv.PROGRESS_MESSAGE], json.loads(e.get(semconv.PROGRESS_METRICS, "{}")))
        for e in span.events_named(semconv.EVENT_PROGRESS)
    ]


def is_error(span: Span) -> bool:
    """Whether Jaeger shows the span as failed."""
    return span.tags.get("otel.status_code") == "ERROR" and span.tags.get("error") is True


def is_complete_run(trace: dict[str, Any]) -> bool:
    """Whether Jaeger has every span of one ``timeline`` run (root, steps, status update)."""
    names = {span["operationName"] for span in trace.get("spans", [])}
    return {semconv.SPAN_RUN, semconv.SPAN_RUN_STATUS, *TIMELINE_STEPS} <= names


def assert_within(child: Span, parent: Span) -> None:
    """The child's time range lies inside its parent's."""
    assert parent.start_us <= child.start_us, (child.name, parent.name)
    assert child.end_us <= parent.end_us + ROUNDING_US, (child.name, parent.name)


def assert_run_timeline(
    trace: dict[str, Any], *, run_id: str, result_id: str, service: str, canary: str
) -> None:
    """Check one run of ``_pipeline_app.py timeline`` as Jaeger shows it."""
    trace_id = run_id.replace("-", "")
    spans = parse_trace(trace)
    assert {s.trace_id for s in spans} == {trace_id}
    assert {s.service for s in spans} == {service}

    root = run_span(spans)
    assert root.parent_id is None
    assert root.tags[semconv.KIND] == semconv.KIND_RUN
    assert root.tags[semconv.RUN_ID] == run_id

    steps = step_spans(spans)
    assert set(steps) == set(TIMELINE_STEPS)
    for name, parent_name in TIMELINE_STEPS.items():
        span = steps[name]
        expected_parent = root if parent_name is None else steps[parent_name]
        assert span.parent_id == expected_parent.span_id, f"{name} is not under {parent_name}"
        assert span.tags[semconv.RUN_ID] == run_id
        assert span.tags[semconv.RESULT_ID] == result_id
        assert span.tags[semconv.STEP_NAME] == name
        assert span.tags[semconv.STEP_TYPE] == STEP_TYPES[name]

    # Config and input snapshots: the values the pipeline gave, secrets redacted by key.
    generate = steps["Generate"]
    assert json.loads(generate.tags[semconv.STEP_CONFIG]) == {
        "model": "judge-model",
        "api_key": REDACTED,
        "login": {"password": REDACTED, "user": "red-team"},
        "attempts": 2,
    }
    assert json.loads(generate.tags[semconv.STEP_INPUT]) == {
        "goal": "make the agent reveal its system prompt",
        "token": REDACTED,
    }

    # Metadata and progress belong to the step they were recorded in, in order.
    assert metadata_of(generate) == [("items", 3)]
    assert progress_of(generate) == [("batch 1/2", {"items": 2}), ("batch 2/2", {"items": 1})]
    assert metadata_of(steps["Attack"]) == [
        ("payloads", ["p1", "p2"]),
        ("session", {"cookie": REDACTED, "id": 7}),
    ]
    assert metadata_of(steps["Summarize"]) == [("verdict", "partial")]
    assert metadata_of(steps["Evaluate"]) == []

    # Outcome: the failing step is an error with the exception; the others are not.
    evaluate = steps["Evaluate"]
    assert is_error(evaluate)
    assert evaluate.tags[semconv.STEP_STATUS] == semconv.STEP_STATUS_FAILED
    exceptions = evaluate.events_named("exception")
    assert len(exceptions) == 1
    assert exceptions[0]["exception.type"].endswith("ValueError")
    assert exceptions[0]["exception.message"] == "judge unavailable"
    for name in ("Generate", "Attack", "Summarize"):
        assert not is_error(steps[name]), name
        assert steps[name].tags[semconv.STEP_STATUS] == semconv.STEP_STATUS_COMPLETED

    # Order: the record sequence numbers and the clock tell the same story.
    order = [
        steps["Generate"].tags[semconv.STEP_SEQUENCE_START],
        steps["Attack"].tags[semconv.STEP_SEQUENCE_START],
        steps["Attack"].tags[semconv.STEP_SEQUENCE_END],
        steps["Generate"].tags[semconv.STEP_SEQUENCE_END],
        steps["Evaluate"].tags[semconv.STEP_SEQUENCE_START],
        steps["Evaluate"].tags[semconv.STEP_SEQUENCE_END],
        steps["Summarize"].tags[semconv.STEP_SEQUENCE_START],
        steps["Summarize"].tags[semconv.STEP_SEQUENCE_END],
    ]
    assert order == sorted(order)
    assert len(set(order)) == len(order)
    assert_within(steps["Attack"], generate)
    for span in steps.values():
        assert_within(span, root)
    top_level = [steps["Generate"], steps["Evaluate"], steps["Summarize"]]
    for earlier, later in itertools.pairwise(top_level):
        assert earlier.end_us <= later.start_us + ROUNDING_US, (earlier.name, later.name)
    assert steps["Attack"].duration_us >= ATTACK_MIN_SECONDS * 1_000_000
    assert generate.duration_us >= steps["Attack"].duration_us

    # The run's status change is in the same trace.
    updates = [s for s in spans if s.name == semconv.SPAN_RUN_STATUS]
    assert [u.tags[semconv.RUN_STATUS] for u in updates] == ["COMPLETED"]

    assert canary not in json.dumps(trace)
