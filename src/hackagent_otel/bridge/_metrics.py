"""The bridge's Prometheus metrics, in the text exposition format written by hand.

A handful of counters and gauges do not need a client library: :class:`Metrics` keeps
them behind one lock and :meth:`Metrics.render` writes the text format (version 0.0.4)
that Prometheus scrapes from ``GET /metrics``. Values owned by someone else (the
delivery service's counters, the outbox depth) are set right before rendering.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["CONTENT_TYPE", "FAMILIES", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """One metric name with its type and help text."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str


FAMILIES: tuple[Family, ...] = (
    Family("hackagent_bridge_requests_total", "counter", "OTLP export requests, by HTTP status"),
    Family(
        "hackagent_bridge_grpc_requests_total",
        "counter",
        "OTLP/gRPC export calls, by gRPC status code",
    ),
    Family(
        "hackagent_bridge_spans_received_total",
        "counter",
        "Spans in decoded OTLP requests (ours, ignored and rejected)",
    ),
    Family(
        "hackagent_bridge_spans_ignored_total",
        "counter",
        "Spans without hackagent.* attributes, skipped",
    ),
    Family(
        "hackagent_bridge_spans_rejected_total",
        "counter",
        "Spans of ours that could not be used (OTLP partial success)",
    ),
    Family(
        "hackagent_bridge_records_queued_total",
        "counter",
        "HackAgent records committed to the outbox before answering 200",
    ),
    Family("hackagent_bridge_records_sent_total", "counter", "Records the HackAgent API accepted"),
    Family(
        "hackagent_bridge_records_retried_total",
        "counter",
        "Transient HackAgent API failures that were retried",
    ),
    Family(
        "hackagent_bridge_records_rejected_total",
        "counter",
        "Records the HackAgent API refused for good (kept in the outbox's rejected rows)",
    ),
    Family(
        "hackagent_bridge_records_dropped_total",
        "counter",
        "Records the delivery service had to drop",
    ),
    Family("hackagent_bridge_outbox_pending", "gauge", "Outbox rows waiting for the HackAgent API"),
    Family("hackagent_bridge_ready", "gauge", "1 while the bridge accepts spans, else 0"),
)
_BY_NAME: Mapping[str, Family] = {family.name: family for family in FAMILIES}


class Metrics:
    """Thread-safe counters and gauges over the fixed :data:`FAMILIES`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {f.name: {} for f in FAMILIES}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to a counter (or gauge) sample."""
        key = _labels(labels)
        with self._lock:
            samples = self._family_values(name)
            samples[key] = samples.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a sample, e.g. a gauge, or a counter kept by someone else."""
        with self._lock:
            self._family_values(name)[_labels(labels)] = value

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 if never touched)."""
        with self._lock:
            return self._family_values(name).get(_labels(labels), 0)

    def render(self) -> bytes:
        """Every family in the Prometheus text format; families without samples show 0."""
        lines: list[str] = []
        with self._lock:
            snapshot = {name: dict(samples) for name, samples in self._values.items()}
        for family in FAMILIES:
            lines.append(f"# HELP {family.name} {family.help}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            samples = snapshot[family.name] or {(): 0}
            for labels, value in sorted(samples.items()):
                lines.append(f"{family.name}{_format_labels(labels)} {_format_value(value)}")
        return ("\n".join(lines) + "\n").encode()

    def _family_values(self, name: str) -> dict[Labels, float]:
        if name not in _BY_NAME:
            raise KeyError(f"unknown metric {name!r}")
        return self._values[name]


def _labels(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))
