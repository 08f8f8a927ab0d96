"""Repeated log lines, at most one per interval each, with a count of those held back.

A line that can repeat for every record, request or connection (a drop while the outbox
is down, a hostile client's refused request) is written in full the first time; the
next ones of its kind within ``interval`` seconds are only counted, and the first to go
out after that says how many were held back. :class:`Throttle` decides per key;
:class:`ThrottledLog` is a logger that asks it. Used by delivery and by the bridge
(which adds a logging filter and an event loop handler on top, in ``bridge._throttle``).
Imports nothing of ours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_INTERVAL", "MAX_KEYS", "Throttle", "ThrottledLog", "held_back"]

#: Seconds between two lines of the same kind.
DEFAULT_INTERVAL: Final = 5.0
#: Kinds remembered at once; past it the oldest is forgotten (so memory stays bounded
#: whatever a client makes the bridge log).
MAX_KEYS: Final = 256


class Throttle:
    """Per key: may a line go out now, and how many were held back since the last one.

    Thread-safe (decoding runs on worker threads, serving on the event loop).
    """

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (when the last line went out, lines held back since)
        self._seen: dict[object, tuple[float, int]] = {}

    def admit(self, key: object) -> int | None:
        """``None`` to hold the line back; else how many of its kind were held back."""
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return None
            if last is None and len(self._seen) >= MAX_KEYS:
                del self._seen[next(iter(self._seen))]
            self._seen.pop(key, None)  # re-inserted last: the dict stays oldest first
            self._seen[key] = (now, 0)
            return last[1] if last is not None else 0


def held_back(count: int, interval: float) -> str:
    return f" (+{count} similar in the last {interval:g} s)" if count else ""


class ThrottledLog:
    """A logger whose lines of one kind go out at most once per interval.

    A line's kind is its message template unless ``key`` names another (say, the type
    of an exception, so different bugs are not held back by each other).
    """

    def __init__(self, logger: logging.Logger, throttle: Throttle | None = None) -> None:
        self.logger = logger
        self.throttle = throttle or Throttle()

    def log(
        self,
        level: int,
        message: str,
        *args: object,
        key: object = None,
        exc_info: bool = False,
    ) -> bool:
        """Log ``message % args`` unless a line of its kind went out within the
        interval; whether it was logged. A traceback (``exc_info``) only goes out with
        the lines that do."""
        held = self.throttle.admit(message if key is None else key)
        if held is None:
            return False
        suffix = held_back(held, self.throttle.interval).replace("%", "%%")
        self.logger.log(level, message + suffix, *args, exc_info=exc_info)
        return True

    def warning(
        self, message: str, *args: object, key: object = None, exc_info: bool = False
    ) -> bool:
        return self.log(logging.WARNING, message, *args, key=key, exc_info=exc_info)

    def info(self, message: str, *args: object, key: object = None) -> bool:
        return self.log(logging.INFO, message, *args, key=key)
