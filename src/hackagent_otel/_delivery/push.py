"""push: deliver an outbox's pending rows now, in order (``hackagent-otel push``).

Sequential on one connection: simple, and order per key follows from claim order. It
takes the outbox's drain lock, so it never races a running service's drainer; if
another process holds the lock it reports that and sends nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow
from hackagent_otel._delivery.outcome import (
    Delivered,
    Outcome,
    Rejected,
    Sender,
    request_or_rejection,
)
from hackagent_otel._delivery.retry import Backoff, RetryPolicy
from hackagent_otel._records import Record

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
    outbox's rejected rows. Raises :class:`OutboxError` only if the outbox cannot be read
    at all.
    """
    policy = policy or RetryPolicy(max_elapsed=60.0)
    lock = outbox.drain_lock
    already_held = lock.held
    try:
        if not lock.try_acquire():
            return PushReport(0, 0, outbox.pending_count(), "another process is draining")
    except OSError as exc:
        raise OutboxError(f"cannot take the drain lock: {exc}") from exc
    run = _Push(outbox, sender, progress, policy.backoff(), sleep)
    try:
        outbox.recover_inflight()
        run.total = outbox.pending_count()
        run.report_progress()
        while True:
            rows = outbox.claim_pending(batch_size)
            if not rows:
                return PushReport(run.delivered, run.rejected, 0)
            stop = run.send_batch(rows)
            if stop is not None:
                return PushReport(run.delivered, run.rejected, outbox.pending_count(), stop)
    except OutboxError as exc:
        remaining = -1
        with contextlib.suppress(OutboxError):
            remaining = outbox.pending_count()
        return PushReport(run.delivered, run.rejected, remaining, f"outbox trouble: {exc}")
    finally:
        if not already_held:
            lock.release()


@dataclass
class _Push:
    outbox: Outbox
    sender: Sender
    progress: Progress | None
    backoff: Backoff
    sleep: Callable[[float], None]
    total: int = 0
    delivered: int = 0
    rejected: int = 0

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.delivered + self.rejected, self.total)

    def send_batch(self, rows: list[OutboxRow]) -> str | None:
        """Send claimed rows in order; on a transient failure release the rest and back off.

        Returns why the push must stop (retry budget spent), else ``None``.
        """
        done_ids: list[int] = []
        try:
            for index, row in enumerate(rows):
                outcome = _send(self.sender, row.sendable)
                if isinstance(outcome, Delivered):
                    done_ids.append(row.id)
                    self.delivered += 1
                    self.backoff.reset()
                elif isinstance(outcome, Rejected):
                    self.outbox.mark_rejected(row.id, outcome.status, outcome.reason)
                    self.rejected += 1
                else:
                    self.outbox.release([row.id], error=outcome.reason)
                    self.outbox.release([r.id for r in rows[index + 1 :]])
                    wait = self.backoff.next_wait(outcome.retry_after)
                    if wait is None:
                        return f"API unavailable: {outcome.reason}"
                    self.sleep(wait)
                    return None
                self.report_progress()
            return None
        finally:
            self.outbox.mark_delivered(done_ids)


def _send(sender: Sender, record: Record) -> Outcome:
    request = request_or_rejection(record)
    return request if isinstance(request, Rejected) else sender.send(request)
