"""Bindings: the values earlier answers gave the records that depend on them.

A Result's creation ``provides`` a name; when the API answers 201 its ``id`` is bound
to that name here, and every dependent record (the goal's traces, its verdict) is sent
with it. A provider rejected for good binds its reason instead, and its dependents are
kept as rejected with it. Pipeline code that reads an id waits here, bounded.

In memory and bounded: past :data:`DEFAULT_LIMIT` names the oldest are forgotten and
counted (the outbox keeps every binding a drained row needs, so a forgotten one is
looked up there). Thread-safe, fork-safe (a child starts with the parent's bindings
and a lock of its own).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from hackagent_otel._delivery.outbox import Binding
from hackagent_otel._forksafe import register

__all__ = ["DEFAULT_LIMIT", "Bindings"]

#: Names remembered in memory (a goal each: far more than an attack has).
DEFAULT_LIMIT = 100_000


class Bindings:
    """Provider name -> :class:`Binding`, bounded, with waiting for a name to be bound."""

    def __init__(
        self, limit: int = DEFAULT_LIMIT, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._clock = clock
        self._known: OrderedDict[str, Binding] = OrderedDict()
        self.evicted = 0
        self._reinit()
        register(self._reinit)

    def _reinit(self) -> None:
        self._cond = threading.Condition(threading.Lock())

    def learn(self, name: str, value: str) -> None:
        """``name``'s provider was delivered and its answer's id is ``value``."""
        self._keep(name, Binding(value))

    def fail(self, name: str, error: str) -> None:
        """``name``'s provider was rejected for good (or its answer had no usable id)."""
        self._keep(name, Binding(None, error))

    def get(self, name: str) -> Binding | None:
        """What ``name`` is bound to, if known in memory."""
        with self._cond:
            return self._known.get(name)

    def wait(self, name: str, timeout: float) -> Binding | None:
        """Wait up to ``timeout`` seconds for ``name`` to be bound; ``None`` if it is not."""
        deadline = self._clock() + max(0.0, timeout)
        with self._cond:
            while True:
                found = self._known.get(name)
                remaining = deadline - self._clock()
                if found is not None or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    def __len__(self) -> int:
        with self._cond:
            return len(self._known)

    def _keep(self, name: str, binding: Binding) -> None:
        with self._cond:
            self._known[name] = binding
            self._known.move_to_end(name)
            while len(self._known) > self._limit:
                self._known.popitem(last=False)
                self.evicted += 1
            self._cond.notify_all()
