"""``hackagent-otel bridge`` as its own process, fed by the real Collector and by the SDK.

* The Collector (``.bin/otelcol`` with collector/otelcol-config.yaml) exports a pipeline's
  spans to the bridge over ``otlp_http``; the records at the local HackAgent API equal
  those the in-process exporter (``OTEL_TRACES_EXPORTER=hackagent``) makes for the same
  pipeline.
* The SDK's own OTLP/HTTP exporter posts straight to the bridge (protobuf, with and
  without gzip, with a bearer token from ``OTEL_EXPORTER_OTLP_HEADERS``). The Python SDK
  has no OTLP/HTTP JSON exporter; OTLP/JSON is covered in tests/test_bridge_app.py.
* A bridge SIGKILLed after answering 200 (API down meanwhile) delivers those records
  after it starts again; SIGTERM stops it gracefully with exit code 0, losing nothing.
* While the bridge answers 429 (outbox full), the Collector keeps the spans and retries.

The app side uses nothing HackAgent-specific beyond the tracker: ``TrackingContext``
with a run id and no client, and the standard ``OTEL_*`` variables.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.scenario import (
    SCENARIO_RECORDS,
    expected_result_calls,
    expected_run_calls,
)
from bridge_support import new_ids, otlp_protobuf, scenario_spans
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel.testing import FakeHackAgentAPI
from otel_fixtures import api_calls

from ._otel_processes import LOOPBACK, REPO_ROOT, ManagedProcess, ProcessStartError, free_ports
from .conftest import CollectorFactory

pytestmark = pytest.mark.integration

PIPELINE = REPO_ROOT / "tests" / "apps" / "pipeline.py"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


class BridgeProcess:
    """``python -m hackagent_otel bridge`` on a free loopback port, outbox at ``outbox``."""

    def __init__(
        self,
        log_dir: Path,
        outbox: Path,
        api: FakeHackAgentAPI | None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.outbox = outbox
        self.port = free_ports(1)[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
        if api is not None:
            env.update(HACKAGENT_BASE_URL=api.base_url, HACKAGENT_API_KEY=api.api_key)
        env.update(extra_env or {})
        self.process = ManagedProcess(
            name="bridge",
            argv=[
                sys.executable,
                "-m",
                "hackagent_otel",
                "bridge",
                "--port",
                str(self.port),
                "--outbox",
                str(outbox),
            ],
            env=env,
            log_path=log_dir / f"bridge-{self.port}.log",
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    def start(self) -> BridgeProcess:
        self.process.start()
        self.process.wait_ready(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        )
        return self

    def kill(self) -> None:
        proc = self.process.process
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        self.process.stop()

    def terminate(self, timeout: float = 20.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        proc = self.process.process
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout)
        took = time.monotonic() - started
        self.process.stop()
        return code, took


@pytest.fixture
def start_bridge(tmp_path: Path, otel_log_dir: Path) -> Iterator[Any]:
    """Start bridge processes (stopped at teardown); the outbox defaults to one per test."""
    started: list[BridgeProcess] = []

    def start(
        api: FakeHackAgentAPI | None,
        outbox: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> BridgeProcess:
        for attempt in range(3):  # another port if one was taken before the bridge bound it
            bridge = BridgeProcess(
                otel_log_dir, outbox or tmp_path / "bridge-outbox.sqlite3", api, extra_env
            )
            started.append(bridge)
            try:
                return bridge.start()
            except ProcessStartError as exc:
                bridge.process.stop()
                if attempt == 2 or "address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    yield start
    for bridge in started:
        bridge.process.stop()


def run_app(env: Mapping[str, str], run_id: str, result_id: str) -> None:
    """tests/apps/pipeline.py in env-exporter mode: the SDK configured by env vars only."""
    done = subprocess.run(
        [sys.executable, str(PIPELINE), "env-exporter", run_id, result_id],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def app_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
    env.update(
        OTEL_SERVICE_NAME=f"bridge-test-{uuid.uuid4().hex[:6]}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        HACKAGENT_OUTBOX_PATH=str(tmp_path / f"app-outbox-{uuid.uuid4().hex[:6]}.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    env.update(variables)
    return env


def wait_records(api: FakeHackAgentAPI, count: int, timeout: float = 30.0) -> None:
    assert api.wait_for(lambda: len(successful(api)) >= count, timeout=timeout), (
        f"{len(successful(api))} of {count} records arrived"
    )


def successful(api: FakeHackAgentAPI) -> list[Any]:
    return [c for c in api.calls if c.status is not None and c.status < 300]


# -- parity: (Collector ->) bridge == the in-process exporter ---------------------------


@pytest.mark.parametrize("route", ["collector", "sdk-direct"])
def test_through_the_bridge_the_api_gets_the_records_the_in_process_exporter_sends(
    start_collector: CollectorFactory, start_bridge: Any, tmp_path: Path, route: str
) -> None:
    """The same pipeline, once with OTEL_TRACES_EXPORTER=otlp (to the Collector, which
    exports to the bridge, or straight to the bridge) and once with the in-process
    exporter (OTEL_TRACES_EXPORTER=hackagent): the two APIs get the same calls."""
    run_id, result_id = new_ids()
    with (
        FakeHackAgentAPI(api_key="bridge-key") as via_bridge,
        FakeHackAgentAPI(api_key="app-key") as in_process,
    ):
        bridge = start_bridge(via_bridge)
        if route == "collector":
            collector = start_collector(exporters=("otlp_http/bridge",), bridge_endpoint=bridge.url)
            endpoint = collector.otlp_http_url
        else:
            endpoint = bridge.url

        run_app(
            app_env(
                tmp_path,
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            ),
            run_id,
            result_id,
        )
        run_app(
            app_env(
                tmp_path,
                OTEL_TRACES_EXPORTER="hackagent",
                HACKAGENT_BASE_URL=in_process.base_url,
                HACKAGENT_API_KEY=in_process.api_key,
            ),
            run_id,
            result_id,
        )
        wait_records(in_process, SCENARIO_RECORDS)
        wait_records(via_bridge, SCENARIO_RECORDS)
        time.sleep(0.5)  # nothing more, no duplicates, may arrive

        for prefix in (f"/result/{result_id}", f"/run/{run_id}"):
            assert api_calls(via_bridge, prefix) == api_calls(in_process, prefix)
        assert api_calls(via_bridge, f"/result/{result_id}") == expected_result_calls(result_id)
        assert api_calls(via_bridge, f"/run/{run_id}") == expected_run_calls(run_id)
        assert len(successful(via_bridge)) == SCENARIO_RECORDS
        assert {c.headers["authorization"] for c in via_bridge.calls} == {"Bearer bridge-key"}


# -- the SDK's own OTLP/HTTP exporter, straight to the bridge -----------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_sdks_otlp_http_exporter_posts_straight_to_the_bridge_with_a_token(
    start_bridge: Any, fake_api: FakeHackAgentAPI, tmp_path: Path, compression: str
) -> None:
    bridge = start_bridge(fake_api, extra_env={"HACKAGENT_BRIDGE_TOKEN": "bridge-token"})
    run_id, result_id = new_ids()

    run_app(
        app_env(
            tmp_path,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=bridge.url,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_COMPRESSION=compression,
            OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20bridge-token",
        ),
        run_id,
        result_id,
    )

    wait_records(fake_api, SCENARIO_RECORDS)
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)
    metrics = httpx.get(f"{bridge.url}/metrics").text
    assert 'hackagent_bridge_requests_total{code="401"}' not in metrics


def test_without_the_token_the_sdks_spans_are_refused_401(
    start_bridge: Any, fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    bridge = start_bridge(fake_api, extra_env={"HACKAGENT_BRIDGE_TOKEN": "bridge-token"})

    run_app(
        app_env(
            tmp_path,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=bridge.url,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        ),
        *new_ids(),
    )

    metrics = httpx.get(f"{bridge.url}/metrics").text
    assert 'hackagent_bridge_requests_total{code="401"}' in metrics
    assert fake_api.calls == []


# -- crash and shutdown -----------------------------------------------------------------


def test_a_bridge_sigkilled_after_answering_200_delivers_those_records_when_restarted(
    start_bridge: Any, fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.stop()  # the API is down: the records can only be in the outbox
    outbox = tmp_path / "killed.sqlite3"
    bridge = start_bridge(fake_api, outbox)
    ids = [new_ids() for _ in range(3)]
    for run_id, result_id in ids:
        body = gzip.compress(otlp_protobuf(scenario_spans(run_id, result_id)))
        response = httpx.post(
            bridge.traces_url,
            content=body,
            headers={**PROTOBUF, "Content-Encoding": "gzip"},
            timeout=10,
        )
        assert response.status_code == 200

    bridge.kill()
    with Outbox(outbox) as left_behind:
        assert left_behind.counts().pending == 3 * SCENARIO_RECORDS
    fake_api.start()
    start_bridge(fake_api, outbox)  # no new spans: it drains what the killed one accepted

    wait_records(fake_api, 3 * SCENARIO_RECORDS)
    for run_id, result_id in ids:
        assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
        assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)
    assert fake_api.duplicate_traces() == []


def test_sigterm_stops_gracefully_with_exit_code_0_and_loses_nothing(
    start_bridge: Any, fake_api: FakeHackAgentAPI, tmp_path: Path
) -> None:
    fake_api.set_latency(20)  # the drain is still busy when SIGTERM comes
    outbox = tmp_path / "graceful.sqlite3"
    bridge = start_bridge(fake_api, outbox)
    ids = [new_ids() for _ in range(20)]
    body = otlp_protobuf(
        [s for run_id, result_id in ids for s in scenario_spans(run_id, result_id)]
    )
    assert httpx.post(bridge.traces_url, content=body, headers=PROTOBUF).status_code == 200

    code, took = bridge.terminate()

    assert code == 0
    assert took < 15, f"SIGTERM took {took:.1f} s"
    with pytest.raises(httpx.ConnectError):
        httpx.post(bridge.traces_url, content=body, headers=PROTOBUF)
    delivered = len(successful(fake_api))
    with Outbox(outbox) as box:
        assert delivered + box.counts().pending == 20 * SCENARIO_RECORDS
    assert "Finished server process" in bridge.process.log_text()
    fake_api.set_latency(0)
    start_bridge(fake_api, outbox)
    wait_records(fake_api, 20 * SCENARIO_RECORDS)
    for _, result_id in ids:
        assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)


def test_while_the_bridge_answers_429_the_collector_keeps_the_spans_and_retries(
    start_collector: CollectorFactory,
    start_bridge: Any,
    fake_api: FakeHackAgentAPI,
    tmp_path: Path,
) -> None:
    fake_api.stop()
    bridge = start_bridge(fake_api, extra_env={"HACKAGENT_BRIDGE_MAX_PENDING": "1"})
    collector = start_collector(exporters=("otlp_http/bridge",), bridge_endpoint=bridge.url)
    env = app_env(
        tmp_path,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    first, second = new_ids(), new_ids()
    run_app(env, *first)

    def metric(name: str) -> float:
        for line in httpx.get(f"{bridge.url}/metrics").text.splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    deadline = time.monotonic() + 30
    while metric("hackagent_bridge_records_queued_total") < SCENARIO_RECORDS:
        assert time.monotonic() < deadline, "the first run never reached the bridge"
        time.sleep(0.1)
    run_app(env, *second)  # the outbox is over its limit: 429 with Retry-After
    while metric('hackagent_bridge_requests_total{code="429"}') < 1:
        assert time.monotonic() < deadline, "the bridge never answered 429"
        time.sleep(0.1)

    fake_api.start()  # the outbox drains; the Collector's retry is then accepted
    wait_records(fake_api, 2 * SCENARIO_RECORDS, timeout=60)
    for run_id, result_id in (first, second):
        assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
        assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)
