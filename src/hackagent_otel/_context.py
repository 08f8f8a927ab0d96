"""``TrackingContext``: which run and result a tracker records to, and with what client.

Same constructor, attributes and methods as hackagent's ``TrackingContext``, so code
that builds one keeps working. Two deliberate differences:

* a run id alone enables tracking (spans for an app that only speaks OTLP); a client
  or a configured HackAgent API adds in-process delivery of records;
* the sequence counter is shared by every context on the same result in this process
  and is thread-safe, so records on one result never repeat a sequence number.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict, deque
from typing import Any, Protocol

from hackagent_otel._forksafe import register, renew_after_fork

_logger = logging.getLogger("hackagent_otel")

#: How many progress entries a step keeps (the original keeps the last 20).
MAX_PROGRESS_ENTRIES = 20
#: Distinct metadata keys a step keeps; with 20 progress entries and one exception event
#: this stays under the SDK's default of 128 events per span.
MAX_METADATA_KEYS = 100


class _HasSequenceCounter(Protocol):
    sequence_counter: int


class _LinkableGoal(Protocol):
    """A goal's Context (``hackagent_otel.Context``) a step tracker can be linked to."""

    sequence_counter: int
    _ref: str | None

    @property
    def result_id(self) -> str | None: ...

    def _next_sequence(self) -> int: ...


class _SequenceCounter:
    """A thread-safe counter; ``next()`` returns the incremented value, as the original."""

    __slots__ = ("__weakref__", "_lock", "value")

    def __init__(self, start: int = 0) -> None:
        self.value = start
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def next(self) -> int:
        with self._lock:
            self.value += 1
            return self.value


#: Results whose counters are kept after their contexts are gone. Held strongly (not
#: weakly): a pipeline that builds a fresh context per step on the same result must go on
#: from the last number, not start again at 1. Least recently used results go first.
_MAX_COUNTERS = 50_000
_counters: OrderedDict[str, _SequenceCounter] = OrderedDict()
_counters_lock = threading.Lock()


def _renew_counters_lock() -> None:
    global _counters_lock
    _counters_lock = threading.Lock()


register(_renew_counters_lock)


class PendingEntries:
    """Metadata and progress recorded outside any step of a context, kept for its next
    step with the bounds a step's own have (and counts of what those bounds dropped).

    The tracker fills and empties it; the context only holds it, since every tracker of
    the context shares it. Thread-safe.
    """

    __slots__ = (
        "__weakref__",
        "_lock",
        "_metadata",
        "_metadata_dropped",
        "_progress",
        "_progress_dropped",
    )

    def __init__(self) -> None:
        self._metadata: dict[str, tuple[int, str]] = {}
        self._progress: deque[tuple[int, str, str]] = deque(maxlen=MAX_PROGRESS_ENTRIES)
        self._metadata_dropped = 0
        self._progress_dropped = 0
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def stash_metadata(self, key: str, entry: tuple[int, str]) -> bool:
        """Keep a metadata entry for the next step; False if a new key was over the bound."""
        with self._lock:
            pending = self._metadata
            if key not in pending and len(pending) >= MAX_METADATA_KEYS:
                self._metadata_dropped += 1
                return False
            pending.pop(key, None)
            pending[key] = entry
            return True

    def stash_progress(self, entry: tuple[int, str, str]) -> bool:
        """Keep a progress entry for the next step; True if an older one fell out."""
        with self._lock:
            full = len(self._progress) == MAX_PROGRESS_ENTRIES
            if full:
                self._progress_dropped += 1
            self._progress.append(entry)
            return full

    def take(self) -> tuple[dict[str, tuple[int, str]], list[tuple[int, str, str]], int, int]:
        """Metadata, progress and their dropped counts kept for the next step; resets them."""
        if not self._metadata and not self._progress:
            return {}, [], 0, 0
        with self._lock:
            metadata, self._metadata = self._metadata, {}
            progress = list(self._progress)
            self._progress.clear()
            dropped = (self._metadata_dropped, self._progress_dropped)
            self._metadata_dropped = self._progress_dropped = 0
        return metadata, progress, *dropped


def _shared_counter(result_id: str | None, start: int) -> _SequenceCounter:
    if not result_id:
        return _SequenceCounter(start)
    with _counters_lock:
        counter = _counters.get(result_id)
        if counter is None:
            counter = _SequenceCounter(start)
            _counters[result_id] = counter
            while len(_counters) > _MAX_COUNTERS:
                _counters.popitem(last=False)
        else:
            _counters.move_to_end(result_id)
            counter.value = max(counter.value, start)
        return counter


class TrackingContext:
    """Tracking configuration and state shared by the trackers of one run.

    Args:
        client: where records go in-process: a hackagent ``AuthenticatedClient``, an
            ``httpx.Client`` or a :class:`hackagent_otel.HackAgentClient`. ``None``
            still records spans; records then go wherever ``configure()`` sends them.
        run_id: the HackAgent run UUID; without it tracking is a no-op.
        parent_result_id: the result the step records belong to; without it steps are
            still spans but produce no trace records, as in the original.
        logger: logger for tracking messages (default ``hackagent_otel``).
        sequence_counter: last sequence number already used on the result.
        metadata: context metadata, sent as ``context_metadata`` with each step start.
    """

    def __init__(
        self,
        client: Any = None,
        run_id: str | None = None,
        parent_result_id: str | None = None,
        logger: logging.Logger | None = None,
        sequence_counter: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.logger = logger if logger is not None else _logger
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self._result_id = parent_result_id
        self._counter = _shared_counter(parent_result_id, sequence_counter)
        self._delegate: _HasSequenceCounter | None = None
        self._delegate_lock = threading.Lock()
        # A goal whose Result the steps record to, known by its ref until the API's
        # answer to its creation gives the id (see link_goal).
        self._goal: _LinkableGoal | None = None
        #: Metadata and progress recorded outside any step, for the next step.
        self.pending = PendingEntries()
        renew_after_fork(self, "_delegate_lock")
        self._warned: set[str] = set()

    # -- identity ------------------------------------------------------------------
    @property
    def parent_result_id(self) -> str | None:
        """The result steps record to. Linked to a goal whose Result's creation is still
        on its way, reading it waits (bounded) for the API's id, as the goal's does."""
        if self._result_id is None and self._goal is not None:
            return self._goal.result_id
        return self._result_id

    @parent_result_id.setter
    def parent_result_id(self, value: str | None) -> None:
        self._result_id = value
        self._counter = _shared_counter(value, 0)

    def result_target(self) -> tuple[str, str] | None:
        """Where step records go, without waiting: ``("id", result id)``, ``("ref", goal
        ref)`` for a linked goal whose id may not be known yet, or ``None``."""
        if self._result_id:
            return ("id", str(self._result_id))
        goal = self._goal
        if goal is not None and goal._ref is not None:
            return ("ref", goal._ref)
        return None

    def link_goal(self, goal: _LinkableGoal) -> None:
        """Record steps on ``goal``'s Result and share its sequence counter (what
        ``TrackingCoordinator`` does with goal 0), without waiting for the Result's id:
        the records name the goal and reach the Result once the API has answered."""
        self._goal = goal
        self.delegate_sequence_to(goal)

    @property
    def is_enabled(self) -> bool:
        """Whether tracking records anything: a run id is enough."""
        return bool(self.run_id)

    @property
    def has_client(self) -> bool:
        return self.client is not None

    def get_run_uuid(self) -> uuid.UUID | None:
        """``run_id`` as a UUID, or ``None`` (logged once) when it is not one."""
        return self._as_uuid("run_id", self.run_id)

    def get_result_uuid(self) -> uuid.UUID | None:
        """``parent_result_id`` as a UUID, or ``None`` (logged once) when it is not one."""
        return self._as_uuid("parent_result_id", self._result_id)

    def _as_uuid(self, field: str, value: str | None) -> uuid.UUID | None:
        if not value:
            return None
        try:
            return uuid.UUID(str(value))
        except ValueError:
            if field not in self._warned:
                self._warned.add(field)
                self.logger.warning(
                    "hackagent_otel: %s %r is not a UUID; the HackAgent API will not accept "
                    "its records",
                    field,
                    value,
                )
            return None

    # -- sequence numbers ----------------------------------------------------------
    @property
    def sequence_counter(self) -> int:
        return self._delegate.sequence_counter if self._delegate else self._counter.value

    @sequence_counter.setter
    def sequence_counter(self, value: int) -> None:
        self._counter.value = value

    def increment_sequence(self) -> int:
        """Return the next sequence number for this context's result."""
        delegate = self._delegate
        if delegate is None:
            return self._counter.next()
        next_sequence = getattr(delegate, "_next_sequence", None)
        if next_sequence is not None:  # our goal Context: its own lock serves both
            return int(next_sequence())
        with self._delegate_lock:
            delegate.sequence_counter += 1
            return delegate.sequence_counter

    def delegate_sequence_to(self, ctx: _HasSequenceCounter) -> None:
        """Share ``ctx.sequence_counter`` (a per-goal tracker's context) from now on."""
        self._delegate = ctx

    # -- metadata --------------------------------------------------------------------
    def add_metadata(self, key: str, value: Any) -> None:
        self.metadata[key] = value

    def get_metadata(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @classmethod
    def create_disabled(cls) -> TrackingContext:
        """A context with tracking off: steps run untouched, updates return False."""
        return cls(client=None, run_id=None, parent_result_id=None)

    def __repr__(self) -> str:
        return (
            f"TrackingContext(run_id={self.run_id!r}, parent_result_id={self._result_id!r}, "
            f"client={type(self.client).__name__ if self.client is not None else None}, "
            f"sequence_counter={self.sequence_counter})"
        )
