"""Repeated log lines of the bridge: one per kind per interval, with how many were held back."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hackagent_otel.bridge._throttle import (
    MAX_KEYS,
    Throttle,
    ThrottledLog,
    ThrottleFilter,
    throttled_exception_handler,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_then_the_count_of_those_held_back() -> None:
    clock = Clock()
    throttle = Throttle(5.0, clock)

    assert throttle.admit("a") == 0
    assert [throttle.admit("a") for _ in range(3)] == [None, None, None]
    assert throttle.admit("b") == 0  # another kind is not held back by the first
    clock.now += 5.0
    assert throttle.admit("a") == 3
    assert throttle.admit("a") is None


def test_the_kinds_remembered_are_bounded_oldest_forgotten_first() -> None:
    clock = Clock()
    throttle = Throttle(5.0, clock)
    for key in range(MAX_KEYS + 10):
        assert throttle.admit(key) == 0

    assert throttle.admit(MAX_KEYS + 9) is None  # recent: still held back
    assert throttle.admit(0) == 0  # forgotten: logged again
    assert len(throttle._seen) == MAX_KEYS


def test_a_throttled_log_writes_the_first_line_and_a_traceback_only_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("test.throttle"), Throttle(5.0, clock))
    for attempt in range(4):
        try:
            raise IndexError(attempt)
        except IndexError:
            log.warning("attempt %d failed: 100%% sure", attempt, key="bug", exc_info=True)
    clock.now += 6
    log.warning("attempt %d failed", 9, key="bug")

    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "attempt 0 failed: 100% sure",
        "attempt 9 failed (+3 similar in the last 5 s)",
    ]
    assert caplog.records[0].exc_info is not None


def test_a_filter_lets_one_record_of_each_template_through_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    logger = logging.getLogger("test.throttle.filter")
    throttle_filter = ThrottleFilter(Throttle(5.0, clock))
    logger.addFilter(throttle_filter)
    try:
        for fd in range(1000):
            logger.error("socket.accept() out of system resource (fd %d)", fd)
        logger.warning("Invalid HTTP request received.")
        clock.now += 5
        logger.error("socket.accept() out of system resource (fd %d)", 7)
    finally:
        logger.removeFilter(throttle_filter)

    assert [r.getMessage() for r in caplog.records] == [
        "socket.accept() out of system resource (fd 0)",
        "Invalid HTTP request received.",
        "socket.accept() out of system resource (fd 7) (+999 similar in the last 5 s)",
    ]


def test_the_event_loop_reports_each_kind_of_trouble_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(throttled_exception_handler(Throttle(5.0, clock)))
    try:
        for fd in range(500):  # asyncio's own lines: the same message, a different socket
            error = OSError(24, "Too many open files")
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": error, "fd": fd}
            )
        clock.now += 5
        loop.call_exception_handler({"message": "socket.accept() out of system resource"})
    finally:
        loop.close()

    messages = [r.getMessage().splitlines()[0] for r in caplog.records]
    assert messages == [
        "socket.accept() out of system resource",
        "socket.accept() out of system resource (+499 similar in the last 5 s)",
    ]
