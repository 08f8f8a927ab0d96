"""Delivery throughput and latency, against the local HackAgent API in another process.

* throughput: trace records per second from ``DeliveryService`` (4 and 8 sender
  threads, public API only) to the API, against one sequential keep-alive httpx client
  making the same POSTs with the same bytes, at 0 ms and at 20 ms of added API latency
  (the fake API's ``--latency-ms``: each call waits that long before it is answered, as
  a round trip across a network would). Each latency has its own API process, and the
  three senders take turns in rounds within it, so every ratio is measured side by side.
  Order per result is checked on the server side. The service spreads results over its
  senders by ``hash(ordering_key)``, so the busiest sender gets more than its share and
  sets the pace; the ratio that spread allows (records over the busiest sender's) is
  printed beside each measured one.
* latency: from a step's end to its summary record's arrival at the API (p50, p99),
  for a pipeline tracking steps at a steady pace under ``configure()``'s defaults.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider

import hackagent_otel as ho
from bench._fake import API_KEY, calls, fake_api_process
from bench._table import median, p99, print_table
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._records import TRACE, Record

#: Results whose traces one throughput run sends, round-robin (records of one result
#: keep their order, so they go through one sender thread; many results spread out).
RESULTS = 256
SENDERS = (4, 8)


@dataclass(frozen=True)
class Setting:
    """One API latency and how many records each sender sends per round there."""

    latency_ms: float
    records: int
    rounds: int


SETTINGS = (Setting(0.0, 2_000, 2), Setting(20.0, 256, 2))


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
    """Records per second from one keep-alive httpx client, one call after another."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    requests = [record.request() for record in records]
    with httpx.Client(base_url=base_url, headers=headers) as client:
        start = time.perf_counter()
        for request in requests:
            client.post(request.path, content=request.body).raise_for_status()
        return len(records) / (time.perf_counter() - start)


def _ours(base_url: str, records: list[Record], outbox: str, senders: int) -> float:
    """Records per second from a DeliveryService: submit them all, then force_flush."""
    service = DeliveryService(
        HackAgentClient(base_url, API_KEY), outbox_path=outbox, senders=senders
    )
    service.start()
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


def _spread_ceiling(records: list[Record], senders: int) -> float:
    """The most a service could gain over one sender, given how its senders share the
    records: all of them over the busiest sender's (results go by ``hash % senders``,
    as the service documents)."""
    loads = Counter(hash(record.ordering_key) % senders for record in records)
    return len(records) / max(loads.values())


def _in_order_per_result(base_url: str) -> bool:
    sequences: dict[str, list[int]] = defaultdict(list)
    for call in calls(base_url):
        if call["method"] == "POST":
            sequences[call["path"]].append(call["sequence"])
    return all(seq == sorted(seq) for seq in sequences.values())


def _throughput(setting: Setting, folder: Path) -> tuple[dict[str, float], bool]:
    """Median records/s per sender at one latency, the rounds side by side."""
    rates: dict[str, list[float]] = defaultdict(list)
    with fake_api_process(setting.latency_ms) as base_url:
        for n in range(setting.rounds):
            rates["sequential"].append(_sequential_httpx(base_url, _records(setting.records)))
            for senders in SENDERS:
                outbox = str(folder / f"{setting.latency_ms:g}ms-{senders}-{n}.sqlite3")
                records = _records(setting.records)
                rates[f"ceiling={senders}"].append(_spread_ceiling(records, senders))
                rate = _ours(base_url, records, outbox, senders)
                rates[f"senders={senders}"].append(rate)
        ordered = _in_order_per_result(base_url)
    return {name: median(values) for name, values in rates.items()}, ordered


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


def main(steps: int = 2_000) -> dict[str, float]:
    figures: dict[str, float] = {}
    rows: list[list[str]] = []
    ordered = True
    # Fresh outboxes, one per run: rows one left behind are not drained in the next.
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for setting in SETTINGS:
            rates, kept = _throughput(setting, folder)
            ordered = ordered and kept
            baseline = rates["sequential"]
            row = [f"{setting.latency_ms:g} ms", f"{setting.records:,}", f"{baseline:,.0f}"]
            for senders in SENDERS:
                ratio = rates[f"senders={senders}"] / baseline
                figures[f"ratio_{setting.latency_ms:g}ms_{senders}"] = ratio
                ceiling = rates[f"ceiling={senders}"]
                row += [f"{rates[f'senders={senders}']:,.0f}", f"{ratio:.2f}x ({ceiling:.2f}x)"]
            rows.append(row)
        with fake_api_process(0) as base_url:
            latencies = _latency(base_url, str(folder / "latency.sqlite3"), steps, 0.002)
    print_table(
        "Delivery: trace records/s to the local API (other process), median of the "
        f"side-by-side rounds; records over {RESULTS} results (in brackets: what their "
        "spread over the senders allows)",
        [
            "API latency",
            "records",
            "one sequential httpx client",
            "4 senders",
            "vs sequential",
            "8 senders",
            "vs sequential",
        ],
        rows,
    )
    print(f"order per result kept: {ordered}")
    print_table(
        "Latency: step end -> summary record at the API (configure() defaults)",
        ["steps", "p50 ms", "p99 ms"],
        [[str(len(latencies)), f"{median(latencies) * 1000:.1f}", f"{p99(latencies) * 1000:.1f}"]],
    )
    figures["latency_p50_s"] = median(latencies)
    return figures


if __name__ == "__main__":
    main()
