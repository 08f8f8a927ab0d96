"""One bridge, or two behind the Collector's ``load_balancing`` exporter: spans per second
end to end.

What counts: spans posted to the real Collector (``.bin/otelcol`` with
collector/otelcol-loadbalancing.yaml, no Jaeger) over OTLP/HTTP, until every record they
map to is committed to a bridge's outbox (the bridges' ``records_queued_total``). The
Collector batches them (``batch``), routes each trace to its bridge by trace id and sends
each bridge one batch at a time over OTLP/gRPC (``num_consumers: 1``, which keeps a
result's records in order); the bridges decode, map and commit. No HackAgent API, so
only ingest is measured. The same config runs with one bridge in its static list, then
with two; each setting gets its own fresh processes.

The feeder posts gzip-compressed protobuf exports of 510 spans each (85 seed-scenario
runs, so 85 traces), over :data:`FEEDERS` keep-alive connections; a 429/503 from the
Collector (its memory limiter) is waited out and posted again. Besides the rate, each
process's CPU seconds over the last round are printed (the feeder is this process),
which tells where the time went on this machine: with 2 cores, one bridge already keeps
one of them busy, and the Collector and the feeder need the other.

``python -m bench.bridge_scale``; ``BENCH_SCALE_REQUESTS`` sets the exports per round
(default 60), ``BENCH_SCALE_ROUNDS`` the rounds per setting (default 3). Needs
``make otel-bins``; without ``.bin/otelcol`` it says so and measures nothing.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench.bridge_ingest import _bodies  # noqa: E402
from integration._otel_processes import (  # noqa: E402
    OTELCOL_BIN,
    Bridge,
    Collector,
    start_on_free_ports,
)

#: Connections posting to the Collector at once.
FEEDERS = 4
#: Bridge settings for the bench: records pile up (no API), and only warnings are logged.
BRIDGE_ENV = {"HACKAGENT_BRIDGE_MAX_PENDING": "100000000", "HACKAGENT_BRIDGE_LOG_LEVEL": "warning"}
#: Seconds a round may take before the bench gives up on it.
ROUND_TIMEOUT = 60.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _feed(url: str, bodies: list[bytes]) -> None:
    """Post every body over FEEDERS connections; raises unless each is accepted."""
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    failures: list[str] = []

    def worker(mine: list[bytes]) -> None:
        with httpx.Client(timeout=30) as client:
            for body in mine:
                for _ in range(200):
                    answer = client.post(url, content=body, headers=headers)
                    if answer.status_code not in (429, 503):
                        break
                    time.sleep(0.05)  # the memory limiter refuses for now
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")

    threads = [threading.Thread(target=worker, args=(bodies[i::FEEDERS],)) for i in range(FEEDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"exports not accepted by the Collector: {failures[:3]}")


def _queued(bridges: list[Bridge]) -> float:
    return sum(b.metrics()["hackagent_bridge_records_queued_total"] for b in bridges)


def _measure(
    count: int, bodies: list[bytes], spans_per_body: int, records_per_body: int, rounds: int
) -> tuple[list[float], list[float], dict[str, float]]:
    """Rounds with ``count`` bridges: spans/s each, the records each bridge took in the
    last round, and CPU seconds per process over the last round."""
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        bridges: list[Bridge] = []
        collector: Collector | None = None
        try:
            for number in range(1, count + 1):

                def make(number: int = number) -> Bridge:
                    return Bridge(
                        log_dir,
                        log_dir / f"bridge-{number}.sqlite3",
                        name=f"bridge-{number}",
                        extra_env=BRIDGE_ENV,
                    )

                bridges.append(start_on_free_ports(make))
            collector = start_on_free_ports(
                lambda: Collector(
                    log_dir,
                    bridge_grpc_endpoints=[b.grpc_endpoint for b in bridges],
                    exporters=("load_balancing/bridges",),
                    extra_env={"OTELCOL_LOG_LEVEL": "warn"},
                )
            )
            url = f"{collector.otlp_http_url}/v1/traces"
            _feed(url, bodies[:2])  # warm-up: connections, first batches
            target = 2 * records_per_body
            _wait_queued(bridges, target)
            rates: list[float] = []
            per_bridge: list[float] = []
            cpu: dict[str, float] = {}
            for _ in range(rounds):
                before = [b.metrics()["hackagent_bridge_records_queued_total"] for b in bridges]
                procs = {
                    "otelcol": collector.process,
                    **{b.process.name: b.process for b in bridges},
                }
                cpu_before = {
                    name: _cpu_seconds(p.process.pid)
                    for name, p in procs.items()
                    if p.process is not None
                }
                feeder_before = time.process_time()  # this process: posting and polling
                started = time.perf_counter()
                _feed(url, bodies)
                target += len(bodies) * records_per_body
                _wait_queued(bridges, target)
                took = time.perf_counter() - started
                rates.append(len(bodies) * spans_per_body / took)
                after = [b.metrics()["hackagent_bridge_records_queued_total"] for b in bridges]
                per_bridge = [a - b for a, b in zip(after, before, strict=True)]
                cpu = {
                    name: _cpu_seconds(p.process.pid) - cpu_before[name]
                    for name, p in procs.items()
                    if p.process is not None
                }
                cpu["feeder"] = time.process_time() - feeder_before
                cpu["wall"] = took
            return rates, per_bridge, cpu
        finally:
            if collector is not None:
                collector.stop()
            for bridge in bridges:
                bridge.stop()


def _wait_queued(bridges: list[Bridge], target: float) -> None:
    deadline = time.monotonic() + ROUND_TIMEOUT
    while (queued := _queued(bridges)) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {queued:.0f} of {target:.0f} records reached the bridges")
        time.sleep(0.02)
    if queued > target:
        raise RuntimeError(f"{queued:.0f} records reached the bridges, not {target:.0f}")


def main() -> dict[str, float] | None:
    if not os.access(OTELCOL_BIN, os.X_OK):
        print("bridge scale-out: .bin/otelcol is missing (make otel-bins); not measured")
        return None
    requests = int(os.environ.get("BENCH_SCALE_REQUESTS", "60"))
    rounds = int(os.environ.get("BENCH_SCALE_ROUNDS", "3"))
    print(f"building {requests} exports for the scale-out bench ...", flush=True)
    bodies, spans_per_body, records_per_body = _bodies(requests)
    logging.getLogger("hackagent_otel").setLevel(logging.WARNING)
    print(
        f"{requests} exports x {spans_per_body} spans ({records_per_body} records) per round, "
        f"{rounds} rounds, through the Collector to 1 and to 2 bridges; {os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[str, float] = {}
    for count in (1, 2):
        rates, per_bridge, cpu = _measure(count, bodies, spans_per_body, records_per_body, rounds)
        best, typical = max(rates), statistics.median(rates)
        results[f"spans_per_s_{count}"] = best
        results[f"spans_per_s_{count}_median"] = typical
        shares = ", ".join(f"{n:.0f}" for n in per_bridge)
        wall = cpu.pop("wall")
        busy = ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
        print(
            f"{count} bridge(s): best {best:,.0f} spans/s, median {typical:,.0f}; rounds: "
            + ", ".join(f"{rate:,.0f}" for rate in rates)
            + f"; records per bridge (last round): {shares}; CPU s in {wall:.1f} s: {busy}",
            flush=True,
        )
    results["two_vs_one"] = results["spans_per_s_2"] / results["spans_per_s_1"]
    print(f"two bridges vs one: {results['two_vs_one']:.2f}x")
    return results


if __name__ == "__main__":
    main()
