"""A canary secret, everywhere a user can put one, reaches no output at all.

The pipeline puts the canary under secret keys in a step's config and input, in
metadata, in progress metrics and in ``agent_specific_data``, then raises an exception
whose message quotes the same value (already redacted by key, so it is scrubbed from
free text too). Its spans go two ways at once:

* in-process records to the fake HackAgent API, which is down for the first part of the
  run (records wait in the outbox, then are delivered);
* OTLP to the real Collector, which exports to the real Jaeger and to the bridge
  (``hackagent-otel bridge`` as a process), which makes records from the spans and
  delivers them to the same API.

Then the canary is searched, as bytes, in every API request (bodies and headers), both
outbox files (SQLite database and WAL), Jaeger's JSON for the trace, every log record of
this process (DEBUG and up) and the logs of the bridge, the Collector and Jaeger.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hackagent_otel import EvaluationStatusEnum, StatusEnum, StepTracker, TrackingContext
from hackagent_otel._outbox_files import outbox_path_for_target
from hackagent_otel.testing import FakeHackAgentAPI
from integration._otel_processes import (
    JAEGER_BIN,
    OTELCOL_BIN,
    Collector,
    Jaeger,
    start_on_free_ports,
)
from integration.conftest import require_binary
from integration.test_bridge import BridgeProcess
from otel_fixtures import ConfigureAPI

pytestmark = pytest.mark.integration

CANARY = "CANARY-everywhere-9c41e7"
REDACTED = "***REDACTED***"


@pytest.fixture
def stack(
    tmp_path: Path, fake_api: FakeHackAgentAPI
) -> Iterator[tuple[Jaeger, Collector, BridgeProcess]]:
    require_binary(JAEGER_BIN)
    require_binary(OTELCOL_BIN)
    logs = tmp_path / "logs"
    logs.mkdir()
    bridge = BridgeProcess(logs, tmp_path / "bridge-outbox.sqlite3", fake_api).start()
    jaeger = start_on_free_ports(lambda: Jaeger(logs))
    collector = start_on_free_ports(
        lambda: Collector(
            logs,
            jaeger_otlp_grpc=jaeger.otlp_grpc_endpoint,
            bridge_endpoint=bridge.url,
            exporters=("otlp_grpc/jaeger", "otlp_http/bridge"),
        )
    )
    try:
        yield jaeger, collector, bridge
    finally:
        collector.stop()
        jaeger.stop()
        bridge.process.stop()


class LoginError(Exception):
    pass


def hostile_pipeline(tracker: StepTracker) -> None:
    tracker.update_run_status(StatusEnum.RUNNING)
    with tracker.track_step(
        "Attack",
        "STEP1_ATTACK",
        input_data={"prompt": "tell me the password", "password": CANARY},
        config={"model": "m", "api_key": CANARY, "headers": {"Authorization": CANARY}},
    ):
        tracker.add_step_metadata("token", CANARY)
        tracker.add_step_metadata("nested", {"client_secret": CANARY, "n": 1})
        tracker.record_progress("batch 1/1", items=1, api_key=CANARY)
    try:
        with tracker.track_step("Login", "STEP2_LOGIN", config={"secret": CANARY}):
            raise LoginError(f"login refused for key {CANARY}")
    except LoginError:
        pass
    tracker.update_result_status(
        EvaluationStatusEnum.FAILED_CRITERIA, "done", {"credential": CANARY, "score": 0}
    )
    tracker.update_run_status(StatusEnum.COMPLETED)


def _bytes_of(path: Path) -> bytes:
    out = b""
    for candidate in (path, Path(f"{path}-wal")):
        if candidate.exists():
            out += candidate.read_bytes()
    return out


@pytest.mark.timeout(180)
def test_a_canary_secret_reaches_no_api_call_outbox_jaeger_trace_or_log(
    configure_api: ConfigureAPI,
    fake_api: FakeHackAgentAPI,
    env_outbox_path: Path,
    stack: tuple[Jaeger, Collector, BridgeProcess],
    all_logs: pytest.LogCaptureFixture,
) -> None:
    jaeger, collector, bridge = stack
    service = f"canary-{uuid.uuid4().hex[:8]}"
    otel = configure_api(otlp_endpoint=collector.otlp_http_url, service_name=service)
    run_id, result_id = str(uuid.uuid4()), str(uuid.uuid4())
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))

    fake_api.stop()  # down for the first part: in-process records wait in the API's outbox
    hostile_pipeline(tracker)
    assert otel.telemetry.force_flush(30_000)
    app_outbox = outbox_path_for_target(env_outbox_path, fake_api.base_url)
    assert app_outbox.exists()
    outbox_while_down = _bytes_of(app_outbox)
    fake_api.start()

    # Both paths deliver: 9 records in-process, the same 9 made by the bridge.
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) >= 8, timeout=60)
    trace = jaeger.api.wait_for_trace(run_id.replace("-", ""), min_spans=4, timeout=60)
    assert any(span["operationName"] == "Attack" for span in trace["spans"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and otel.telemetry.stats()["delivery"][0]["sent"] < 9:
        time.sleep(0.05)
    otel.telemetry.shutdown()

    api_text = json.dumps([[c.method, c.path, c.headers, c.body] for c in fake_api.calls])
    places: dict[str, bytes] = {
        "api requests": api_text.encode(),
        "outbox while the API was down": outbox_while_down,
        "outbox": _bytes_of(app_outbox),
        "bridge outbox": _bytes_of(bridge.outbox),
        "jaeger trace": jaeger.api.raw_trace(run_id.replace("-", "")).encode(),
        "jaeger search": jaeger.api.raw_search(service).encode(),
        "logs of this process": "\n".join(
            f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in all_logs.records
        ).encode(),
        "bridge log": bridge.process.log_text().encode(),
        "collector log": collector.process.log_text().encode(),
        "jaeger log": jaeger.process.log_text().encode(),
    }
    leaks = [name for name, data in places.items() if CANARY.encode() in data]
    assert leaks == []
    # The test saw the real thing: redacted values, the exception, both paths.
    assert REDACTED in api_text
    assert "login refused for key" in api_text
    assert REDACTED.encode() in places["jaeger trace"]
    assert len(outbox_while_down) > 0
    assert all_logs.records, "no log records were captured"
    assert sum(1 for c in fake_api.calls if c.path == f"/run/{run_id}") >= 4  # both paths
