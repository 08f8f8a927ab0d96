"""push: deliver an outbox's pending rows now, in order (``hackagent-otel push``).

Sequential on one connection through the same drain as the delivery service
(:mod:`~hackagent_otel._delivery.drain`): order per key follows from claim order. It
takes the outbox's drain lock, so it never races a running service's drainer; if
another process holds the lock it reports that and sends nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.drain import claim, send_rows
from hackagent_otel._delivery.outbox import Outbox, OutboxError
from hackagent_otel._delivery.outcome import Sender
from hackagent_otel._delivery.retry import RetryPolicy

__all__ = ["PushReport", "push"]

#: ``progress(done, total)``: rows settled so far (delivered or rejected) out of the
#: pending count at the start.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PushReport:
    """What a push did: rows delivered and rejected, rows still pending, and why it stopped.

    ``stopped`` is ``None`` when the outbox was drained, else a human-readable reason
    (API unreachable past the retry budget, another process draining, disk trouble).
    """

    delivered: int
    rejected: int
    remaining: int
    stopped: str | None = None

    @property
    def complete(self) -> bool:
        """True when nothing is left pending."""
        return self.stopped is None and self.remaining == 0


def push(
    outbox: Outbox,
    sender: Sender,
    *,
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    batch_size: int = 256,
    sleep: Callable[[float], None] = time.sleep,
) -> PushReport:
    """Send every pending row of ``outbox`` in claim order; never raises for API trouble.

    Transient failures are retried per ``policy`` (default: 0.5 s initial backoff, up
    to 30 s apart, giving up after 60 s without progress); rejected rows stay in the
    outbox's rejected rows. Dependent rows get their provider's id from this push or
    from the outbox (a drain before it). Raises :class:`OutboxError` only if the outbox
    cannot be read at all.
    """
    policy = policy or RetryPolicy(max_elapsed=60.0)
    already_held = outbox.drain_lock.held
    backoff = policy.backoff()
    bindings = Bindings()
    delivered = rejected = total = 0

    def report_progress() -> None:
        if progress is not None:
            progress(delivered + rejected, total)

    try:
        rows = claim(outbox, batch_size)
        if rows is None:
            return PushReport(0, 0, outbox.pending_count(), "another process is draining")
        total = outbox.pending_count()  # the claimed rows included
        report_progress()
        while rows:
            batch = send_rows(rows, sender, bindings, outbox)
            outbox.settle(batch.settlement)
            delivered += batch.sent
            rejected += batch.rejected
            report_progress()
            if batch.failure is None:
                backoff.reset()
            else:
                wait = backoff.next_wait(batch.failure.retry_after)
                if wait is None:
                    stop = f"API unavailable: {batch.failure.reason}"
                    return PushReport(delivered, rejected, outbox.pending_count(), stop)
                sleep(wait)
            rows = outbox.claim_pending(batch_size)
        return PushReport(delivered, rejected, 0)
    except OutboxError as exc:
        remaining = -1
        with contextlib.suppress(OutboxError):
            remaining = outbox.pending_count()
        return PushReport(delivered, rejected, remaining, f"outbox trouble: {exc}")
    finally:
        if not already_held:
            outbox.drain_lock.release()
