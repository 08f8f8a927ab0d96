"""Fixtures for the reliability suite: a real tracker and real spans delivering to the
fake HackAgent API with retry budgets small enough for fast tests.

``configure()`` takes no retry policy, so :func:`harness` assembles the same parts it
does (SDK provider, :class:`HackAgentSpanProcessor`, :class:`DeliveryService` with a
:class:`HackAgentClient` and an :class:`Outbox`, a :class:`Telemetry` for the stats)
with a fast :class:`RetryPolicy` and a short client timeout. Nothing of ours is mocked.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hackagent_otel import StepTracker, Telemetry, TrackingContext, _tracer
from hackagent_otel._config import Settings
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._processor import HackAgentSpanProcessor
from hackagent_otel.testing import FakeHackAgentAPI

#: Retries that give up on direct delivery after 0.3 s and probe a down API every
#: 50 ms at most: the behaviour of the defaults (0.5 s .. 30 s, 5 s budget), faster.
FAST_POLICY = RetryPolicy(initial_backoff=0.01, multiplier=2, max_backoff=0.05, max_elapsed=0.3)
#: The client's connect/read timeout: a hung API call fails after this many seconds.
CLIENT_TIMEOUT = 0.5

REPO_ROOT = Path(__file__).resolve().parents[2]
RELIABILITY_APPS = Path(__file__).with_name("apps")


class OneService:
    """``sink_for_run`` for the processor: every run goes to one delivery service."""

    def __init__(self, service: DeliveryService) -> None:
        self.service = service

    def __call__(self, run_id: str) -> DeliveryService:
        return self.service

    def sinks(self) -> Iterator[DeliveryService]:
        return iter([self.service])


@dataclass(frozen=True)
class Accounting:
    """Where every record the mapping produced went (from ``Telemetry.stats()``)."""

    produced: int
    sent: int
    pending: int
    rejected: int
    dropped: int
    queued: int  # in memory or in flight (also counted in ``pending``)

    @property
    def settled(self) -> bool:
        """Every record is sent, rejected or dropped: nothing left to deliver."""
        return self.pending == 0 and self.sent + self.rejected + self.dropped == self.produced

    @property
    def adds_up(self) -> bool:
        return self.sent + self.pending + self.rejected + self.dropped == self.produced


@dataclass
class Harness:
    """A tracker's spans -> records -> the fake API, with fast retries."""

    api: FakeHackAgentAPI
    provider: TracerProvider
    exporter: InMemorySpanExporter
    processor: HackAgentSpanProcessor
    service: DeliveryService
    outbox: Outbox | None
    telemetry: Telemetry
    run_id: str

    def tracker(self, result_id: str | None = None) -> StepTracker:
        result = result_id or str(uuid.uuid4())
        return StepTracker(TrackingContext(run_id=self.run_id, parent_result_id=result))

    def accounting(self) -> Accounting:
        stats = self.telemetry.stats()
        (delivery,) = stats["delivery"]
        pending = (delivery["outbox_pending"] or 0) + delivery["queued"]
        return Accounting(
            produced=stats["mapping"]["records"],
            sent=delivery["sent"],
            pending=pending,
            rejected=delivery["rejected"],
            dropped=delivery["dropped"],
            queued=delivery["queued"],
        )

    def wait_settled(self, timeout: float = 15.0) -> Accounting:
        """Flush, then poll until every record is sent, rejected or dropped."""
        self.provider.force_flush(int(timeout * 1000))
        self.api.wait_for(lambda: self.accounting().settled, timeout=timeout)
        return self.accounting()


HarnessFactory = Callable[..., Harness]


@pytest.fixture
def make_harness(
    clean_env: None, fake_api: FakeHackAgentAPI, tmp_path: Path
) -> Iterator[HarnessFactory]:
    """Build harnesses: a fresh provider whose step spans are delivered to ``fake_api``
    with FAST_POLICY. ``outbox_path`` (default: in ``tmp_path``) is opened by the
    delivery service itself when ``open_outbox`` is false, as ``configure()`` does."""
    made: list[Harness] = []

    def make(
        outbox_path: Path | None = None, *, open_outbox: bool = True, **service: Any
    ) -> Harness:
        path = outbox_path or tmp_path / "outbox.sqlite3"
        outbox = Outbox(path) if open_outbox else None
        client = HackAgentClient(fake_api.base_url, fake_api.api_key, timeout=CLIENT_TIMEOUT)
        service.setdefault("policy", FAST_POLICY)
        service.setdefault("outbox_poll_interval", 0.2)
        delivery = DeliveryService(client, outbox, outbox_path=path, **service)
        processor = HackAgentSpanProcessor(OneService(delivery))
        provider = TracerProvider(shutdown_on_exit=False)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.add_span_processor(processor)
        telemetry = Telemetry(
            Settings.resolve(), provider, owns_provider=True, sanitizer=_tracer.source.sanitizer
        )
        telemetry.records = processor
        telemetry.processors.append(processor)
        _tracer.source.use_provider(provider)
        harness = Harness(
            fake_api, provider, exporter, processor, delivery, outbox, telemetry, str(uuid.uuid4())
        )
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        fake_api.clear_faults()
        for harness in made:
            harness.provider.shutdown()
            if harness.outbox is not None:
                harness.outbox.close()
        _tracer.source.reset()


@pytest.fixture
def harness(make_harness: HarnessFactory) -> Harness:
    """A harness with its outbox in ``tmp_path``."""
    return make_harness()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of every logger, DEBUG and up."""
    caplog.set_level(logging.DEBUG)
    return caplog


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test's environment without OTEL_*/HACKAGENT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


def sequences_in_order(traces: list[dict[str, Any]]) -> bool:
    """Whether trace sequences arrived strictly ascending."""
    seqs = [t["sequence"] for t in traces]
    return all(a < b for a, b in itertools.pairwise(seqs))
