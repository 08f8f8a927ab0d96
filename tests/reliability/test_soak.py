"""Outage soak: 100,000 steps on 4 threads with the API down for most of the run.

The pipeline runs in its own process (``apps/soak_app.py``, configured with
``configure()`` and its defaults: queue 2,048 records, retry budget 5 s, probes of a down
API backing off up to 30 s) so that its memory is measured alone. The fake API is down
from the start until 90% of the steps are done, then back. Every record must reach the
API, each result's traces in ascending sequence, none twice, with nothing dropped; the
pipeline's RSS may grow by at most ``RSS_BOUND`` over the run (the mapping backlog is
bounded near 25 MB and the delivery queue at 2,048 records; the rest waits on disk).

Marked ``soak``: ``make soak`` runs it alone; ``make test`` runs it with everything else.
The figures are printed (``pytest -s``) and quoted in RELIABILITY.md.

Order per result holds under load too: when the mapping thread falls more than
``max_backlog`` spans behind, the caller maps the oldest queued spans itself, so no
record overtakes an older one; the fast test at the end of this module forces that case.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from hackagent_otel import StepTracker, TrackingContext, _tracer
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._outbox_files import outbox_path_for_target
from hackagent_otel._processor import HackAgentSpanProcessor
from hackagent_otel.testing import FakeHackAgentAPI

from .conftest import FAST_POLICY, RELIABILITY_APPS, Harness, OneService, subprocess_env

THREADS = 4
STEPS_PER_THREAD = 25_000
STEPS = THREADS * STEPS_PER_THREAD
RECORDS = 2 * STEPS  # a start and a summary trace per step
#: The API comes back once this share of the steps is done.
OUTAGE_SHARE = 0.9
#: How much the pipeline process's RSS may grow over the run, from after warm-up to peak.
RSS_BOUND = 100 * 2**20
#: Seconds the whole soak may take before it counts as stuck.
DEADLINE = 600.0


def _reader(stream: IO[str], lines: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        if line.startswith("{"):
            lines.put(json.loads(line))


def _next(lines: queue.Queue[dict[str, Any]], deadline: float) -> dict[str, Any]:
    return lines.get(timeout=max(0.1, deadline - time.monotonic()))


@dataclass(frozen=True)
class Soak:
    api: FakeHackAgentAPI
    outbox_path: Path
    results: list[str]
    done: dict[str, Any]
    final_line: dict[str, Any]
    started: float
    back: float
    delivered_at: float


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    """Run the soak once for the module's tests."""
    with FakeHackAgentAPI(api_key="soak-key") as api:
        yield _run_soak(api, tmp_path_factory.mktemp("soak") / "outbox.sqlite3")


def _run_soak(api: FakeHackAgentAPI, outbox_path: Path) -> Soak:
    api.stop()
    env = subprocess_env(
        APP_API_URL=api.base_url,
        APP_API_KEY=api.api_key,
        HACKAGENT_OUTBOX_PATH=str(outbox_path),
    )
    deadline = time.monotonic() + DEADLINE
    proc = subprocess.Popen(
        [
            sys.executable,
            str(RELIABILITY_APPS / "soak_app.py"),
            str(THREADS),
            str(STEPS_PER_THREAD),
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stderr is not None
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True).start()
    try:
        started = time.monotonic()
        header = _next(lines, deadline)
        results: list[str] = header["results"]
        # Down until OUTAGE_SHARE of the steps are done.
        while True:
            line = _next(lines, deadline)
            if line.get("done") or line.get("steps", 0) >= OUTAGE_SHARE * STEPS:
                break
        api.start()
        back = time.monotonic()
        done = line if line.get("done") else None
        while done is None:
            line = _next(lines, deadline)
            done = line if line.get("done") else None
        # Wait until the API has every record (the app reports its counters).
        delivered_at = None
        while delivered_at is None:
            line = _next(lines, deadline)
            (delivery,) = line["stats"]["delivery"]
            if delivery["sent"] >= RECORDS and not delivery["outbox_pending"]:
                delivered_at = time.monotonic()
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        final_line = _next(lines, deadline)
        assert proc.wait(60) == 0, "".join(stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Soak(api, outbox_path, results, done, final_line, started, back, delivered_at)


@pytest.mark.soak
@pytest.mark.timeout(DEADLINE + 60)
def test_an_outage_for_most_of_100k_steps_on_threads_loses_nothing_and_bounds_memory(
    soak: Soak,
) -> None:
    api, final_line, done = soak.api, soak.final_line, soak.done
    final = final_line["final"]
    (delivery,) = final["delivery"]
    assert final["mapping"]["records"] == RECORDS
    assert final["mapping"]["unmappable"] == 0
    assert delivery["dropped"] == 0
    assert delivery["rejected"] == 0
    assert delivery["sent"] == RECORDS

    traces = api.traces
    assert len(traces) == RECORDS
    assert api.duplicate_traces() == []
    by_result: dict[str, list[int]] = defaultdict(list)
    for trace in traces:
        by_result[trace["result"]].append(trace["sequence"])
    assert sorted(by_result) == sorted(soak.results)
    per_result = 2 * STEPS // len(soak.results)
    for seqs in by_result.values():
        assert sorted(seqs) == list(range(1, per_result + 1))
    with Outbox(outbox_path_for_target(soak.outbox_path, api.base_url)) as outbox:
        counts = outbox.counts()
    assert counts.pending == 0
    assert counts.rejected == 0

    growth = final_line["rss_peak"] - done["rss_baseline"]
    figures = {
        "steps": STEPS,
        "threads": THREADS,
        "records": RECORDS,
        "steps_seconds": round(done["seconds"], 1),
        "outage_seconds": round(soak.back - soak.started, 1),
        "outage_share_of_steps": OUTAGE_SHARE,
        "delivery_after_recovery_seconds": round(soak.delivered_at - soak.back, 1),
        "records_in_outbox_total": counts.delivered,
        "rss_baseline_mb": round(done["rss_baseline"] / 2**20, 1),
        "rss_peak_mb": round(final_line["rss_peak"] / 2**20, 1),
        "rss_growth_mb": round(growth / 2**20, 1),
        "total_seconds": round(soak.delivered_at - soak.started, 1),
    }
    print("\nsoak figures:", json.dumps(figures))
    assert growth < RSS_BOUND, figures


def _out_of_order(api: FakeHackAgentAPI) -> dict[str, int]:
    """Per result, how many traces arrived after one with a higher sequence."""
    highest: dict[str, int] = {}
    late: dict[str, int] = defaultdict(int)
    for trace in api.traces:
        result, seq = trace["result"], trace["sequence"]
        if seq < highest.get(result, 0):
            late[result] += 1
        highest[result] = max(highest.get(result, 0), seq)
    return dict(late)


@pytest.mark.soak
def test_the_soak_delivers_each_results_traces_in_ascending_sequence(soak: Soak) -> None:
    assert _out_of_order(soak.api) == {}


def test_records_keep_their_order_per_result_when_the_mapping_thread_falls_behind(
    harness: Harness,
) -> None:
    api = harness.api
    api.stop()
    # A tiny delivery queue makes every submit spill to SQLite on the mapping thread,
    # which then falls behind a pipeline of empty steps; a small backlog bound is hit.
    client = HackAgentClient(api.base_url, api.api_key, timeout=0.5)
    assert harness.outbox is not None
    service = DeliveryService(client, harness.outbox, queue_size=4, policy=FAST_POLICY)
    processor = HackAgentSpanProcessor(OneService(service), max_backlog=16)
    # A provider of its own: the harness's provider already delivers to the same API.
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    _tracer.source.use_provider(provider)
    result_id = str(uuid.uuid4())
    tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=result_id))
    for _ in range(300):
        with tracker.track_step("Quick", "STEP_QUICK"):
            pass
    assert processor.force_flush(30_000)
    api.start()
    assert api.wait_for(lambda: len(api.traces_for(result_id)) == 600, timeout=30)
    processor.shutdown()
    assert processor.stats()["mapped_inline"] > 0
    assert _out_of_order(api) == {}
