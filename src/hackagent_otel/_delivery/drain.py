"""The drain: claim outbox rows, send them in order, settle how it went.

Shared by the delivery service (one batch spread over its sender threads by ordering
key) and ``hackagent-otel push`` (one batch on one connection), so both send the same
way: rows in claim order, a dependent with its provider's id filled in (or rejected
with the provider's reason), the first transient failure ending that run of rows (the
rest go back to pending, so nothing overtakes it), and everything settled in the outbox
in one transaction.

Touches the outbox and the sender it is handed; starts no threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from hackagent_otel._delivery.bindings import Bindings
from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow, Settlement
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Sender, Transient
from hackagent_otel._records import Call, Request, safe_ref

__all__ = [
    "Batch",
    "Waiting",
    "claim",
    "learn_answer",
    "request_for",
    "safe_send",
    "send_rows",
]

_log = logging.getLogger("hackagent_otel.delivery")


@dataclass(frozen=True)
class Waiting:
    """A dependent whose provider has not been settled yet: try again later."""

    reason: str


def safe_send(sender: Sender, request: Request) -> Outcome:
    """``sender.send``, with anything it raises turned into a transient outcome (logged):
    a broken sender must not kill the thread that delivers."""
    try:
        return sender.send(request)
    except Exception as exc:
        _log.exception("the sender raised instead of reporting an outcome")
        return Transient(f"sender failed: {type(exc).__name__}: {exc}"[:500])


def request_for(
    call: Call, bindings: Bindings, outbox: Outbox | None = None
) -> Request | Rejected | Waiting:
    """The request ``call`` makes now, or why it cannot be made (yet, or ever).

    A dependent's provider is looked up in memory, then in the outbox: bound, it fills
    the path in; rejected, the dependent is rejected with that reason; still waiting in
    the outbox, the dependent waits; unknown anywhere, it was never delivered (dropped
    or lost) and the dependent is rejected, since no id will ever come.
    """
    name = call.needs
    if name is None:
        return call.request()
    binding = bindings.get(name)
    try:
        if binding is None and outbox is not None:
            binding = outbox.binding(name)
        if binding is None and outbox is not None and outbox.provider_waiting(name):
            return Waiting(f"waiting for {name}")
    except OutboxError as exc:
        return Waiting(f"cannot look {name} up: {exc}")
    if binding is None:
        return Rejected(0, f"depends on {name}, which was never delivered")
    if binding.value is None:
        return Rejected(0, f"depends on {name}, which was rejected: {binding.error}")
    return call.request(binding.value)


def learn_answer(call: Call, outcome: Outcome, bindings: Bindings) -> str | None:
    """Bind what a settled provider gives its dependents; the value to keep, if any.

    Delivered: the answer's ``id`` (a safe path segment) is bound, or, if it has none,
    the reason. Rejected: the reason is bound.
    """
    name = call.provides
    if name is None:
        return None
    if isinstance(outcome, Rejected):
        bindings.fail(name, outcome.reason)
        return None
    if not isinstance(outcome, Delivered):
        return None
    body = outcome.body
    value = safe_ref(body.get("id")) if isinstance(body, dict) else None
    if value is None:
        bindings.fail(name, f"the API's answer to {call.method} {call.path} had no usable id")
        return None
    bindings.learn(name, value)
    return value


@dataclass
class Batch:
    """What sending a run of rows came to; ``failure`` is the transient stop, if any."""

    settlement: Settlement = field(default_factory=Settlement)
    sent: int = 0
    rejected: int = 0
    failure: Transient | None = None

    @classmethod
    def merged(cls, batches: Iterable[Batch]) -> Batch:
        """One batch from several (the sender threads' shares of one claim)."""
        total = cls()
        for batch in batches:
            part = batch.settlement
            total.settlement.delivered += part.delivered
            total.settlement.bindings.update(part.bindings)
            total.settlement.rejected += part.rejected
            total.settlement.failed += part.failed
            total.settlement.released += part.released
            total.sent += batch.sent
            total.rejected += batch.rejected
            total.failure = total.failure or batch.failure
        return total


def send_rows(
    rows: Sequence[OutboxRow],
    sender: Sender,
    bindings: Bindings,
    outbox: Outbox | None,
    *,
    stop: Callable[[], bool] = lambda: False,
    settle_each: bool = False,
) -> Batch:
    """Send ``rows`` in order; stop at the first transient failure (or ``stop()``).

    The rows after a stop are released untouched; a transient failure counts an
    attempt on its row. A delivered provider is committed at once (see
    :func:`_settle_now`); with ``settle_each`` every delivered row is, which costs a
    commit per row and narrows the window in which a process that stops suddenly (a
    child ended by ``os._exit`` or SIGTERM) leaves a delivered row to be sent again.
    """
    batch = Batch()
    settlement = batch.settlement
    for index, row in enumerate(rows):
        if stop():
            settlement.released += [r.id for r in rows[index:]]
            break
        request = request_for(row.call, bindings, outbox)
        outcome: Outcome | Waiting = (
            request if isinstance(request, (Rejected, Waiting)) else safe_send(sender, request)
        )
        if isinstance(outcome, (Transient, Waiting)):
            batch.failure = outcome if isinstance(outcome, Transient) else Transient(outcome.reason)
            settlement.failed.append((row.id, batch.failure.reason))
            settlement.released += [r.id for r in rows[index + 1 :]]
            break
        value = learn_answer(row.call, outcome, bindings)
        if isinstance(outcome, Delivered):
            name = row.call.provides
            bound = {name: value} if name is not None and value is not None else {}
            if bound or settle_each:
                _settle_now(outbox, settlement, row, bound)
            else:
                settlement.delivered.append(row.id)
            batch.sent += 1
        else:
            _log.warning(
                "HackAgent API rejected %s %s (%s); kept in the outbox's rejected rows",
                row.call.method,
                row.call.path,
                outcome.reason,
            )
            settlement.rejected.append((row.id, outcome.status, outcome.reason))
            batch.rejected += 1
    return batch


def _settle_now(
    outbox: Outbox | None, settlement: Settlement, row: OutboxRow, bound: dict[str, str]
) -> None:
    """Commit a delivered row (and the id it provides) now, before the next is sent: a
    crash between its answer and the next call then neither loses the id nor sends the
    row twice. If the outbox cannot take it now, it is settled with the batch."""
    if outbox is not None:
        try:
            outbox.settle(Settlement(delivered=[row.id], bindings=bound))
            return
        except OutboxError as exc:
            _log.info("a delivered row is settled with its batch: %s", exc)
    settlement.delivered.append(row.id)
    settlement.bindings.update(bound)


def claim(outbox: Outbox, limit: int, *, recover: bool = False) -> list[OutboxRow] | None:
    """Take the drain lock and claim up to ``limit`` rows; ``None`` when another
    process drains this outbox.

    Rows left ``inflight`` by a drainer that is gone are made pending first: on taking
    the lock, or when ``recover`` says a settlement of ours was lost.
    """
    held = outbox.drain_lock.held
    try:
        acquired = outbox.drain_lock.try_acquire()
    except OSError as exc:
        raise OutboxError(f"cannot take the drain lock: {exc}") from exc
    if not acquired:
        return None
    if not held or recover:
        recovered = outbox.recover_inflight()
        if recovered:
            _log.info("recovered %d in-flight outbox rows of an earlier drain", recovered)
    return outbox.claim_pending(limit)
