"""The delivery service's mode: where records go next, and the one place it changes.

:class:`Mode` says where a submitted record goes; :class:`ModeMachine` changes it, only
along :data:`TRANSITIONS`, always with a reason that is logged. An event that has no
edge from the current mode changes nothing (the API failing again while spooling, a full
queue while the outbox is down). docs/architecture.md shows the same table.

Pure: no threads, no locks, no I/O beyond the log line; the service calls it under its
own lock.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

__all__ = ["TRANSITIONS", "Change", "Event", "Mode", "ModeMachine"]

_log = logging.getLogger("hackagent_otel.delivery")


class Mode(str, enum.Enum):
    """Where records go. A ``str`` so that ``mode == "spooling"`` reads naturally."""

    #: Sender threads send from the memory queue; the outbox is only looked at.
    DIRECT = "direct"
    #: Records go to the outbox; the drain sends its rows in order (no sender: they wait).
    SPOOLING = "spooling"
    #: The outbox cannot be written: senders deliver from memory, retrying without end,
    #: what no longer fits is dropped and counted, and the outbox is probed with backoff.
    MEMORY_ONLY = "memory_only"
    #: Shut down: nothing more is taken.
    CLOSED = "closed"


class Event(str, enum.Enum):
    """What happened, in the words the log and the stats use."""

    API_UNAVAILABLE = "the API stayed unavailable past the retry budget"
    QUEUE_FULL = "the delivery queue is full"
    OUTBOX_HAS_ROWS = "the outbox holds rows to deliver"
    OUTBOX_DRAINED = "the outbox is drained"
    OUTBOX_FAILED = "the outbox cannot be written"
    OUTBOX_WRITABLE = "the outbox can be written again"
    SHUTDOWN = "shutdown"


TRANSITIONS: dict[tuple[Mode, Event], Mode] = {
    (Mode.DIRECT, Event.API_UNAVAILABLE): Mode.SPOOLING,
    (Mode.DIRECT, Event.QUEUE_FULL): Mode.SPOOLING,
    (Mode.DIRECT, Event.OUTBOX_HAS_ROWS): Mode.SPOOLING,
    (Mode.DIRECT, Event.OUTBOX_FAILED): Mode.MEMORY_ONLY,
    (Mode.SPOOLING, Event.OUTBOX_DRAINED): Mode.DIRECT,
    (Mode.SPOOLING, Event.OUTBOX_FAILED): Mode.MEMORY_ONLY,
    (Mode.MEMORY_ONLY, Event.OUTBOX_WRITABLE): Mode.SPOOLING,
    (Mode.DIRECT, Event.SHUTDOWN): Mode.CLOSED,
    (Mode.SPOOLING, Event.SHUTDOWN): Mode.CLOSED,
    (Mode.MEMORY_ONLY, Event.SHUTDOWN): Mode.CLOSED,
}


@dataclass(frozen=True)
class Change:
    """One mode change: from, to, the event and its detail."""

    before: Mode
    after: Mode
    event: Event
    detail: str


class ModeMachine:
    """The current mode and its history's last step; changes only through :meth:`change`."""

    def __init__(self, initial: Mode = Mode.DIRECT) -> None:
        self.mode = initial
        self.last: Change | None = None
        self.changes = 0

    def change(self, event: Event, detail: str = "") -> bool:
        """Follow ``event``'s edge from the current mode, if there is one; True if taken."""
        after = TRANSITIONS.get((self.mode, event))
        if after is None:
            return False
        self.last = Change(self.mode, after, event, detail)
        self.changes += 1
        level = logging.WARNING if event is Event.OUTBOX_FAILED else logging.INFO
        _log.log(
            level,
            "delivery %s -> %s: %s%s",
            self.mode.value,
            after.value,
            event.value,
            f" ({detail})" if detail else "",
        )
        self.mode = after
        return True
