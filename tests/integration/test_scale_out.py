"""Two bridges behind the real Collector's ``load_balancing`` exporter (scale-out).

``.bin/otelcol`` runs collector/otelcol-loadbalancing.yaml with its static resolver
naming two ``hackagent-otel bridge`` processes (OTLP/gRPC, each with its own outbox),
both delivering to one fake HackAgent API. The pipeline is the seed scenario, run by
the tracker in this process for many runs (a run is one trace), with the SDK's OTLP/HTTP
exporter pointed at the Collector.

* Every record reaches the API exactly once, in order per result, and each run's
  records all went through one bridge (read from the bridges' outboxes while the API
  is down), with both bridges used.
* One bridge stops (SIGTERM) mid-run and starts again on the same ports and outbox: the
  Collector keeps that bridge's batches in its queue and retries them, one at a time,
  so nothing is lost, nothing is doubled, and each result's records keep their order.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from apps.scenario import (
    SCENARIO_RECORDS,
    expected_result_calls,
    expected_run_calls,
    run_seed_scenario,
)
from hackagent_otel import StepTracker, TrackingContext, _tracer
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel.testing import FakeHackAgentAPI
from otel_fixtures import api_calls

from ._otel_processes import (
    COLLECTOR_DIR,
    LOADBALANCING_CONFIG,
    OTELCOL_BIN,
    Bridge,
    Collector,
    start_on_free_ports,
    wait_until,
)
from .conftest import require_binary

pytestmark = pytest.mark.integration

#: Faster retries towards a bridge than the config's defaults (1 s, then up to 10 s).
FAST_RETRY = {"OTELCOL_BRIDGE_RETRY_INITIAL": "200ms", "OTELCOL_BRIDGE_RETRY_MAX": "1s"}


@pytest.fixture
def bridges(
    otel_log_dir: Path, tmp_path: Path, fake_api: FakeHackAgentAPI
) -> Iterator[list[Bridge]]:
    """Two bridges delivering to ``fake_api``, each with its own outbox."""
    started: list[Bridge] = []
    for number in (1, 2):

        def make(number: int = number) -> Bridge:
            return Bridge(
                otel_log_dir,
                tmp_path / f"bridge-{number}.sqlite3",
                api_url=fake_api.base_url,
                api_key=fake_api.api_key,
                name=f"bridge-{number}",
            )

        started.append(start_on_free_ports(make))
    yield started
    for bridge in started:
        bridge.stop()


@pytest.fixture
def collector(otel_log_dir: Path, bridges: list[Bridge]) -> Iterator[Collector]:
    """The Collector routing by trace id to ``bridges`` (no Jaeger: not under test here)."""
    require_binary(OTELCOL_BIN)
    proc = start_on_free_ports(
        lambda: Collector(
            otel_log_dir,
            bridge_grpc_endpoints=[bridge.grpc_endpoint for bridge in bridges],
            exporters=("load_balancing/bridges",),
            extra_env=FAST_RETRY,
        )
    )
    yield proc
    proc.stop()


class Pipeline:
    """The tracker in this process, its spans exported over OTLP/HTTP to ``endpoint``."""

    def __init__(self, endpoint: str) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": f"scale-out-{uuid.uuid4().hex[:6]}"})
        )
        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=30)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
        self.runs: list[tuple[str, str]] = []

    def __enter__(self) -> Pipeline:
        _tracer.source.use_provider(self.provider)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.provider.shutdown()
        _tracer.source.reset()

    def run(self, count: int, pause: float = 0.0) -> None:
        """``count`` runs of the seed scenario, one after the other, ``pause`` s apart."""
        for _ in range(count):
            run_id, result_id = str(uuid.uuid4()), str(uuid.uuid4())
            self.runs.append((run_id, result_id))
            tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
            run_seed_scenario(tracker)
            time.sleep(pause)

    def flush(self) -> None:
        assert self.provider.force_flush(30_000), "the SDK could not export every span"


def delivered(api: FakeHackAgentAPI) -> int:
    return sum(1 for c in api.calls if c.status is not None and c.status < 300)


def assert_every_record_once_in_order(api: FakeHackAgentAPI, runs: list[tuple[str, str]]) -> None:
    expected = len(runs) * SCENARIO_RECORDS
    wait_until(
        lambda: True if delivered(api) >= expected else None,
        timeout=60,
        what=f"{expected} records at the API (have {delivered(api)})",
    )
    time.sleep(0.5)  # anything doubled would arrive now
    assert delivered(api) == expected
    assert api.duplicate_traces() == []
    for run_id, result_id in runs:
        assert api_calls(api, f"/result/{result_id}") == expected_result_calls(result_id)
        assert api_calls(api, f"/run/{run_id}") == expected_run_calls(run_id)


def test_each_run_goes_through_one_bridge_and_every_record_arrives_once_in_order(
    fake_api: FakeHackAgentAPI, bridges: list[Bridge], collector: Collector
) -> None:
    fake_api.stop()  # records stay in the outboxes, which then tell which bridge took what
    with Pipeline(collector.otlp_http_url) as pipeline:
        pipeline.run(16)
        pipeline.flush()
    expected = 16 * SCENARIO_RECORDS

    def pending() -> dict[Path, list[str]]:
        paths: dict[Path, list[str]] = {}
        for bridge in bridges:
            with Outbox(bridge.outbox) as box:
                paths[bridge.outbox] = [row.call.path for row in box.list_pending()]
        return paths

    wait_until(
        lambda: True if sum(map(len, pending().values())) >= expected else None,
        timeout=30,
        what=f"{expected} records in the two outboxes",
    )

    where: dict[str, set[Path]] = defaultdict(set)  # run or result id -> outboxes
    for outbox, paths in pending().items():
        for path in paths:
            where[path.split("/")[2]].add(outbox)
    for run_id, result_id in pipeline.runs:
        assert len(where[run_id] | where[result_id]) == 1, (run_id, where[run_id], where[result_id])
    used = {outbox for outboxes in where.values() for outbox in outboxes}
    assert used == {bridge.outbox for bridge in bridges}, "one bridge got every run"
    for bridge in bridges:
        queued = bridge.metrics()["hackagent_bridge_records_queued_total"]
        assert queued == len(pending()[bridge.outbox])
        assert bridge.metrics().get('hackagent_bridge_grpc_requests_total{code="OK"}', 0) > 0

    fake_api.start()
    assert_every_record_once_in_order(fake_api, pipeline.runs)


def test_a_bridge_restarted_mid_run_loses_nothing_and_keeps_each_results_order(
    fake_api: FakeHackAgentAPI, bridges: list[Bridge], collector: Collector
) -> None:
    restarted = bridges[0]
    downtime: list[float] = []

    def restart() -> None:
        time.sleep(0.8)  # runs have gone through both bridges by now
        stopped_at = time.monotonic()
        assert restarted.stop() == 0  # SIGTERM: a graceful stop
        time.sleep(1.5)  # runs go on meanwhile; this bridge's batches wait in the Collector
        restarted.start()  # the same ports and outbox
        downtime.append(time.monotonic() - stopped_at)

    with Pipeline(collector.otlp_http_url) as pipeline:
        runner = threading.Thread(target=pipeline.run, args=(40, 0.05))
        restarter = threading.Thread(target=restart)
        runner.start()
        restarter.start()
        runner.join(120)
        restarter.join(60)
        pipeline.flush()

    assert downtime, "the bridge was not restarted"
    assert not runner.is_alive()
    assert_every_record_once_in_order(fake_api, pipeline.runs)
    # The Collector did meet the stopped bridge and retried its batches (the exporter it
    # makes per bridge logs each retry; its metrics are not exported), so the restart
    # was mid-run.
    retries = [
        line
        for line in collector.process.log_text().splitlines()
        if "Will retry the request" in line and restarted.grpc_endpoint in line
    ]
    assert retries, "the Collector never had to retry the restarted bridge"


def validate(config_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``.bin/otelcol validate`` with ``env`` over this environment (its OTELCOL_* cleared)."""
    binary = require_binary(OTELCOL_BIN)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTELCOL_", "HACKAGENT_"))}
    return subprocess.run(
        [str(binary), "validate", *config_args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "env",
    [
        {},  # the defaults: Jaeger and one bridge on 127.0.0.1:4329
        {"HACKAGENT_BRIDGE_GRPC_ENDPOINTS": "[127.0.0.1:4329, 127.0.0.1:4339, 127.0.0.1:4349]"},
        {"OTELCOL_TRACES_EXPORTERS": "[load_balancing/bridges]"},
        {"OTELCOL_TRACES_EXPORTERS": "[otlp_grpc/jaeger, load_balancing/bridges, debug]"},
    ],
)
def test_documented_choices_of_the_scale_out_config_are_valid(env: dict[str, str]) -> None:
    result = validate([f"--config={LOADBALANCING_CONFIG}"], env)
    assert result.returncode == 0, result.stderr


def test_the_documented_dns_resolver_for_kubernetes_is_a_valid_config(tmp_path: Path) -> None:
    """collector/README.md's headless-Service example, put in place of the static
    resolver, is accepted by the built Collector (validation resolves no name)."""
    readme = (COLLECTOR_DIR / "README.md").read_text()
    found = re.search(r"<!-- dns-resolver-example[^>]*-->\n```yaml\n(.*?)```", readme, re.DOTALL)
    assert found, "collector/README.md lost its DNS resolver example"
    documented = yaml.safe_load(found.group(1))
    assert set(documented["resolver"]) == {"dns"}
    config = yaml.safe_load(LOADBALANCING_CONFIG.read_text())
    config["exporters"]["load_balancing/bridges"]["resolver"] = documented["resolver"]
    variant = tmp_path / "otelcol-loadbalancing-dns.yaml"
    variant.write_text(yaml.safe_dump(config))

    result = validate([f"--config={variant}"], {})

    assert result.returncode == 0, result.stderr
