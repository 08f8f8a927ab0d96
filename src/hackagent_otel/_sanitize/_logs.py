"""A logging filter that takes one sanitizer's known secrets out of log records.

Whoever owns a sanitizer puts a :class:`SecretScrubbingFilter` for it on the loggers
the package logs on: the set-up one for the sanitizer in force for this process's
tracker (whichever ``configure()`` made last), the bridge one for its own. Touches the
log records it is given (their message, traceback and stack text) and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from hackagent_otel._sanitize._memory import SecretMemory
from hackagent_otel._sanitize._sanitizer import Sanitizer

_log_formatter = logging.Formatter()


class SecretScrubbingFilter(logging.Filter):
    """Takes known secrets out of a log record's message, traceback and stack.

    ``sanitizer``: the one whose known secrets are scrubbed, or a function that gives
    the one in force at each record. A record is changed only when it holds a known
    secret: its message is then stored already formatted, and its traceback as
    scrubbed text (``exc_info`` cleared, so no formatter or handler can format the raw
    exception again).
    """

    def __init__(self, sanitizer: Sanitizer | Callable[[], Sanitizer]) -> None:
        super().__init__()
        if isinstance(sanitizer, Sanitizer):
            fixed = sanitizer
            self._sanitizer: Callable[[], Sanitizer] = lambda: fixed
        else:
            self._sanitizer = sanitizer

    def filter(self, record: logging.LogRecord) -> bool:
        memory = self._sanitizer().memory
        if memory.has_any():
            # A message whose arguments cannot be formatted is left as it is.
            with contextlib.suppress(Exception):
                _scrub_record(record, memory)
        return True

    def attach(self, *names: str) -> None:
        """Scrub what the named loggers log (idempotent).

        A logger's filters apply to records logged on that logger itself, not to those
        of its children, so every logger the package logs on is named.
        """
        for name in names:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)


def _scrub_record(record: logging.LogRecord, memory: SecretMemory) -> None:
    message = record.getMessage()
    clean = memory.scrub(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        text = _log_formatter.formatException(record.exc_info)
        clean = memory.scrub(text)
        if clean != text:
            record.exc_text, record.exc_info = clean, None
    elif record.exc_text:
        record.exc_text = memory.scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = memory.scrub(record.stack_info)
