"""Repeated log lines, at most one per interval each, with a count of those held back.

A hostile or broken client can make the bridge log the same line for every request,
connection or accept attempt; written in full each time, a few seconds of that filled
tens of megabytes. :class:`Throttle` (from ``hackagent_otel._throttle``, which delivery
uses too) decides, per key, whether a line goes out now: the first of a kind passes,
the next ones within ``interval`` seconds are only counted, and the first to pass after
that says how many were held back.

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
from collections.abc import Callable
from typing import Any

from hackagent_otel._throttle import (
    DEFAULT_INTERVAL,
    MAX_KEYS,
    Throttle,
    ThrottledLog,
    held_back,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "MAX_KEYS",
    "Throttle",
    "ThrottleFilter",
    "ThrottledLog",
    "throttled_exception_handler",
]


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
            record.msg = record.getMessage() + held_back(held, self.throttle.interval)
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
            context = {**context, "message": message + held_back(held, throttle.interval)}
        loop.default_exception_handler(context)

    return handle
