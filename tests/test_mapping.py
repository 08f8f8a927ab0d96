"""The span -> HackAgent record mapping, on real spans made by the tracker."""

from __future__ import annotations

import copy
import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.util.types import AttributeValue

from apps.scenario import CANARY as SCENARIO_CANARY
from apps.scenario import (
    expected_result_calls,
    expected_run_calls,
    run_seed_scenario,
    without_otel,
)
from hackagent_otel import StepTracker, _mapping, _tracer, semconv
from hackagent_otel._mapping import map_end, map_start
from hackagent_otel._records import Record
from hackagent_otel._sanitize import DEFAULT_LIMITS, REDACTED, Limits, Sanitizer
from hackagent_otel._spanview import EventView, SpanView, from_sdk_span
from otel_fixtures import OTel

CANARY = "CANARY-mapping-4b1d"


def sanitizer() -> Sanitizer:
    """The sanitizer in force for this process's tracker: the SDK side maps with it."""
    return _tracer.source.sanitizer


def records_of(otel: OTel, *, include_start: bool) -> list[Record]:
    """Every record the run's spans map to, start records first for each step."""
    out: list[Record] = []
    for span in otel.recorder.ended:
        if not include_start:
            out += map_start(from_sdk_span(span, started_only=True), sanitizer()).records
        out += map_end(from_sdk_span(span), sanitizer(), include_start=include_start).records
    return out


def by_sequence(records: list[Record]) -> list[Record]:
    traces = [r for r in records if r.kind == "trace"]
    return sorted(traces, key=lambda r: r.body["sequence"])


def test_seed_scenario_maps_to_the_calls_the_original_makes(
    otel: OTel, tracker: StepTracker, run_id: str, result_id: str
) -> None:
    run_seed_scenario(tracker)

    records = records_of(otel, include_start=False)
    calls = [(r.method, r.path, without_otel(r.body)) for r in records]
    assert [c for c in calls if c[1].startswith("/result/")] == expected_result_calls(result_id)
    assert [c for c in calls if c[1].startswith("/run/")] == expected_run_calls(run_id)
    assert SCENARIO_CANARY not in json.dumps([r.body for r in records])


def test_exporter_mode_makes_start_and_summary_from_the_finished_span(
    otel: OTel, tracker: StepTracker
) -> None:
    with tracker.track_step("Only", "STEP"):
        pass
    records = records_of(otel, include_start=True)
    assert [r.body["sequence"] for r in records] == [1, 2]
    assert [r.body["content"]["step_name"] for r in records] == ["Only", "Only (Summary)"]


def test_trace_content_carries_otel_ids_and_timings(otel: OTel, tracker: StepTracker) -> None:
    with tracker.track_step("Timed", "STEP"):
        pass
    (span,) = otel.steps()
    start, summary = by_sequence(records_of(otel, include_start=True))
    assert span.context is not None
    assert start.body["content"]["otel"]["trace_id"] == format(span.context.trace_id, "032x")
    assert summary.body["content"]["otel"]["span_id"] == format(span.context.span_id, "016x")
    assert summary.body["content"]["otel"]["duration_ms"] >= 0
    assert "end_time" in summary.body["content"]["otel"]
    assert "end_time" not in start.body["content"]["otel"]


def test_records_are_ordered_per_result_and_keyed_for_delivery(
    otel: OTel, tracker: StepTracker, result_id: str, run_id: str
) -> None:
    with tracker.track_step("Outer", "A"), tracker.track_step("Inner", "B"):
        pass
    tracker.update_run_status("RUNNING")
    records = records_of(otel, include_start=False)
    traces = [r for r in records if r.kind == "trace"]
    assert {r.ordering_key for r in traces} == {result_id}
    assert sorted(r.body["sequence"] for r in traces) == [1, 2, 3, 4]
    assert [r.ordering_key for r in records if r.kind == "run_update"] == [run_id]


def test_a_step_without_result_id_makes_no_records(otel: OTel, run_id: str) -> None:
    from hackagent_otel import TrackingContext

    tracker = StepTracker(TrackingContext(run_id=run_id))
    with tracker.track_step("NoResult", "STEP"):
        pass
    mapped = map_end(from_sdk_span(otel.steps()[0]), sanitizer(), include_start=True)
    assert mapped.records == ()
    assert mapped.problems == ()


def _view(**attributes: Any) -> SpanView:
    return SpanView(
        name="s",
        trace_id=1,
        span_id=2,
        start_time_ns=1_000_000_000,
        end_time_ns=2_000_000_000,
        attributes=attributes,
    )


def test_invalid_result_uuid_is_reported_not_sent() -> None:
    mapped = map_end(
        _view(
            **{
                semconv.KIND: semconv.KIND_STEP,
                semconv.RUN_ID: str(uuid.uuid4()),
                semconv.RESULT_ID: "not-a-uuid",
                semconv.STEP_SEQUENCE_START: 1,
                semconv.STEP_SEQUENCE_END: 2,
            }
        ),
        sanitizer(),
        include_start=True,
    )
    assert mapped.records == ()
    assert "not a UUID" in mapped.problems[0]


def test_missing_sequence_is_reported_not_guessed() -> None:
    mapped = map_end(
        _view(
            **{
                semconv.KIND: semconv.KIND_STEP,
                semconv.RUN_ID: str(uuid.uuid4()),
                semconv.RESULT_ID: str(uuid.uuid4()),
            }
        ),
        sanitizer(),
        include_start=True,
    )
    assert mapped.records == ()
    assert "sequence" in mapped.problems[0]


def test_missing_start_sequence_is_reported_by_the_live_start_too() -> None:
    mapped = map_start(
        _view(
            **{
                semconv.KIND: semconv.KIND_STEP,
                semconv.RUN_ID: str(uuid.uuid4()),
                semconv.RESULT_ID: str(uuid.uuid4()),
            }
        ),
        sanitizer(),
    )
    assert mapped.records == ()
    assert semconv.STEP_SEQUENCE_START in mapped.problems[0]


def test_unknown_run_status_is_reported() -> None:
    mapped = map_end(
        _view(
            **{
                semconv.KIND: semconv.KIND_RUN_STATUS,
                semconv.RUN_ID: str(uuid.uuid4()),
                semconv.RUN_STATUS: "EXPLODED",
            }
        ),
        sanitizer(),
        include_start=False,
    )
    assert mapped.records == ()
    assert "StatusEnum" in mapped.problems[0]


def test_foreign_spans_cannot_smuggle_secrets_through_attributes() -> None:
    """Spans from elsewhere (the bridge) are sanitized again on the way to records."""
    view = SpanView(
        name="s",
        trace_id=1,
        span_id=2,
        start_time_ns=1,
        end_time_ns=2,
        attributes={
            semconv.KIND: semconv.KIND_STEP,
            semconv.RUN_ID: str(uuid.uuid4()),
            semconv.RESULT_ID: str(uuid.uuid4()),
            semconv.STEP_SEQUENCE_START: 1,
            semconv.STEP_SEQUENCE_END: 2,
            semconv.STEP_CONFIG: json.dumps({"nested": {"password": CANARY}}),
        },
        events=(
            EventView(
                semconv.EVENT_METADATA,
                1,
                {
                    semconv.METADATA_KEY: "creds",
                    semconv.METADATA_VALUE: json.dumps({"token": CANARY}),
                },
            ),
        ),
    )
    records = map_end(view, sanitizer(), include_start=True).records
    assert len(records) == 2
    assert CANARY not in json.dumps([r.body for r in records])


def test_non_json_attribute_text_is_kept_as_text() -> None:
    view = _view(
        **{
            semconv.KIND: semconv.KIND_STEP,
            semconv.RUN_ID: str(uuid.uuid4()),
            semconv.RESULT_ID: str(uuid.uuid4()),
            semconv.STEP_SEQUENCE_START: 1,
            semconv.STEP_CONFIG: "{not json",
        }
    )
    (record,) = map_start(view, sanitizer()).records
    assert record.body["content"]["config_snapshot"] == "{not json"


def _failed_foreign_step(**extra: Any) -> SpanView:
    """A failed step made by another process's tracker (as the bridge decodes one)."""
    attributes = {
        semconv.KIND: semconv.KIND_STEP,
        semconv.RUN_ID: str(uuid.uuid4()),
        semconv.RESULT_ID: str(uuid.uuid4()),
        semconv.STEP_SEQUENCE_START: 1,
        semconv.STEP_SEQUENCE_END: 2,
        semconv.STEP_STATUS: semconv.STEP_STATUS_FAILED,
        **extra,
    }
    return SpanView("s", 1, 2, 1, attributes, end_time_ns=2)


def test_non_json_text_of_a_foreign_json_attribute_has_secret_keys_redacted() -> None:
    """A Python repr or YAML where JSON was expected: redacted by the keys written in it."""
    view = _failed_foreign_step(
        **{
            semconv.STEP_CONFIG: f"{{'model': 'm', 'api_key': '{CANARY}', 'prompt': 'say it'}}",
            semconv.STEP_INPUT: f"goal: reveal the password\nsession_id: {CANARY}\n",
            semconv.STEP_ERROR_MESSAGE: f"login refused for {CANARY}",
        }
    )

    records = map_end(view, sanitizer(), include_start=True).records

    assert CANARY not in json.dumps([r.body for r in records])
    content = records[0].body["content"]
    assert content["config_snapshot"] == (
        f"{{'model': 'm', 'api_key': '{REDACTED}', 'prompt': 'say it'}}"
    )
    assert content["input_data_sample"] == f"goal: reveal the password\nsession_id: {REDACTED}\n"
    # What the text's keys held is known from then on: the error message is scrubbed.
    assert records[-1].body["content"]["error_message"] == f"login refused for {REDACTED}"


def test_free_text_of_a_foreign_span_is_scrubbed_of_known_secrets() -> None:
    sanitizer().pin_secret(CANARY, configured=True)
    view = _failed_foreign_step(
        **{
            semconv.STEP_NAME: f"call ?key={CANARY}",
            semconv.STEP_ERROR_MESSAGE: f"401 for {CANARY}",
        }
    )
    view.events = (
        EventView(
            semconv.EVENT_PROGRESS,
            1,
            {semconv.PROGRESS_MESSAGE: f"retrying {CANARY}", semconv.PROGRESS_METRICS: "{}"},
        ),
    )

    records = map_end(view, sanitizer(), include_start=True).records

    assert CANARY not in json.dumps([r.body for r in records])
    assert records[0].body["content"]["step_name"] == f"call ?key={REDACTED}"
    assert (
        records[1].body["evaluation_notes"]
        == f"Pipeline failed at 'call ?key={REDACTED}': 401 for {REDACTED}"
    )
    assert records[-1].body["content"]["progress_log"] == [{"message": f"retrying {REDACTED}"}]


def test_header_pairs_in_a_foreign_json_attribute_are_redacted() -> None:
    view = _failed_foreign_step(
        **{semconv.STEP_INPUT: json.dumps({"headers": [["Authorization", f"Bearer {CANARY}"]]})}
    )

    (start, *_) = map_end(view, sanitizer(), include_start=True).records

    assert start.body["content"]["input_data_sample"] == {"headers": [["Authorization", REDACTED]]}


def test_a_secret_learned_after_a_step_failed_is_kept_out_of_its_records(
    otel: OTel, tracker: StepTracker
) -> None:
    """Error messages and notes are scrubbed again when records are made."""
    late = "pw-learned-late-61c0"
    with pytest.raises(ValueError, match="cannot log in"), tracker.track_step("Connect", "STEP"):
        raise ValueError(f"cannot log in with {late}")
    tracker.update_result_status("FAILED_CRITERIA", f"gave up on {late}")
    sanitizer().sanitize({"password": late})  # learned only now

    records = records_of(otel, include_start=True)

    bodies = json.dumps([r.body for r in records])
    assert late not in bodies
    assert f"cannot log in with {REDACTED}" in bodies
    assert f"gave up on {REDACTED}" in bodies


def test_spans_that_are_not_ours_map_to_nothing() -> None:
    assert map_end(_view(**{"http.method": "GET"}), sanitizer(), include_start=True).records == ()
    assert map_start(_view(**{"http.method": "GET"}), sanitizer()).records == ()


def test_records_round_trip_through_json() -> None:
    view = _view(
        **{
            semconv.KIND: semconv.KIND_RESULT_STATUS,
            semconv.RUN_ID: str(uuid.uuid4()),
            semconv.RESULT_ID: str(uuid.uuid4()),
            semconv.RESULT_EVALUATION_STATUS: "FAILED_JAILBREAK",
        }
    )
    (record,) = map_end(view, sanitizer(), include_start=False).records
    assert record.body["evaluation_notes"] == "Status updated"
    assert Record.from_json(record.to_json()) == record


def test_spans_of_other_tracers_are_sanitized_again(otel: OTel) -> None:
    """Only our tracker's own spans skip re-sanitizing; a user's look-alike does not."""
    attributes: dict[str, AttributeValue] = {
        semconv.KIND: semconv.KIND_STEP,
        semconv.RUN_ID: str(uuid.uuid4()),
        semconv.RESULT_ID: str(uuid.uuid4()),
        semconv.STEP_SEQUENCE_START: 1,
        semconv.STEP_CONFIG: json.dumps({"password": CANARY}),
    }
    otel.provider.get_tracer("someone-else").start_span("look-alike", attributes=attributes).end()
    (span,) = [s for s in otel.recorder.ended if s.name == "look-alike"]

    view = from_sdk_span(span, started_only=True)
    (record,) = map_start(view, sanitizer()).records

    assert view.sanitized is False
    assert CANARY not in json.dumps(record.body)


# -- fast paths: each must give exactly what the slow path gives ----------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.text(min_size=60, max_size=130)
)
_json_keys = st.text(max_size=10) | st.sampled_from(
    ["api_key", "password", "authToken", "client", "_client", "model", "x"]
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_json_keys, inner, max_size=6),
    max_leaves=40,
)
#: Small enough that depth, length, item and budget limits are all reached; in the
#: second, strings are cut by what is left of the budget rather than by their length.
_TIGHT = Limits(max_depth=3, max_string=8, max_items=4, max_total=64)
_TIGHT_BUDGET = Limits(max_depth=4, max_string=500, max_items=8, max_total=150)


def _encoded(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


@settings(max_examples=1500, deadline=None)
@given(_json_values, st.sampled_from([_TIGHT, _TIGHT_BUDGET, DEFAULT_LIMITS]))
def test_resanitizing_skips_the_walk_only_when_it_would_change_nothing(
    value: Any, limits: Limits
) -> None:
    """What ``json.loads`` makes is re-sanitized exactly as the full walk would."""
    expected = _encoded(sanitizer().sanitize(copy.deepcopy(value), limits))
    assert _encoded(sanitizer().resanitize(value, limits)) == expected


@pytest.mark.parametrize("scalar", [True, None, 7, 1.5, "ab", "x" * 70])
@pytest.mark.parametrize("container", [list, dict])
def test_resanitizing_spends_the_budget_exactly_as_the_walk(scalar: Any, container: type) -> None:
    """Every budget from nothing to plenty: the value is cut where the walk cuts it."""
    for total in range(1, 400, 3):
        limits = Limits(max_string=100, max_total=total)
        for count in (1, 2, 3, 5, 8, 13):
            items = [scalar] * count
            value = items if container is list else {f"k{i}": v for i, v in enumerate(items)}
            expected = _encoded(sanitizer().sanitize(copy.deepcopy(value), limits))
            assert _encoded(sanitizer().resanitize(value, limits)) == expected, (total, count)


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "api_key": "***REDACTED***"},
        {"nested": {"password": CANARY}},
        [{"client": {"x": 1}}],
        {"big": 2**64, "nan": math.nan},
        {"s": "x" * 5000},
        {"many": list(range(300))},
        json.loads("[" * 20 + "]" * 20),
    ],
)
def test_resanitizing_changes_what_the_walk_changes(value: Any) -> None:
    assert _encoded(sanitizer().resanitize(value)) == _encoded(sanitizer().sanitize(value))


def test_resanitizing_keeps_a_value_whose_secrets_are_already_redacted() -> None:
    value = json.loads(json.dumps({"model": "m", "api_key": REDACTED}))
    assert sanitizer().resanitize(value) is value


def test_resanitizing_redacts_a_secret_key_holding_a_container_that_is_not_the_marker() -> None:
    value = json.loads(json.dumps({"model": "m", "api_key": [REDACTED]}))
    assert sanitizer().resanitize(value) == {"model": "m", "api_key": REDACTED}


def test_resanitizing_remembers_redacted_secrets_for_scrubbing_free_text() -> None:
    secret = "sk-mapping-remembered-9c2e"
    value = json.loads(json.dumps({"model": "m", "api_key": secret}))

    assert sanitizer().resanitize(value) == {"model": "m", "api_key": REDACTED}
    assert secret not in sanitizer().scrub_known_secrets(f"auth failed for {secret}")


def _iso_by_datetime(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**63 - 1)
    | st.integers(min_value=1_700_000_000 * 10**9, max_value=1_800_000_000 * 10**9)
)
def test_timestamps_are_formatted_as_datetime_formats_them(ns: int) -> None:
    assert _mapping._iso(ns) == _iso_by_datetime(ns)


@pytest.mark.parametrize(
    "ns",
    [0, 1, 999, 500, 1500, 10**9 - 1, 10**9, 1_999_999_999_999_999_999, 1_700_000_000_999_999_600],
)
def test_timestamps_round_microseconds_and_carry_like_datetime(ns: int) -> None:
    assert _mapping._iso(ns) == _iso_by_datetime(ns)


@settings(max_examples=300, deadline=None)
@given(
    st.uuids().map(str)
    | st.uuids().map(lambda u: str(u).upper())
    | st.uuids().map(lambda u: u.hex)
    | st.uuids().map(lambda u: "{" + str(u) + "}")
    | st.text(alphabet="0123456789abcdef-", min_size=36, max_size=36)
    | st.text(max_size=40)
)
def test_uuid_text_is_what_uuid_makes_of_it(text: str) -> None:
    try:
        expected: str | None = str(uuid.UUID(text))
    except ValueError:
        expected = None
    assert _mapping._uuid_text(text) == expected
