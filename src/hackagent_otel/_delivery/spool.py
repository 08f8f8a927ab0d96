"""Spool: the delivery service's outbox, and whether it can be written now.

The outbox is opened when first needed (with the API target it is for). A failure to
write it is either transient (locked past the busy timeout, full, read-only: the
outbox is probed again with backoff, and once a probe or any write succeeds it is
healthy again) or permanent (not a database, corrupt: it stays broken, and says so).

Thread-safe: a small lock guards the health fields only; no I/O runs under it except
opening the file.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from hackagent_otel._delivery.outbox import Outbox, OutboxError
from hackagent_otel._delivery.retry import Backoff, RetryPolicy
from hackagent_otel._forksafe import register
from hackagent_otel._records import Call

__all__ = ["OutboxHealth", "Spool"]

_log = logging.getLogger("hackagent_otel.delivery")


class OutboxHealth(str, enum.Enum):
    """Whether the outbox can be written: yes, not now (probed again), or never."""

    OK = "ok"
    RETRYING = "retrying"
    BROKEN = "broken"


class Spool:
    """The outbox at ``path`` for ``target`` (or the ``outbox`` given, not closed here)."""

    def __init__(
        self,
        outbox: Outbox | None,
        *,
        path: str | os.PathLike[str] | None,
        target: str | None,
        probe_policy: RetryPolicy,
        clock: Callable[[], float],
    ) -> None:
        if outbox is None and path is None:
            raise TypeError("an outbox, or the path of one, is needed")
        self._outbox = outbox
        self._owned = outbox is None
        self._path = Path(path) if path is not None else None
        self._target = target
        self._policy = probe_policy
        self._clock = clock
        self.health = OutboxHealth.OK
        self.error: str | None = None
        self._backoff: Backoff | None = None
        self._next_probe = 0.0
        self._reinit()
        register(self._reinit)

    def _reinit(self) -> None:
        self._lock = threading.Lock()

    @property
    def opened(self) -> Outbox | None:
        """The outbox if it is open (never opens it)."""
        return self._outbox

    def get(self) -> Outbox:
        """The outbox, opened now if need be; :class:`OutboxError` if it cannot be."""
        with self._lock:
            if self.health is OutboxHealth.BROKEN:
                raise OutboxError(f"the outbox is broken: {self.error}", transient=False)
            if self._outbox is None:
                assert self._path is not None  # checked when made
                self._outbox = Outbox(self._path, target=self._target)
            return self._outbox

    def store(self, calls: Sequence[Call], *, session: int, seqs: Sequence[int]) -> list[int]:
        """Commit ``calls`` as pending rows in one transaction; their row ids."""
        ids = self.get().put_many(calls, session=session, seqs=seqs)
        self.succeeded()
        return ids

    def store_rejected(
        self, call: Call, status: int, reason: str, *, session: int, seq: int
    ) -> None:
        """Keep a call the API refused for good."""
        self.get().put_rejected(call, status, reason, session=session, seq=seq)
        self.succeeded()

    def failed(self, exc: OutboxError) -> None:
        """A use of the outbox failed: probe it again later, or give up if it is broken."""
        with self._lock:
            before = self.health
            if not exc.transient:
                self.health = OutboxHealth.BROKEN
            elif before is not OutboxHealth.BROKEN:
                if self._backoff is None:
                    self._backoff = self._policy.backoff()
                wait = self._backoff.next_wait() or self._policy.max_backoff
                self._next_probe = self._clock() + wait
                self.health = OutboxHealth.RETRYING
            self.error = str(exc)
            after = self.health
        if after is not before:
            _log.error(
                "outbox unusable (%s); delivering from memory, %s",
                exc,
                "for good: the file cannot be used"
                if after is OutboxHealth.BROKEN
                else "trying it again with backoff",
            )

    def succeeded(self) -> bool:
        """A use of the outbox worked; True if it was not healthy before."""
        with self._lock:
            if self.health is OutboxHealth.OK:
                return False
            if self.health is OutboxHealth.BROKEN:
                return False
            self.health, self.error, self._backoff = OutboxHealth.OK, None, None
        _log.info("outbox writable again")
        return True

    def probe_in(self) -> float | None:
        """Seconds until the next probe is due (0: now); ``None`` when never (broken)."""
        with self._lock:
            if self.health is OutboxHealth.BROKEN:
                return None
            return max(0.0, self._next_probe - self._clock())

    def probe(self) -> bool:
        """Try a write now; True when the outbox can be written again."""
        try:
            self.get().probe()
        except OutboxError as exc:
            self.failed(exc)
            return False
        self.succeeded()
        return True

    def close(self) -> None:
        """Give up the drain lock, and close the outbox if it was opened here."""
        outbox = self._outbox
        if outbox is None:
            return
        with contextlib.suppress(OutboxError, OSError):
            outbox.drain_lock.release()
        if self._owned:
            outbox.close()
