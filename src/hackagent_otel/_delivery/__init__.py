"""Delivery of HackAgent records: HTTP client, retry policy, durable outbox, service.

No OpenTelemetry imports here (one documented exception: suppressing instrumentation
around our own HTTP calls, in :mod:`hackagent_otel._delivery.client`).
"""

from hackagent_otel._delivery.client import DEFAULT_BASE_URL, HackAgentClient
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Sender, Transient
from hackagent_otel._delivery.retry import RetryPolicy, classify_status, parse_retry_after

__all__ = [
    "DEFAULT_BASE_URL",
    "Delivered",
    "HackAgentClient",
    "Outcome",
    "Rejected",
    "RetryPolicy",
    "Sender",
    "Transient",
    "classify_status",
    "parse_retry_after",
]
