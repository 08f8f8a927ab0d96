"""Delivery throughput and latency, against the local HackAgent API in another process.

* throughput: trace records per second from ``DeliveryService`` (default settings) to
  the API, against one sequential keep-alive httpx client making the same POSTs; order
  per result is checked on the server side;
* latency: from a step's end to its summary record's arrival at the API (p50, p99),
  for a pipeline tracking steps at a steady pace under ``configure()``'s defaults.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider

import hackagent_otel as ho
from bench._fake import API_KEY, calls, fake_api_process
from bench._table import median, p99, print_table
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._records import TRACE, Record

RESULTS = 16


def _records(n: int) -> list[Record]:
    results = [str(uuid.uuid4()) for _ in range(RESULTS)]
    return [
        Record(
            kind=TRACE,
            method="POST",
            path=f"/result/{results[i % RESULTS]}/trace",
            body={
                "sequence": i // RESULTS + 1,
                "step_type": "OTHER",
                "content": {"step_name": f"step {i}", "step_type_identifier": "STEP"},
            },
            ordering_key=results[i % RESULTS],
        )
        for i in range(n)
    ]


def _sequential_httpx(base_url: str, records: list[Record]) -> float:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers) as client:
        start = time.perf_counter()
        for record in records:
            client.post(record.path, json=record.body).raise_for_status()
        return len(records) / (time.perf_counter() - start)


def _ours(base_url: str, records: list[Record], outbox: str) -> float:
    service = DeliveryService(HackAgentClient(base_url, API_KEY), outbox_path=outbox)
    start = time.perf_counter()
    for record in records:
        service.submit(record)
    if not service.force_flush(120):
        raise RuntimeError("delivery did not finish")
    rate = len(records) / (time.perf_counter() - start)
    stats = service.stats()
    service.shutdown(10)
    if stats.sent != len(records):
        raise RuntimeError(f"sent {stats.sent} of {len(records)}: {stats}")
    return rate


def _in_order_per_result(base_url: str) -> bool:
    sequences: dict[str, list[int]] = defaultdict(list)
    for call in calls(base_url):
        if call["method"] == "POST":
            sequences[call["path"]].append(call["sequence"])
    return all(seq == sorted(seq) for seq in sequences.values())


def _latency(base_url: str, outbox: str, steps: int, pace_s: float) -> list[float]:
    """Seconds from each step's end to its summary record's arrival."""
    ho.configure(
        tracer_provider=TracerProvider(),
        hackagent_base_url=base_url,
        hackagent_api_key=API_KEY,
        outbox_path=outbox,
        handle_sigterm=False,
    )
    result_id = str(uuid.uuid4())
    tracker = ho.StepTracker(
        ho.TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=result_id)
    )
    ended: dict[int, float] = {}
    for i in range(steps):
        with tracker.track_step(f"step {i}", "STEP"):
            pass
        ended[tracker.context.sequence_counter] = time.time()
        time.sleep(pace_s)
    ho.force_flush()
    ho.shutdown()
    arrived = {
        c["sequence"]: c["received_at"]
        for c in calls(base_url)
        if c["path"] == f"/result/{result_id}/trace"
    }
    return [arrived[seq] - t for seq, t in ended.items() if seq in arrived]


def main(records: int = 20_000, steps: int = 2_000) -> dict[str, float]:
    batch = _records(records)
    with fake_api_process(0) as base_url:
        baseline = _sequential_httpx(base_url, batch)
    # Fresh outboxes, one per run: rows one left behind are not drained in the next.
    with tempfile.TemporaryDirectory() as folder:
        with fake_api_process(0) as base_url:
            ours = _ours(base_url, _records(records), str(Path(folder) / "throughput.sqlite3"))
            ordered = _in_order_per_result(base_url)
        with fake_api_process(0) as base_url:
            latencies = _latency(base_url, str(Path(folder) / "latency.sqlite3"), steps, 0.002)
    print_table(
        "Delivery: trace records per second to the local API (loopback, other process)",
        ["sender", "records/s", "vs sequential httpx"],
        [
            ["one sequential keep-alive httpx client", f"{baseline:,.0f}", "1.00x"],
            ["DeliveryService (defaults)", f"{ours:,.0f}", f"{ours / baseline:.2f}x"],
        ],
    )
    print(f"order per result kept: {ordered}")
    print_table(
        "Latency: step end -> summary record at the API (configure() defaults)",
        ["steps", "p50 ms", "p99 ms"],
        [[str(len(latencies)), f"{median(latencies) * 1000:.1f}", f"{p99(latencies) * 1000:.1f}"]],
    )
    return {"throughput_ratio": ours / baseline, "latency_p50_s": median(latencies)}


if __name__ == "__main__":
    main()
