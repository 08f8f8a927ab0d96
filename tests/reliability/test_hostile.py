"""Hostile input: fuzzed span views through the mapping, huge and deep values through the
tracker, and unauthenticated, oversized and gzip-bomb requests to a running bridge.

Nothing crashes, everything that leaves is bounded strict JSON, and a secret under a
secret key never comes out. (Sanitizing, the OTLP decoder and the bridge's HTTP layer
have their own hypothesis fuzzers in tests/test_sanitize.py, tests/test_bridge_decode.py
and tests/test_bridge_app.py; atheris drives the same entry points in ``test_atheris_*``.)
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge_support import new_ids, otlp_protobuf, scenario_spans
from hackagent_otel import _mapping, semconv
from hackagent_otel._sanitize import Sanitizer
from hackagent_otel._spanview import EventView, SpanView
from hackagent_otel.testing import FakeHackAgentAPI
from integration.test_bridge import BridgeProcess
from otel_fixtures import missing

from .conftest import RELIABILITY_APPS, Harness, rss_bytes, subprocess_env

CANARY = "CANARY-hostile-51d2"
#: What the mapping fuzzers map with: one sanitizer, as a bridge keeps one.
SANITIZER = Sanitizer()
#: The canary under secret keys, as the JSON-valued attributes (config, input, agent data,
#: progress metrics) carry it. Free-text attributes (names, notes, error messages) are
#: data, never scrubbed by pattern, so the canary is only ever put in JSON-valued ones.
SECRET_JSON = json.dumps({"api_key": CANARY, "nested": [{"password": CANARY}], "ok": 1})

# -- the mapping, on arbitrary span views -------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.just(json.dumps({"k": [1, {"v": None}]})),
    st.just("{not json"),
    st.just("x" * 10_000),
)
attribute_values = st.one_of(scalars, st.lists(scalars, max_size=4))
uuids = st.one_of(st.uuids().map(str), st.text(max_size=40), st.integers())
our_keys = st.sampled_from(
    [
        semconv.STEP_NAME,
        semconv.STEP_TYPE,
        semconv.STEP_TRACE_TYPE,
        semconv.STEP_SEQUENCE_START,
        semconv.STEP_SEQUENCE_END,
        semconv.STEP_STATUS,
        semconv.STEP_CONFIG,
        semconv.STEP_INPUT,
        semconv.STEP_CONTEXT_METADATA,
        semconv.STEP_ERROR_MESSAGE,
        semconv.RUN_STATUS,
        semconv.RESULT_EVALUATION_STATUS,
        semconv.RESULT_EVALUATION_NOTES,
        semconv.RESULT_AGENT_SPECIFIC_DATA,
    ]
)


@st.composite
def span_views(draw: st.DrawFn) -> SpanView:
    attributes: dict[str, Any] = dict(
        draw(st.dictionaries(st.one_of(our_keys, st.text(max_size=20)), attribute_values))
    )
    attributes[semconv.KIND] = draw(
        st.one_of(
            st.sampled_from(
                [
                    semconv.KIND_STEP,
                    semconv.KIND_RUN,
                    semconv.KIND_RUN_STATUS,
                    semconv.KIND_RESULT_STATUS,
                ]
            ),
            attribute_values,
        )
    )
    attributes[semconv.RUN_ID] = draw(uuids)
    attributes[semconv.RESULT_ID] = draw(uuids)
    for key in (semconv.STEP_SEQUENCE_START, semconv.STEP_SEQUENCE_END):
        if draw(st.booleans()):
            attributes[key] = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
    for key in (semconv.STEP_CONFIG, semconv.STEP_INPUT, semconv.RESULT_AGENT_SPECIFIC_DATA):
        if draw(st.booleans()):
            attributes[key] = SECRET_JSON
    event_attributes = st.fixed_dictionaries(
        {},
        optional={
            semconv.METADATA_KEY: st.one_of(st.sampled_from(["token", "n"]), attribute_values),
            semconv.METADATA_VALUE: attribute_values,
            semconv.PROGRESS_MESSAGE: attribute_values,
            semconv.PROGRESS_METRICS: st.one_of(st.just(SECRET_JSON), attribute_values),
        },
    )
    events = draw(
        st.lists(
            st.builds(
                EventView,
                st.sampled_from([semconv.EVENT_METADATA, semconv.EVENT_PROGRESS, "exception"]),
                st.integers(min_value=0, max_value=2**64 - 1),
                event_attributes,
            ),
            max_size=5,
        )
    )
    start = draw(st.integers(min_value=0, max_value=2**64 - 1))
    return SpanView(
        name=draw(st.text(max_size=30)),
        trace_id=draw(st.integers(min_value=0, max_value=2**128 - 1)),
        span_id=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        start_time_ns=start,
        attributes=attributes,
        parent_span_id=draw(st.none() | st.integers(min_value=0, max_value=2**64 - 1)),
        end_time_ns=draw(st.none() | st.integers(min_value=0, max_value=2**64 - 1)),
        events=tuple(events),
        status=draw(st.sampled_from(["UNSET", "OK", "ERROR"])),
        status_description=draw(st.none() | st.text(max_size=30)),
        sanitized=False,  # as the bridge sees every span
    )


def _check_mapped(mapped: _mapping.Mapped) -> None:
    for record in mapped.records:
        text = record.to_json()  # strict JSON (no NaN), or it raises
        assert CANARY not in text
        assert len(text) < 1_000_000
        json.loads(text)
        sequence = record.body.get("sequence")
        if record.kind == "trace":
            assert isinstance(sequence, int)
    for problem in mapped.problems:
        assert CANARY not in problem


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(view=span_views(), include_start=st.booleans())
def test_mapping_any_finished_span_view_never_raises_and_never_leaks_a_secret(
    view: SpanView, include_start: bool
) -> None:
    _check_mapped(_mapping.map_end(view, SANITIZER, include_start=include_start))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(view=span_views())
def test_mapping_any_started_span_view_never_raises_and_never_leaks_a_secret(
    view: SpanView,
) -> None:
    _check_mapped(_mapping.map_start(view, SANITIZER))


# -- huge and deep values through the tracker -----------------------------------------


def _deep(depth: int) -> Any:
    value: Any = {"api_key": CANARY}
    for _ in range(depth):
        value = {"level": value}
    return value


class Cycle:
    def __init__(self) -> None:
        self.me = self


HUGE_VALUES: dict[str, Any] = {
    "10MB-string": "x" * 10_000_000,
    "1M-list": list(range(1_000_000)),
    "100k-keys": {f"k{i}": i for i in range(100_000)},
    "5000-deep": _deep(5_000),
    "cycle": [Cycle(), {"self": None}],
    "nan-bytes-sets": {"n": math.nan, "b": b"\x00\xff" * 1000, "s": {1, 2}, 3: "int key"},
}


@pytest.mark.parametrize("name", list(HUGE_VALUES))
def test_huge_deep_and_odd_values_pass_through_the_tracker_bounded(
    harness: Harness, name: str
) -> None:
    value = HUGE_VALUES[name]
    tracker = harness.tracker()
    started = time.monotonic()
    with tracker.track_step(
        "Hostile", "STEP_HOSTILE", input_data=value, config={"v": value, "token": CANARY}
    ):
        tracker.add_step_metadata("v", value)
        tracker.add_step_metadata("secret", CANARY)
        tracker.record_progress("p", v=value, api_key=CANARY)
    took = time.monotonic() - started
    assert took < 5.0, f"{name}: {took:.2f}s"
    final = harness.wait_settled()
    assert final.sent == final.produced == 2, final
    bodies = [json.dumps(c.body) for c in harness.api.calls]
    assert all(len(body) < 300_000 for body in bodies), [len(b) for b in bodies]
    assert not any(CANARY in body for body in bodies)
    (span,) = harness.exporter.get_finished_spans()
    for attribute in (span.attributes or {}).values():
        assert len(str(attribute)) <= 64_000
    assert CANARY not in str(span.attributes)


# -- a running bridge process ------------------------------------------------------


@pytest.fixture
def hostile_bridge(tmp_path: Path, fake_api: FakeHackAgentAPI) -> Any:
    bridge = BridgeProcess(
        tmp_path,
        tmp_path / "bridge-outbox.sqlite3",
        fake_api,
        extra_env={"HACKAGENT_BRIDGE_TOKEN": CANARY},
    ).start()
    yield bridge
    bridge.process.stop()


def test_a_running_bridge_refuses_unauthenticated_oversized_and_bomb_requests_and_survives(
    hostile_bridge: BridgeProcess, fake_api: FakeHackAgentAPI
) -> None:
    bridge = hostile_bridge
    proc = bridge.process.process
    assert proc is not None
    body = otlp_protobuf(scenario_spans(*new_ids()))
    protobuf = {"Content-Type": "application/x-protobuf"}
    auth = {"Authorization": f"Bearer {CANARY}"}
    rss_before = rss_bytes(proc.pid)
    with httpx.Client(timeout=30) as http:
        assert http.post(bridge.traces_url, content=body, headers=protobuf).status_code == 401
        wrong = {**protobuf, "Authorization": "Bearer not-it"}
        assert http.post(bridge.traces_url, content=body, headers=wrong).status_code == 401
        oversized = b"\x00" * (5 * 2**20)
        response = http.post(bridge.traces_url, content=oversized, headers={**protobuf, **auth})
        assert response.status_code == 413
        bomb = gzip.compress(b"\x00" * (1024 * 2**20), compresslevel=9)  # 1 GiB, ~1 MiB sent
        started = time.monotonic()
        response = http.post(
            bridge.traces_url,
            content=bomb,
            headers={**protobuf, **auth, "Content-Encoding": "gzip"},
        )
        took = time.monotonic() - started
        assert response.status_code == 413
        assert took < 5.0
        assert http.post(bridge.traces_url, content=body, headers={**protobuf, **auth}).is_success
    growth = rss_bytes(proc.pid) - rss_before
    print(f"\ngzip bomb: 413 in {took:.2f}s, bridge RSS +{growth / 2**20:.1f} MB")
    assert growth < 64 * 2**20, f"the bridge grew by {growth / 2**20:.0f} MB"
    assert proc.poll() is None
    assert fake_api.wait_for(lambda: len(fake_api.traces) == 4, timeout=10)
    assert CANARY not in bridge.process.log_text()


# -- atheris (coverage-guided, libFuzzer) ------------------------------------------


def _atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


@pytest.mark.soak
@pytest.mark.parametrize("target", ["decode", "sanitize", "mapping"])
def test_atheris_finds_no_crash_in_the_decoder_sanitizer_or_mapping(target: str) -> None:
    if not _atheris_available():
        missing("atheris is not installed: `make soak` installs it")
    completed = subprocess.run(
        [sys.executable, str(RELIABILITY_APPS / "atheris_fuzz.py"), target, "-runs=10000"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "Done 10000 runs" in completed.stderr, completed.stderr[-2000:]
