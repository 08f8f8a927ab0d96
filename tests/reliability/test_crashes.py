"""SIGKILL at random moments, again and again: nothing acknowledged is lost.

* Producer: ``apps/crash_producer.py`` runs steps and prints how many are acknowledged
  (``force_flush()`` returned True: delivered or committed to the outbox). It is killed
  at a random moment (seeded) while the API is up, down, slow, or goes down mid-run,
  then started again on the same outbox, which it drains while producing. After the
  last kill ``hackagent-otel push`` delivers what is left. Three lanes (each with its
  own fake API and outbox) run side by side; 24 kills in all.
* Bridge: ``hackagent-otel bridge`` is killed at random moments while a feeder posts
  OTLP exports of the seed scenario and, like the Collector, retries an export until it
  is answered 200. 24 kills; after the last restart every export answered 200 has all
  its records at the API.

Delivery is at least once: a record can arrive twice (killed after the API took it but
before the outbox noted it). Duplicates are counted and printed, losses must be 0.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bridge_support import new_ids, otlp_protobuf, scenario_spans
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._outbox_files import outbox_path_for_target
from hackagent_otel.testing import FakeHackAgentAPI
from integration.test_bridge import BridgeProcess

from .conftest import RELIABILITY_APPS, subprocess_env

SEED = 20_240_707
LANES = 3
KILLS_PER_LANE = 8
BRIDGE_KILLS = 24
API_KEY = "crash-key"


@dataclass
class LaneReport:
    kills: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # result id -> acknowledged steps
    lost: list[tuple[str, int]] = field(default_factory=list)  # (result, sequence)
    duplicates: int = 0
    delivered: int = 0
    modes: Counter[str] = field(default_factory=Counter)


def _read_lines(proc: subprocess.Popen[str], into: list[dict[str, int | str]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            into.append(json.loads(line))


def _wait_until(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def producer_lane(lane: int, workdir: Path) -> LaneReport:
    rng = random.Random(SEED + lane)
    report = LaneReport()
    outbox_path = workdir / f"lane-{lane}" / "outbox.sqlite3"
    with FakeHackAgentAPI(api_key=API_KEY) as api:
        env = subprocess_env(
            APP_API_URL=api.base_url, APP_API_KEY=API_KEY, HACKAGENT_OUTBOX_PATH=str(outbox_path)
        )
        for _ in range(KILLS_PER_LANE):
            mode = rng.choice(["up", "down", "slow", "goes-down"])
            report.modes[mode] += 1
            if mode == "down":
                api.stop()
            else:
                api.start()
            api.set_latency(rng.uniform(1, 5) if mode == "slow" else 0)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(RELIABILITY_APPS / "crash_producer.py"),
                    str(rng.random())[2:9],
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            lines: list[dict[str, int | str]] = []
            reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
            reader.start()
            try:
                _wait_until(
                    lambda p=proc, seen=lines: bool(seen) or p.poll() is not None,
                    60,
                    "the producer",
                )
                assert proc.poll() is None, f"producer exited with {proc.returncode}"
                delay = rng.uniform(0.05, 1.5)
                if mode == "goes-down":
                    time.sleep(delay / 2)
                    api.stop()
                    time.sleep(delay / 2)
                else:
                    time.sleep(delay)  # the random moment of the kill
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            reader.join(30)
            report.kills += proc.returncode == -signal.SIGKILL
            result_id = str(lines[0]["result_id"])
            acks = [int(line["acked"]) for line in lines[1:] if "acked" in line]
            report.acked[result_id] = max(acks, default=0)
        api.set_latency(0)
        api.start()
        # The producer's environment (its HACKAGENT_OUTBOX_PATH) is all push needs to
        # find the outbox, and the outbox says which API its records are for.
        pushed = subprocess.run(
            [sys.executable, "-m", "hackagent_otel", "push", "--api-key", API_KEY],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        with Outbox(outbox_path_for_target(outbox_path, api.base_url)) as outbox:
            counts = outbox.counts()
        assert counts.pending == 0, counts
        assert counts.rejected == 0, counts
        for result_id, steps in report.acked.items():
            seen = {t["sequence"] for t in api.traces_for(result_id)}
            report.lost += [(result_id, s) for s in range(1, 2 * steps + 1) if s not in seen]
        report.duplicates = len(api.duplicate_traces())
        report.delivered = len(api.traces)
    return report


@pytest.mark.timeout(600)
def test_a_producer_killed_24_times_at_random_moments_loses_no_acknowledged_record(
    tmp_path: Path,
) -> None:
    with ThreadPoolExecutor(LANES) as pool:
        reports = list(pool.map(lambda lane: producer_lane(lane, tmp_path), range(LANES)))
    kills = sum(r.kills for r in reports)
    acked_records = sum(2 * steps for r in reports for steps in r.acked.values())
    figures = {
        "kills": kills,
        "acknowledged_records": acked_records,
        "delivered_records": sum(r.delivered for r in reports),
        "lost": sum(len(r.lost) for r in reports),
        "duplicates": sum(r.duplicates for r in reports),
        "api_modes": dict(sum((r.modes for r in reports), Counter())),
    }
    print("\nproducer crash figures:", json.dumps(figures))
    assert kills == LANES * KILLS_PER_LANE
    assert acked_records > 0
    assert [r.lost for r in reports] == [[] for _ in reports], figures


@dataclass
class Feeder:
    """Posts exports to whichever bridge is up; retries each until it is answered 200."""

    bodies: list[tuple[str, bytes]]
    url: str = ""
    pace: float = 0.025  # seconds between exports: at most 40 a second
    acked: list[str] = field(default_factory=list)
    attempts: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            for result_id, body in self.bodies:
                while not self.stop.is_set():
                    self.attempts += 1
                    try:
                        response = client.post(
                            self.url,
                            content=body,
                            headers={"Content-Type": "application/x-protobuf"},
                        )
                    except httpx.HTTPError:
                        time.sleep(0.02)  # the bridge is down: try the next one up
                        continue
                    if response.status_code == 200:
                        self.acked.append(result_id)
                        time.sleep(self.pace)  # keep the pool from running dry
                        break
                    assert response.status_code in (429, 503), response.text
                    time.sleep(0.02)
                if self.stop.is_set():
                    return


def sequences_by_result(api: FakeHackAgentAPI) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}
    for trace in api.traces:
        seen.setdefault(trace["result"], set()).add(trace["sequence"])
    return seen


def _bodies(count: int) -> Iterator[tuple[str, bytes]]:
    for _ in range(count):
        run_id, result_id = new_ids()
        yield result_id, otlp_protobuf(scenario_spans(run_id, result_id))


@pytest.mark.timeout(600)
def test_a_bridge_killed_24_times_at_random_moments_loses_no_export_it_answered_200(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    outbox = tmp_path / "bridge-outbox.sqlite3"
    feeder = Feeder(list(_bodies(2_000)))
    kills = 0
    with FakeHackAgentAPI(api_key=API_KEY) as api:
        bridge = BridgeProcess(tmp_path, outbox, api).start()
        feeder.url = bridge.traces_url
        thread = threading.Thread(target=feeder.run, daemon=True)
        thread.start()
        try:
            for _ in range(BRIDGE_KILLS):
                api.set_latency(rng.choice([0, 0, 2, 10]))
                time.sleep(rng.uniform(0.05, 1.0))  # the random moment of the kill
                assert len(feeder.acked) < len(feeder.bodies), "the feeder ran dry"
                bridge.kill()
                kills += 1
                bridge = BridgeProcess(tmp_path, outbox, api).start()
                feeder.url = bridge.traces_url
            api.set_latency(0)
            acked = list(feeder.acked)

            def missing() -> list[tuple[str, int]]:
                seen = sequences_by_result(api)
                return [(r, s) for r in acked for s in range(1, 5) if s not in seen.get(r, ())]

            api.wait_for(lambda: not missing(), timeout=120)
        finally:
            feeder.stop.set()
            thread.join(30)
            bridge.process.stop()
        lost = missing()
        duplicates = len(api.duplicate_traces())
        figures = {
            "kills": kills,
            "exports_answered_200": len(acked),
            "acknowledged_trace_records": 4 * len(acked),
            "export_attempts": feeder.attempts,
            "lost": len(lost),
            "duplicates": duplicates,
        }
    print("\nbridge crash figures:", json.dumps(figures))
    assert kills == BRIDGE_KILLS
    assert len(acked) > BRIDGE_KILLS
    assert lost == []
