"""from_sdk_span(): what the mapping reads of a real SDK span, live or ended."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Status, StatusCode

from hackagent_otel import semconv
from hackagent_otel._spanview import EventView, from_sdk_span


@pytest.fixture
def provider() -> TracerProvider:
    return TracerProvider()


def test_an_ended_span_gives_its_ids_times_attributes_events_and_status(
    provider: TracerProvider,
) -> None:
    tracer = provider.get_tracer(semconv.TRACER_NAME)
    with tracer.start_as_current_span("outer"):
        span = tracer.start_span("Generate", attributes={"a": "1", "n": 2, "tags": ["x", "y"]})
        span.add_event("hackagent.step.metadata", {"k": "v"}, timestamp=123)
        span.set_attribute("late", True)
        span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end()
    assert isinstance(span, ReadableSpan)

    view = from_sdk_span(span)

    context = span.get_span_context()
    assert (view.name, view.trace_id, view.span_id) == (
        "Generate",
        context.trace_id,
        context.span_id,
    )
    assert span.parent is not None
    assert view.parent_span_id == span.parent.span_id
    assert (view.start_time_ns, view.end_time_ns) == (span.start_time, span.end_time)
    assert view.attributes == {"a": "1", "n": 2, "tags": ("x", "y"), "late": True}
    assert view.events == (EventView("hackagent.step.metadata", 123, {"k": "v"}),)
    assert (view.status, view.status_description) == ("ERROR", "boom")
    assert view.sanitized  # made by our tracer, whose values are already sanitized


def test_the_view_is_a_copy_that_later_changes_to_the_span_do_not_reach(
    provider: TracerProvider,
) -> None:
    span = provider.get_tracer("other").start_span("s", attributes={"a": "1"})

    view = from_sdk_span(span, started_only=True)
    span.set_attribute("b", "2")
    span.end()

    assert view.attributes == {"a": "1"}
    assert (view.end_time_ns, view.events, view.status) == (None, (), "UNSET")
    assert not view.sanitized  # another tracer's span: sanitized again when mapped


def test_a_root_span_has_no_parent(provider: TracerProvider) -> None:
    span = provider.get_tracer("t").start_span("root")
    span.end()

    assert from_sdk_span(span).parent_span_id is None


def test_a_duck_typed_span_is_read_through_its_public_attributes() -> None:
    """Another SDK's span (no BoundedAttributes inside) still gives a full view."""
    context = SimpleNamespace(trace_id=1, span_id=2)
    event = SimpleNamespace(name="e", timestamp=5, attributes={"k": "v"})
    span = SimpleNamespace(
        name="s",
        get_span_context=lambda: context,
        parent=None,
        start_time=3,
        end_time=4,
        attributes={"a": 1},
        events=[event],
        status=None,
        instrumentation_scope=None,
    )

    view = from_sdk_span(span)

    assert (view.attributes, view.events, view.status) == (
        {"a": 1},
        (EventView("e", 5, {"k": "v"}),),
        "UNSET",
    )
