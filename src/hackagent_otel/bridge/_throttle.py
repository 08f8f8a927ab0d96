"""Repeated log lines, at most one per interval each, with a count of those held back.

A hostile or broken client can make the bridge log the same line for every request,
connection or accept attempt; written in full each time, a few seconds of that filled
tens of megabytes. :class:`Throttle` decides, per key, whether a line goes out now:
the first of a kind passes, the next ones within ``interval`` seconds are only counted,
and the first to pass after that says how many were held back.

Two ways to use it:

* :class:`ThrottledLog` for the bridge's own repeated lines, keyed by their message
  template (or a key of their own);
* :class:`ThrottleFilter`, a :class:`logging.Filter` for loggers the bridge does not
  write itself (uvicorn's invalid-request warnings), keyed by the logger, level and
  message template;
* :func:`throttled_exception_handler`, for an event loop, keyed by asyncio's own short
  description of what went wrong (``socket.accept() out of system resource``): its
  full lines carry reprs of sockets and timer handles that differ every time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "DEFAULT_INTERVAL",
    "Throttle",
    "ThrottleFilter",
    "ThrottledLog",
    "throttled_exception_handler",
]

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


def _held_back(count: int, interval: float) -> str:
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
        suffix = _held_back(held, self.throttle.interval).replace("%", "%%")
        self.logger.log(level, message + suffix, *args, exc_info=exc_info)
        return True

    def warning(
        self, message: str, *args: object, key: object = None, exc_info: bool = False
    ) -> bool:
        return self.log(logging.WARNING, message, *args, key=key, exc_info=exc_info)

    def info(self, message: str, *args: object, key: object = None) -> bool:
        return self.log(logging.INFO, message, *args, key=key)


class ThrottleFilter(logging.Filter):
    """Let through one record per (logger, level, message template) per interval.

    Attach it to a logger (``logger.addFilter``); a record that passes after others
    were held back gets the count appended to its message.
    """

    def __init__(self, throttle: Throttle | None = None) -> None:
        super().__init__()
        self.throttle = throttle or Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        held = self.throttle.admit((record.name, record.levelno, str(record.msg)))
        if held is None:
            return False
        if held:
            record.msg = record.getMessage() + _held_back(held, self.throttle.interval)
            record.args = None
        return True


ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]


def throttled_exception_handler(throttle: Throttle | None = None) -> ExceptionHandler:
    """An event loop exception handler (``loop.set_exception_handler``) that hands each
    kind of trouble to the loop's default handler at most once per interval."""
    throttle = throttle or Throttle()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "unhandled exception in the event loop")
        held = throttle.admit(message)
        if held is None:
            return
        if held:
            context = {**context, "message": message + _held_back(held, throttle.interval)}
        loop.default_exception_handler(context)

    return handle
