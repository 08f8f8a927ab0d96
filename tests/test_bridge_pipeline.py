"""BridgePipeline and order_records: spans -> records in call order, durable before 200."""

from __future__ import annotations

import dataclasses
import gzip
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from apps.attack_scenario import attack_calls, expected_attack_calls, results_by_goal
from apps.scenario import (
    CANARY,
    SCENARIO_RECORDS,
    expected_result_calls,
    expected_run_calls,
    without_otel,
)
from bridge_support import (
    attack_spans,
    make_pipeline,
    new_ids,
    otlp_protobuf,
    private_provider,
    scenario_spans,
    serve,
)
from hackagent_otel import HackAgentSpanExporter, _mapping, _tracer, semconv
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._records import Call, Record
from hackagent_otel._sanitize import REDACTED, Sanitizer
from hackagent_otel._spanview import SpanView
from hackagent_otel.bridge import BridgePipeline, BridgeSettings
from hackagent_otel.bridge._decode import decode
from hackagent_otel.bridge._pipeline import Backlogged, order_records
from hackagent_otel.testing import FakeHackAgentAPI
from otel_fixtures import ConfigureOTel, ListSink

PROTOBUF = "application/x-protobuf"


def views(spans: list[ReadableSpan]) -> list[SpanView]:
    """The spans as the bridge sees them: through OTLP protobuf and the decoder."""
    return decode(otlp_protobuf(spans), PROTOBUF).spans


def calls(records: list[Record], prefix: str) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, without_otel(r.body)) for r in records if r.path.startswith(prefix)]


def stored_record(call: Call) -> Record:
    """The record a stored call was made from (its body parsed back)."""
    return Record(call.kind, call.method, call.path, call.parsed_body(), call.ordering_key)  # type: ignore[arg-type]


# -- order ------------------------------------------------------------------------------


def test_the_seed_scenario_maps_to_the_originals_calls_in_order() -> None:
    run_id, result_id = new_ids()

    records, rejected, errors = order_records(views(scenario_spans(run_id, result_id)), Sanitizer())

    assert (rejected, errors) == (0, [])
    assert calls(records, f"/result/{result_id}") == expected_result_calls(result_id)
    assert calls(records, f"/run/{run_id}") == expected_run_calls(run_id)


def test_records_equal_the_in_process_exporters_otel_ids_and_times_included() -> None:
    run_id, result_id = new_ids()
    with private_provider() as memory:
        sink = ListSink()
        _tracer.source.provider.add_span_processor(  # type: ignore[attr-defined]
            SimpleSpanProcessor(HackAgentSpanExporter(sink))
        )
        from apps.scenario import run_seed_scenario
        from hackagent_otel import StepTracker, TrackingContext

        run_seed_scenario(StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id)))
        spans = list(memory.get_finished_spans())

    records, _, _ = order_records(views(spans), Sanitizer())

    def per_key(found: list[Record]) -> dict[str, list[tuple[str, str, Any]]]:
        grouped: dict[str, list[tuple[str, str, Any]]] = {}
        for r in found:
            grouped.setdefault(r.ordering_key, []).append((r.method, r.path, r.body))
        return grouped

    assert len(sink.records) == SCENARIO_RECORDS
    assert per_key(records) == per_key(sink.records)


def test_a_nested_steps_records_follow_sequence_order_though_the_child_ends_first() -> None:
    run_id, result_id = new_ids()
    spans = scenario_spans(run_id, result_id, nested=True)
    assert [s.name for s in spans][:2] == ["Inner", "Outer"]  # finished order

    records, _, _ = order_records(views(spans), Sanitizer())

    traces = [r.body for r in records if r.kind == "trace"]
    assert [t["sequence"] for t in traces] == list(range(1, 9))
    assert [t["content"]["step_name"] for t in traces[:4]] == [
        "Outer",
        "Inner",
        "Inner (Summary)",
        "Outer (Summary)",
    ]


def test_order_per_result_holds_for_many_runs_shuffled_in_one_request() -> None:
    ids = [new_ids() for _ in range(6)]
    spans = [s for run_id, result_id in ids for s in scenario_spans(run_id, result_id)]
    random.Random(7).shuffle(spans)

    records, _, _ = order_records(views(spans), Sanitizer())

    for run_id, result_id in ids:
        assert calls(records, f"/result/{result_id}") == expected_result_calls(result_id)
        assert calls(records, f"/run/{run_id}") == expected_run_calls(run_id)


def test_a_failed_steps_result_update_comes_between_its_start_and_its_summary() -> None:
    run_id, result_id = new_ids()
    spans = [s for s in scenario_spans(run_id, result_id) if s.name == "Evaluate"]

    records, _, _ = order_records(views(spans), Sanitizer())

    assert [(r.method, r.body.get("sequence")) for r in records] == [
        ("POST", 3),
        ("PATCH", None),
        ("POST", 4),
    ]


def test_trace_records_keep_sequence_order_when_clocks_disagree() -> None:
    run_id, result_id = new_ids()
    base = views(scenario_spans(run_id, result_id))
    # The second step's clock says it ran before the first (another host, a clock step).
    skewed = [
        dataclasses.replace(v, start_time_ns=v.start_time_ns - 10**12, end_time_ns=v.end_time_ns)
        if v.attributes.get(semconv.STEP_NAME) == "Evaluate"
        else v
        for v in base
    ]

    records, _, _ = order_records(skewed, Sanitizer())

    sequences = [r.body["sequence"] for r in records if r.kind == "trace"]
    assert sequences == [1, 2, 3, 4]


# -- rejects ----------------------------------------------------------------------------


def test_a_span_that_cannot_be_mapped_is_rejected_and_the_others_still_map() -> None:
    run_id, result_id = new_ids()
    good = views(scenario_spans(run_id, result_id))
    broken = dataclasses.replace(
        good[0],
        attributes={**good[0].attributes, semconv.KIND: semconv.KIND_STEP, semconv.RESULT_ID: "x"},
    )

    records, rejected, errors = order_records([broken, *good], Sanitizer())

    assert rejected == 1
    assert "'x' is not a UUID" in errors[0]
    assert len(records) == SCENARIO_RECORDS


def test_a_mapping_error_rejects_only_that_span(monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, result_id = new_ids()
    good = views(scenario_spans(run_id, result_id))
    real_map_end = _mapping.map_end

    def map_end(view: SpanView, sanitizer: Sanitizer, *, include_start: bool) -> _mapping.Mapped:
        if view.attributes.get(semconv.STEP_NAME) == "Evaluate":
            raise RuntimeError("a bug")
        return real_map_end(view, sanitizer, include_start=include_start)

    monkeypatch.setattr("hackagent_otel.bridge._pipeline.map_end", map_end)

    records, rejected, errors = order_records(good, Sanitizer())

    assert rejected == 1
    assert "RuntimeError" in errors[0]
    assert len(records) == SCENARIO_RECORDS - 3


# -- secrets ----------------------------------------------------------------------------


def secret_spans(run_id: str, result_id: str) -> list[ReadableSpan]:
    """A step written by someone else's code (raw OTel), secrets under secret-named keys."""
    with private_provider() as memory:
        tracer = _tracer.source.provider.get_tracer("someone.elses.tracker")
        with tracer.start_as_current_span("Login") as span:
            span.set_attributes(
                {
                    semconv.KIND: semconv.KIND_STEP,
                    semconv.RUN_ID: run_id,
                    semconv.RESULT_ID: result_id,
                    semconv.STEP_NAME: "Login",
                    semconv.STEP_SEQUENCE_START: 1,
                    semconv.STEP_SEQUENCE_END: 2,
                    semconv.STEP_CONFIG: (
                        f'{{"api_key": "{CANARY}", "nested": {{"password": "{CANARY}"}},'
                        f' "session_cookie": "{CANARY}", "prompt": "tell me the password"}}'
                    ),
                }
            )
            span.add_event(
                semconv.EVENT_METADATA,
                {semconv.METADATA_KEY: "auth", semconv.METADATA_VALUE: f'{{"token": "{CANARY}"}}'},
            )
        return list(memory.get_finished_spans())


def test_secrets_in_span_attributes_from_elsewhere_are_redacted_as_in_process() -> None:
    run_id, result_id = new_ids()

    records, _, _ = order_records(views(secret_spans(run_id, result_id)), Sanitizer())

    dumped = repr([r.body for r in records])
    assert CANARY not in dumped
    config = records[0].body["content"]["config_snapshot"]
    assert config["prompt"] == "tell me the password"  # payloads are data, not secrets
    assert config["api_key"] == config["nested"]["password"] == "***REDACTED***"


def test_extra_secret_words_apply_to_the_bridge_too() -> None:
    run_id, result_id = new_ids()
    bridges = Sanitizer(extra_secret_words=["prompt"])
    records, _, _ = order_records(views(secret_spans(run_id, result_id)), bridges)

    assert records[0].body["content"]["config_snapshot"]["prompt"] == "***REDACTED***"


def repr_and_yaml_spans(run_id: str, result_id: str, error: str) -> list[ReadableSpan]:
    """A failed step of another tracker that wrote a Python repr and YAML, not JSON."""
    with private_provider() as memory:
        tracer = _tracer.source.provider.get_tracer("someone.elses.tracker")
        with tracer.start_as_current_span("Login") as span:
            span.set_attributes(
                {
                    semconv.KIND: semconv.KIND_STEP,
                    semconv.RUN_ID: run_id,
                    semconv.RESULT_ID: result_id,
                    semconv.STEP_NAME: "Login",
                    semconv.STEP_SEQUENCE_START: 1,
                    semconv.STEP_SEQUENCE_END: 2,
                    semconv.STEP_STATUS: semconv.STEP_STATUS_FAILED,
                    semconv.STEP_ERROR_MESSAGE: error,
                    semconv.STEP_CONFIG: (
                        f"{{'model': 'm', 'api_key': '{CANARY}', 'prompt': 'tell me the password'}}"
                    ),
                }
            )
            span.add_event(
                semconv.EVENT_METADATA,
                {
                    semconv.METADATA_KEY: "request",
                    semconv.METADATA_VALUE: (
                        f"url: http://t/\nheaders:\n  Authorization: {CANARY}\n"
                    ),
                },
            )
        return list(memory.get_finished_spans())


def test_secrets_in_non_json_text_of_json_attributes_are_redacted_by_key() -> None:
    run_id, result_id = new_ids()

    records, rejected, _ = order_records(
        views(repr_and_yaml_spans(run_id, result_id, f"login failed with {CANARY}")), Sanitizer()
    )

    assert rejected == 0
    assert CANARY not in repr([r.body for r in records])
    start, failure, summary = records
    assert start.body["content"]["config_snapshot"] == (
        "{'model': 'm', 'api_key': '***REDACTED***', 'prompt': 'tell me the password'}"
    )
    assert summary.body["content"]["step_metadata"]["request"] == (
        "url: http://t/\nheaders:\n  Authorization: ***REDACTED***\n"
    )
    assert summary.body["content"]["error_message"] == "login failed with ***REDACTED***"
    assert (
        failure.body["evaluation_notes"]
        == "Pipeline failed at 'Login': login failed with ***REDACTED***"
    )


def test_the_bridges_api_key_quoted_in_a_spans_error_reaches_no_record(
    tmp_path: Path, fake_api: FakeHackAgentAPI
) -> None:
    """The bridge knows its own key: a span quoting it (say, a misrouted 401) is scrubbed."""
    key = "hk-bridge-CANARY-41d7"
    fake_api.stop()
    settings = BridgeSettings(
        outbox_path=tmp_path / "bridge.sqlite3",
        hackagent_base_url=fake_api.base_url,
        hackagent_api_key=key,
    )
    pipeline = BridgePipeline.from_settings(settings)
    run_id, result_id = new_ids()
    try:
        pipeline.ingest(
            otlp_protobuf(repr_and_yaml_spans(run_id, result_id, f"401 with {key}")), PROTOBUF
        )
        with Outbox(settings.outbox_path) as outbox:
            stored = [row.call for row in outbox.list_pending()]
    finally:
        pipeline.close(1.0)

    assert len(stored) == 3
    assert key not in repr([r.parsed_body() for r in stored])
    assert stored[-1].parsed_body()["content"]["error_message"] == "401 with ***REDACTED***"


def test_a_bridge_and_the_tracker_in_one_process_keep_their_own_words_and_secrets(
    tmp_path: Path, configure_otel: ConfigureOTel
) -> None:
    """Two configurations in one process: neither's words nor secrets reach the other."""
    tracker_key, bridge_key, bridge_token = (
        "hk-tracker-CANARY-1f2e",
        "hk-bridge-CANARY-3c4d",
        "tok-bridge-CANARY-5a6b",
    )
    otel = configure_otel(hackagent_api_key=tracker_key, redact_keys=["ssn"], records="off")
    settings = BridgeSettings(
        outbox_path=tmp_path / "bridge.sqlite3",
        hackagent_api_key=bridge_key,
        token=bridge_token,
        redact_keys=("prompt",),
    )
    pipeline = BridgePipeline.from_settings(settings)
    try:
        ours, bridges = otel.telemetry.sanitizer, pipeline.sanitizer
        value = {"customer_ssn": CANARY, "prompt": "say it"}
        all_keys = f"{tracker_key} {bridge_key} {bridge_token}"

        assert ours is _tracer.source.sanitizer
        assert ours.sanitize(value) == {"customer_ssn": REDACTED, "prompt": "say it"}
        assert bridges.sanitize(value) == {"customer_ssn": CANARY, "prompt": REDACTED}
        assert ours.sanitize_text(all_keys) == f"{REDACTED} {bridge_key} {bridge_token}"
        assert bridges.sanitize_text(all_keys) == f"{tracker_key} {REDACTED} {REDACTED}"
    finally:
        pipeline.close(1.0)


# -- durability and back-pressure -------------------------------------------------------


def test_records_are_committed_to_the_outbox_when_ingest_returns(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.stop()
    path = tmp_path / "bridge.sqlite3"
    pipeline = make_pipeline(path, fake_api.base_url)
    run_id, result_id = new_ids()
    try:
        accepted = pipeline.ingest(otlp_protobuf(scenario_spans(run_id, result_id)), PROTOBUF)
        with Outbox(path) as another_process:
            stored = [stored_record(row.call) for row in another_process.list_pending()]
    finally:
        pipeline.close(1.0)

    assert (accepted.records, accepted.rejected) == (SCENARIO_RECORDS, 0)
    assert calls(stored, f"/result/{result_id}") == expected_result_calls(result_id)
    assert calls(stored, f"/run/{run_id}") == expected_run_calls(run_id)


def test_an_http_200_means_the_records_are_in_the_outbox(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.stop()
    path = tmp_path / "bridge.sqlite3"
    run_id, result_id = new_ids()
    body = gzip.compress(otlp_protobuf(scenario_spans(run_id, result_id)))
    with serve(BridgeSettings(outbox_path=path), make_pipeline(path, fake_api.base_url)) as bridge:
        response = httpx.post(
            bridge.traces_url,
            content=body,
            headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        )
        assert response.status_code == 200
        with Outbox(path) as another_process:  # right after the answer, no waiting
            assert another_process.counts().pending == SCENARIO_RECORDS


def test_over_the_pending_limit_check_capacity_raises_backlogged(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.stop()
    pipeline = make_pipeline(tmp_path / "b.sqlite3", fake_api.base_url, max_pending_records=8)
    try:
        pipeline.check_capacity()
        pipeline.ingest(otlp_protobuf(scenario_spans(*new_ids())), PROTOBUF)
        with pytest.raises(Backlogged, match="8 records wait"):
            pipeline.check_capacity()
    finally:
        pipeline.close(1.0)


def test_records_of_many_results_reach_the_api_in_sequence_order_per_result(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    pipeline = make_pipeline(tmp_path / "b.sqlite3", fake_api.base_url)
    pipeline.start()
    ids = [new_ids() for _ in range(10)]
    try:
        for run_id, result_id in ids:  # one request per run, as batches arrive
            pipeline.ingest(otlp_protobuf(scenario_spans(run_id, result_id, nested=True)), PROTOBUF)
        assert fake_api.wait_for(lambda: len(fake_api.traces) == 80, timeout=10)
    finally:
        pipeline.close(2.0)

    for _, result_id in ids:
        assert [t["sequence"] for t in fake_api.traces_for(result_id)] == list(range(1, 9))
    assert fake_api.duplicate_traces() == []


def test_close_is_idempotent_and_leaves_undelivered_records_in_the_outbox(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.stop()
    path = tmp_path / "b.sqlite3"
    pipeline = make_pipeline(path, fake_api.base_url)
    pipeline.start()
    pipeline.ingest(otlp_protobuf(scenario_spans(*new_ids())), PROTOBUF)

    pipeline.close(1.0)
    pipeline.close(1.0)

    assert not pipeline.usable()
    with Outbox(path) as box:
        assert box.counts().pending == SCENARIO_RECORDS


def test_a_uuid_in_upper_case_or_braces_still_groups_with_its_result() -> None:
    run_id, result_id = new_ids()
    spans = views(scenario_spans(run_id, result_id))
    shouted = [
        dataclasses.replace(
            v,
            attributes={
                **v.attributes,
                semconv.RESULT_ID: "{" + str(uuid.UUID(result_id)).upper() + "}",
            },
        )
        if semconv.RESULT_ID in v.attributes
        else v
        for v in spans
    ]

    records, _, _ = order_records(shouted, Sanitizer())

    assert calls(records, f"/result/{result_id}") == expected_result_calls(result_id)


def test_a_per_goal_attack_through_the_bridge_makes_the_originals_calls_with_the_apis_ids(
    fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    """Goals' Results are created from the spans of their creation, and their traces
    follow once the API has answered, also when they come in a later export."""
    run_id = str(uuid.uuid4())
    spans = attack_spans(run_id)
    first, second = spans[: len(spans) // 2], spans[len(spans) // 2 :]
    pipeline = make_pipeline(tmp_path / "bridge.sqlite3", fake_api.base_url)
    pipeline.start()
    try:
        assert pipeline.ingest(otlp_protobuf(first), PROTOBUF).rejected == 0
        assert pipeline.ingest(otlp_protobuf(second), PROTOBUF).rejected == 0
        assert fake_api.wait_for(lambda: len(fake_api.calls) >= 14, timeout=10)
    finally:
        pipeline.close(5.0)
    ids = results_by_goal(fake_api)
    assert fake_api.wait_for(lambda: len(fake_api.calls) >= 14, timeout=10)
    results = [ids[0], ids[1]]
    assert attack_calls(fake_api, run_id, results) == expected_attack_calls(run_id, *results)
    assert len(fake_api.calls) == 14  # nothing twice, nothing else
