"""Delivery of HackAgent records: HTTP client, retry policy, durable outbox, service.

No OpenTelemetry imports here, with one documented exception: the client suppresses
OTel instrumentation around its own HTTP calls (:func:`client.suppress_instrumentation`).

* :class:`HackAgentClient` makes one record's call and reports an :data:`Outcome`;
  :mod:`~hackagent_otel._delivery.transport` moves its bytes over httpx (our own client
  or a caller's: the answer capped, the call bounded by a deadline, no redirect to
  another origin followed).
* :class:`RetryPolicy`, :func:`classify_status`, :func:`parse_retry_after`: what is
  retried and when.
* :class:`Outbox`: the durable SQLite store of undelivered and rejected records.
* :class:`DeliveryService`: the non-blocking queue, sender threads and outbox draining.
* :func:`push`: deliver an outbox's pending rows now (``hackagent-otel push``).
"""

from hackagent_otel._delivery.client import DEFAULT_BASE_URL, HackAgentClient
from hackagent_otel._delivery.outbox import Outbox, OutboxCounts, OutboxError, OutboxRow
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Sender, Transient
from hackagent_otel._delivery.push import PushReport, push
from hackagent_otel._delivery.retry import RetryPolicy, classify_status, parse_retry_after
from hackagent_otel._delivery.service import DeliveryService, DeliveryStats

__all__ = [
    "DEFAULT_BASE_URL",
    "Delivered",
    "DeliveryService",
    "DeliveryStats",
    "HackAgentClient",
    "Outbox",
    "OutboxCounts",
    "OutboxError",
    "OutboxRow",
    "Outcome",
    "PushReport",
    "Rejected",
    "RetryPolicy",
    "Sender",
    "Transient",
    "classify_status",
    "parse_retry_after",
    "push",
]
