"""How many spans per second one ``hackagent-otel bridge`` process accepts.

``python -m bench.bridge_ingest``: starts the bridge (one uvicorn worker, its own
process, outbox on local disk, no HackAgent API so that only ingest is measured), and
feeds it from this process with gzip-compressed protobuf exports of 510 spans each (85
seed-scenario runs: what a Collector's ``batch`` processor sends), over keep-alive
connections, 1 and 4 at a time. Every 200 counted here means the request's records
were committed to the outbox (WAL, ``synchronous=NORMAL``: durable against a killed
process) before the answer.

``BENCH_BRIDGE_REQUESTS`` sets the requests per round (default 60).
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bridge_support import otlp_protobuf, scenario_spans  # noqa: E402

RUNS_PER_REQUEST = 85


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bodies(count: int) -> tuple[list[bytes], int]:
    """``count`` distinct gzip bodies and the spans each holds."""
    bodies: list[bytes] = []
    spans_per_body = 0
    for _ in range(count):
        spans = [
            span
            for _ in range(RUNS_PER_REQUEST)
            for span in scenario_spans(str(uuid.uuid4()), str(uuid.uuid4()))
        ]
        spans_per_body = len(spans)
        bodies.append(gzip.compress(otlp_protobuf(spans), compresslevel=5))
    return bodies, spans_per_body


def _feed(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Post every body (``concurrency`` connections); seconds taken. Every answer is 200."""
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    failures: list[str] = []

    def worker(mine: list[bytes]) -> None:
        with httpx.Client(timeout=60) as client:
            for body in mine:
                status = client.post(url, content=body, headers=headers).status_code
                if status != 200:
                    failures.append(str(status))

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"non-200 answers: {failures[:5]}")
    return took


def main() -> dict[str, float]:
    requests = int(os.environ.get("BENCH_BRIDGE_REQUESTS", "60"))
    print(f"building {requests} exports of {RUNS_PER_REQUEST} runs each ...", flush=True)
    bodies, spans_per_body = _bodies(requests)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
        bridge = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hackagent_otel",
                "bridge",
                "--port",
                str(port),
                "--outbox",
                str(Path(tmp) / "bridge.sqlite3"),
                "--max-pending",
                "100000000",
                "--log-level",
                "warning",
            ],
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or bridge.poll() is not None:
                    raise RuntimeError("the bridge did not become ready")
                time.sleep(0.05)
            _feed(f"{base}/v1/traces", bodies[:3], 1)  # warm-up
            results: dict[str, float] = {}
            for concurrency in (1, 4):
                took = _feed(f"{base}/v1/traces", bodies, concurrency)
                rate = requests * spans_per_body / took
                results[f"spans_per_s_{concurrency}"] = rate
                print(
                    f"{concurrency} connection(s): {requests} exports x {spans_per_body} spans "
                    f"in {took:.2f} s = {rate:,.0f} spans/s, "
                    f"{requests / took * 1000 / 1000:.1f} exports/s",
                    flush=True,
                )
            metrics = httpx.get(f"{base}/metrics").text
            queued = next(
                line for line in metrics.splitlines() if line.startswith("hackagent_bridge_outbox")
            )
            print(f"outbox after the run: {queued}")
            return results
        finally:
            bridge.terminate()
            bridge.wait(30)


if __name__ == "__main__":
    main()
