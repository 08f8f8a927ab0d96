"""Decoded OTLP spans -> HackAgent records, durably queued before the bridge answers.

One request's way through (:meth:`BridgePipeline.ingest`, on a worker thread):

1. the body is decoded into span views (:mod:`._decode`); spans without
   ``hackagent.*`` attributes are only counted;
2. each of ours is mapped with the in-process mapping, ``map_end(include_start=True)``
   (the bridge sees a span once, when it has ended, so a step's start record is made
   then too); values are sanitized again there, by the bridge's own sanitizer (its
   extra secret words, its API key and token pinned: :func:`sanitizer_for`), so a
   secret under a secret-named key is redacted exactly as in-process;
3. the request's records are put in order per ordering key (:func:`order_records`);
4. they are committed to the outbox in one transaction
   (:meth:`DeliveryService.accept_durably`). Only then does the bridge answer 200; the
   delivery service drains the outbox to the HackAgent API in claim order, which keeps
   that order per key, across restarts and SIGKILL included.

What order is guaranteed. Within one request, for each result (and each run), records
are queued in the order the original tracker would have made the calls: by the time of
what they record (a step's start record at its start, its summary and failure update at
its end, a status update when it was made), with the trace records in ascending
``sequence``. Across requests, records are queued in the order the requests were
accepted. So when the exporter puts a nested step and its parent in different batches
(the child ends first), the child's records are delivered before its parent's start
record, whose ``sequence`` is lower; the sequence numbers still say how they belong.
The Collector's ``batch`` processor and the SDK's batch span processor send a short
pipeline's spans in one request, where the order is exact.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hackagent_otel import _records, semconv
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox, OutboxError
from hackagent_otel._delivery.service import DeliveryService, DeliveryStats
from hackagent_otel._delivery.spool import OutboxHealth
from hackagent_otel._mapping import map_end
from hackagent_otel._outbox_files import api_target
from hackagent_otel._records import Record
from hackagent_otel._sanitize import Sanitizer
from hackagent_otel._spanview import SpanView
from hackagent_otel.bridge._decode import DecodedTraces, decode
from hackagent_otel.bridge._settings import BridgeSettings

__all__ = ["Accepted", "Backlogged", "BridgePipeline", "order_records", "sanitizer_for"]

_log = logging.getLogger("hackagent_otel.bridge")

#: ``decoder(body, content_type, max_spans=...)``, as :func:`._decode.decode`.
Decoder = Callable[..., DecodedTraces]

#: Seconds a read of the outbox's pending count is reused for back-pressure checks.
PENDING_CACHE_SECONDS = 0.25
#: Rejection reasons kept for one partial-success answer.
MAX_ERRORS = 10


class Backlogged(Exception):
    """The outbox holds more undelivered rows than allowed (HTTP 429 with Retry-After)."""


@dataclass(frozen=True)
class Accepted:
    """What one request came to; its records are in the outbox."""

    #: Our spans that made records (or needed none, e.g. a step on no result).
    spans: int
    #: Spans without ``hackagent.*`` attributes, skipped.
    ignored: int
    #: Spans of ours that could not be used (OTLP partial success ``rejectedSpans``).
    rejected: int
    #: Records committed to the outbox.
    records: int
    #: Why spans were rejected (the first few).
    errors: tuple[str, ...] = ()

    @property
    def received(self) -> int:
        """Every span the request held."""
        return self.spans + self.ignored + self.rejected


def sanitizer_for(settings: BridgeSettings) -> Sanitizer:
    """The bridge's sanitizer: its extra secret words, and neither its API key nor its
    own token may appear in what it writes."""
    sanitizer = Sanitizer(extra_secret_words=settings.redact_keys)
    sanitizer.pin_secret(settings.hackagent_api_key, configured=True)
    sanitizer.pin_secret(settings.token, configured=True)
    return sanitizer


def order_records(
    spans: Iterable[SpanView], sanitizer: Sanitizer
) -> tuple[list[Record], int, list[str]]:
    """Map finished spans to records, in order per key; also count and explain rejects.

    Returns ``(records, rejected_spans, errors)``. Records of different keys keep the
    order in which their keys first appear; see the module docstring for the order
    within a key.
    """
    # Per key: (time of what the record records, position in the request, record).
    timed: dict[str, list[tuple[int, int, Record]]] = {}
    rejected = 0
    errors: list[str] = []
    position = 0
    for view in spans:
        try:
            mapped = map_end(view, sanitizer, include_start=True)
        except Exception as exc:  # a mapping bug must not fail the other spans
            _log.exception("could not map span %s (%r)", view.span_id_hex, view.name)
            mapped_records: tuple[Record, ...] = ()
            problems: tuple[str, ...] = (f"span {view.span_id_hex}: {type(exc).__name__}",)
        else:
            mapped_records, problems = mapped.records, mapped.problems
        if problems and not mapped_records:
            rejected += 1
            errors.extend(problems[: max(0, MAX_ERRORS - len(errors))])
            continue
        ended = view.end_time_ns if view.end_time_ns is not None else view.start_time_ns
        # map_end(include_start=True) puts a step's start record first.
        at = view.start_time_ns if view.attributes.get(semconv.KIND) == semconv.KIND_STEP else ended
        for record in mapped_records:
            group = timed.get(record.ordering_key)
            if group is None:
                group = timed[record.ordering_key] = []
            group.append((at, position, record))
            position += 1
            at = ended
    ordered: list[Record] = []
    for group in timed.values():
        ordered.extend(_in_call_order(group))
    return ordered, rejected, errors


def _in_call_order(group: list[tuple[int, int, Record]]) -> list[Record]:
    """By time of what they record; then trace records refilled in ``sequence`` order.

    Sorting by time places the status updates; the trace records then take the slots
    trace records hold, in ascending sequence (sequence numbers are the tracker's own
    order, and clocks of concurrent steps may disagree with it).
    """
    if len(group) == 1:
        return [group[0][2]]
    by_time = sorted(group)  # positions are unique: records themselves are never compared
    slots = [i for i, t in enumerate(by_time) if t[2].kind == _records.TRACE]
    sequences = [_sequence(by_time[i][2]) for i in slots]
    if sequences == sorted(sequences):
        # Already in ascending sequence, ties in time order: the refill would change
        # nothing (the usual case: one tracker's steps, one clock).
        return [t[2] for t in by_time]
    by_sequence = sorted((by_time[i] for i in slots), key=_sequence_time_and_position)
    for slot, timed in zip(slots, by_sequence, strict=True):
        by_time[slot] = timed
    return [t[2] for t in by_time]


def _sequence_time_and_position(timed: tuple[int, int, Record]) -> tuple[int, int, int]:
    return _sequence(timed[2]), timed[0], timed[1]


def _sequence(record: Record) -> int:
    value: Any = record.body.get("sequence")
    return value if isinstance(value, int) else 0


class BridgePipeline:
    """Decodes, maps, orders and durably queues spans; delivery drains the outbox.

    ``delivery`` must use ``outbox`` (it is handed to it), so back-pressure reads the
    depth of the very outbox records are written to. The pipeline owns both and closes
    them in :meth:`close`. ``sanitizer`` cleans what other processes' spans carry (a
    new one of its own when not given).
    """

    def __init__(
        self,
        delivery: DeliveryService,
        outbox: Outbox,
        *,
        max_pending_records: int,
        decoder: Decoder = decode,
        clock: Callable[[], float] = time.monotonic,
        sanitizer: Sanitizer | None = None,
    ) -> None:
        self.sanitizer = Sanitizer() if sanitizer is None else sanitizer
        self._delivery = delivery
        self._outbox = outbox
        self._max_pending = max_pending_records
        self._decode = decoder
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: int | None = None
        self._pending_read_at = -1e9
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: BridgeSettings, sanitizer: Sanitizer | None = None
    ) -> BridgePipeline:
        """The outbox at ``settings.outbox_path`` and delivery to the configured API
        (none configured: records wait in the outbox for ``hackagent-otel push``);
        ``sanitizer``: default, :func:`sanitizer_for` the settings.

        Raises :class:`OutboxError` when the outbox cannot be opened.
        """
        if sanitizer is None:
            sanitizer = sanitizer_for(settings)
        base_url = settings.hackagent_base_url
        outbox = Outbox(settings.outbox_path, target=api_target(base_url) if base_url else None)
        sender = (
            HackAgentClient(settings.hackagent_base_url, settings.hackagent_api_key)
            if settings.hackagent_base_url
            else None
        )
        delivery = DeliveryService(sender, outbox)
        return cls(
            delivery,
            outbox,
            max_pending_records=settings.max_pending_records,
            sanitizer=sanitizer,
        )

    # -- serving -----------------------------------------------------------------------
    def start(self) -> None:
        """Start delivery now, so rows left by an earlier run are drained at once."""
        self._delivery.start()

    def check_capacity(self) -> None:
        """Raise :class:`Backlogged` when the outbox is over its pending limit.

        The count is re-read at most every :data:`PENDING_CACHE_SECONDS` (plus what
        this process added since); an unreadable outbox raises :class:`OutboxError`.
        """
        pending = self._pending_count()
        if pending is None:
            raise OutboxError("the outbox cannot be read")
        if pending >= self._max_pending:
            raise Backlogged(
                f"{pending} records wait for the HackAgent API (limit {self._max_pending})"
            )

    def ingest(self, body: bytes, content_type: str, *, max_spans: int | None = None) -> Accepted:
        """Decode ``body`` (already decompressed) and commit its records to the outbox.

        At most ``max_spans`` of our spans are taken (the rest are rejected, for partial
        success), so one request adds at most three records per span taken, whatever
        the pending limit (checked before, by :meth:`check_capacity`).

        Raises ``DecodeError`` (400), ``UnsupportedMediaType`` (415),
        :class:`Backlogged` (429) or :class:`OutboxError` (503); when it returns, every
        record of the request is durable.
        """
        decoded = self._decode(body, content_type, max_spans=max_spans)
        records, unmappable, errors = order_records(decoded.spans, self.sanitizer)
        if records:
            self._delivery.accept_durably(records)
            with self._lock:
                if self._pending is not None:
                    self._pending += len(records)
        rejected = decoded.rejected + unmappable
        return Accepted(
            spans=len(decoded.spans) - unmappable,
            ignored=decoded.ignored,
            rejected=rejected,
            records=len(records),
            errors=tuple((decoded.errors + errors)[:MAX_ERRORS]),
        )

    # -- state -------------------------------------------------------------------------
    def outbox_problem(self) -> str | None:
        """Why records cannot be taken now, or ``None`` when they can.

        ``"retrying: <error>"`` while the outbox cannot be written for a while (locked
        by another process, full, read-only: probed again with backoff, and ready again
        once it can be written); ``"broken: <error>"`` for a file that cannot be used at
        all (not a database, corrupt), which stays so until it is replaced.
        """
        if self._closed:
            return "closed"
        if self._pending_count(fresh=True) is None:
            return "unreadable"
        stats = self._delivery.stats()
        if stats.outbox is not OutboxHealth.OK:
            return f"{stats.outbox.value}: {stats.outbox_error}"
        return None

    def usable(self) -> bool:
        """Whether the outbox can take records now (see :meth:`outbox_problem`)."""
        return self.outbox_problem() is None

    def pending(self) -> int | None:
        """Outbox rows waiting for the API (``None`` when the outbox cannot be read)."""
        return self._pending_count(fresh=True)

    def delivery_stats(self) -> DeliveryStats:
        """The delivery service's counters."""
        return self._delivery.stats()

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what can be delivered within ``timeout`` and stop; idempotent.

        Accepted records are already in the outbox, so nothing is lost either way: what
        the API did not take yet is delivered by the next start.
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        try:
            return self._delivery.shutdown(timeout)
        finally:
            with contextlib.suppress(OutboxError):
                self._outbox.close()

    def _pending_count(self, *, fresh: bool = False) -> int | None:
        now = self._clock()
        with self._lock:
            if not fresh and now - self._pending_read_at < PENDING_CACHE_SECONDS:
                return self._pending
        try:
            count: int | None = self._outbox.pending_count()
        except OutboxError as exc:
            _log.warning("outbox unreadable: %s", exc)
            count = None
        with self._lock:
            self._pending, self._pending_read_at = count, now
        return count
