"""Run anchors: one trace per run, a root span whose trace id is the run id."""

from __future__ import annotations

import threading
import uuid

import pytest
from opentelemetry import trace

from hackagent_otel import semconv, trace_id_hex_for_run
from hackagent_otel._runs import RunAnchors, trace_id_for_run
from otel_fixtures import OTel, attrs, span_id, trace_id


def test_a_uuid_run_id_is_its_own_trace_id() -> None:
    run_id = uuid.uuid4()

    assert trace_id_for_run(str(run_id)) == run_id.int
    assert trace_id_hex_for_run(str(run_id)) == run_id.hex


def test_spellings_of_one_uuid_share_a_trace_id() -> None:
    run_id = uuid.uuid4()

    assert trace_id_for_run(str(run_id).upper()) == run_id.int
    assert trace_id_for_run(run_id.hex) == run_id.int


@pytest.mark.parametrize("run_id", ["nightly-42", "run 1", "", "é"])
def test_a_non_uuid_run_id_gets_a_stable_valid_trace_id(run_id: str) -> None:
    value = trace_id_for_run(run_id)

    assert value == trace_id_for_run(run_id)
    assert 0 < value < 2**128
    assert len(trace_id_hex_for_run(run_id)) == 32
    assert trace_id_for_run(run_id + "x") != value


def test_the_nil_uuid_still_gets_a_valid_trace_id() -> None:
    assert trace_id_for_run(str(uuid.UUID(int=0))) != 0


def test_first_span_of_a_run_starts_a_root_with_the_run_trace_id(otel: OTel) -> None:
    anchors = RunAnchors()
    run_id = str(uuid.uuid4())

    parent = anchors.parent_for(run_id)

    assert parent is not None
    assert anchors.open_runs() == [run_id]
    root_context = trace.get_current_span(parent).get_span_context()
    assert root_context.trace_id == uuid.UUID(run_id).int
    assert anchors.parent_for(run_id) is parent
    anchors.end_run(run_id, "status")
    (root,) = otel.runs()
    assert root.name == semconv.SPAN_RUN
    assert span_id(root) == root_context.span_id
    assert attrs(root) == {
        semconv.KIND: semconv.KIND_RUN,
        semconv.RUN_ID: run_id,
        semconv.RUN_ENDED_BY: "status",
    }
    assert anchors.open_runs() == []


def test_with_an_active_span_the_run_joins_the_callers_trace(otel: OTel) -> None:
    anchors = RunAnchors()
    run_id = str(uuid.uuid4())
    with otel.provider.get_tracer("user").start_as_current_span("caller") as caller:
        assert anchors.parent_for(run_id) is None  # the current span is the parent

    later = anchors.parent_for(run_id)  # no active span now: the caller's span
    assert later is not None
    assert trace.get_current_span(later).get_span_context() == caller.get_span_context()
    anchors.end_all("shutdown")
    assert otel.runs() == []  # no root of ours to end


def test_concurrent_first_spans_create_one_root(otel: OTel) -> None:
    anchors = RunAnchors()
    run_id = str(uuid.uuid4())
    barrier = threading.Barrier(8)
    parents = []

    def first() -> None:
        barrier.wait()
        parents.append(anchors.parent_for(run_id))

    threads = [threading.Thread(target=first) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    anchors.end_all("shutdown")

    assert len({id(p) for p in parents}) == 1
    assert len(otel.runs()) == 1


def test_end_all_ends_every_open_run_once(otel: OTel) -> None:
    anchors = RunAnchors()
    run_ids = [str(uuid.uuid4()) for _ in range(3)]
    for run_id in run_ids:
        anchors.parent_for(run_id)

    anchors.end_all("shutdown")
    anchors.end_all("shutdown")
    anchors.end_run(run_ids[0], "status")

    roots = otel.runs()
    assert sorted(attrs(r)[semconv.RUN_ID] for r in roots) == sorted(run_ids)
    assert {attrs(r)[semconv.RUN_ENDED_BY] for r in roots} == {"shutdown"}
    assert {trace_id(r) for r in roots} == {uuid.UUID(r).int for r in run_ids}


def test_a_run_used_after_it_ended_gets_a_new_root_in_the_same_trace(otel: OTel) -> None:
    anchors = RunAnchors()
    run_id = str(uuid.uuid4())
    anchors.parent_for(run_id)
    anchors.end_run(run_id, "status")

    anchors.parent_for(run_id)
    anchors.end_run(run_id, "status")

    assert {trace_id(r) for r in otel.runs()} == {uuid.UUID(run_id).int}
    assert len(otel.runs()) == 2


def test_spellings_of_one_run_id_share_one_root(otel: OTel) -> None:
    anchors = RunAnchors()
    run_id = str(uuid.uuid4())
    anchors.parent_for(run_id.upper())
    anchors.parent_for(run_id)
    assert anchors.open_runs() == [run_id]

    anchors.end_run(run_id.upper(), "status")

    assert anchors.open_runs() == []
    (root,) = otel.runs()
    assert attrs(root)[semconv.RUN_ID] == run_id


def test_past_the_bound_the_oldest_open_run_ends_and_is_counted(
    otel: OTel, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs that never get a terminal status must not hold memory for ever (40,000 held
    205 MB): the oldest one's span ends, and a later step of it starts a new one."""
    anchors = RunAnchors(max_open=3)
    run_ids = [str(uuid.uuid4()) for _ in range(5)]
    for run_id in run_ids:
        anchors.parent_for(run_id)

    assert anchors.open_runs() == run_ids[2:]
    assert anchors.evicted == 2
    ended = {attrs(span)[semconv.RUN_ID]: attrs(span)[semconv.RUN_ENDED_BY] for span in otel.runs()}
    assert ended == {run_ids[0]: "evicted", run_ids[1]: "evicted"}
    assert "more than 3 runs open at once" in caplog.text

    again = anchors.parent_for(run_ids[0].upper())  # another spelling of an evicted run
    assert trace.get_current_span(again).get_span_context().trace_id == uuid.UUID(run_ids[0]).int
    assert anchors.open_runs() == [*run_ids[3:], run_ids[0]]
    anchors.end_all("shutdown")
    assert anchors.open_runs() == []


def test_every_spelling_of_a_run_finds_one_anchor_and_ending_it_forgets_them_all(
    otel: OTel,
) -> None:
    anchors = RunAnchors()
    run_id = uuid.uuid4()
    spellings = [str(run_id), str(run_id).upper(), run_id.hex]

    parents = {id(anchors.parent_for(spelling)) for spelling in spellings}
    assert len(parents) == 1
    assert anchors.open_runs() == [str(run_id)]
    anchors.end_run(spellings[1], "status")
    assert anchors.open_runs() == []
    assert anchors.parent_for(spellings[2]) is not None  # a new anchor, a new root span
    assert len(anchors.open_runs()) == 1
    anchors.end_all("shutdown")
    assert len(otel.runs()) == 2
