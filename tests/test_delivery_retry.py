"""Retry classification, backoff growth and jitter, and Retry-After parsing."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from hackagent_otel._delivery.retry import RetryPolicy, classify_status, parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (204, "delivered"),
        (408, "transient"),
        (429, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (500, "rejected"),
        (501, "rejected"),
        (400, "rejected"),
        (401, "rejected"),
        (403, "rejected"),
        (404, "rejected"),
        (409, "rejected"),
        (413, "rejected"),
        (422, "rejected"),
        (301, "rejected"),
        (100, "rejected"),
    ],
)
def test_only_408_429_502_503_504_are_retried_and_500_is_final(status: int, expected: str) -> None:
    assert classify_status(status) == expected


def test_retry_after_delta_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("1.5") == 1.5


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = datetime(2030, 1, 1, 0, 0, 0, tzinfo=timezone.utc).timestamp()
    header = format_datetime(datetime(2030, 1, 1, 0, 0, 42, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after(header, now=lambda: now) == pytest.approx(42.0)


def test_retry_after_date_in_the_past_means_no_wait() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_retry_after_is_capped() -> None:
    assert parse_retry_after("999999", cap=60) == 60.0
    far = format_datetime(datetime(2100, 1, 1, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after(far, cap=60) == 60.0


@pytest.mark.parametrize("garbage", [None, "", "soon", "-5", "nan", "inf", "12 parsecs", "Mon, 99"])
def test_retry_after_garbage_is_ignored(garbage: str | None) -> None:
    assert parse_retry_after(garbage) is None


def test_backoff_grows_exponentially_up_to_max_without_jitter() -> None:
    policy = RetryPolicy(
        initial_backoff=1, multiplier=2, max_backoff=5, max_elapsed=None, jitter="none"
    )
    backoff = policy.backoff()
    assert [backoff.next_wait() for _ in range(5)] == [1, 2, 4, 5, 5]


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    draws = iter([0.0, 1.0, 0.5])
    policy = RetryPolicy(
        initial_backoff=1, multiplier=2, max_elapsed=None, random=lambda: next(draws)
    )
    backoff = policy.backoff()
    assert [backoff.next_wait() for _ in range(3)] == [0.0, 2.0, 2.0]


def test_retry_after_longer_than_the_drawn_wait_wins() -> None:
    policy = RetryPolicy(initial_backoff=0.5, jitter="none", max_elapsed=None, max_retry_after=10)
    backoff = policy.backoff()
    assert backoff.next_wait(retry_after=3.0) == 3.0
    assert backoff.next_wait(retry_after=0.0) == 0.75
    assert backoff.next_wait(retry_after=60.0) == 10.0


def test_budget_is_spent_when_the_next_wait_would_end_past_max_elapsed() -> None:
    clock = FakeClock()
    policy = RetryPolicy(initial_backoff=1, multiplier=2, jitter="none", max_elapsed=5, clock=clock)
    backoff = policy.backoff()
    assert backoff.next_wait() == 1
    clock.now += 1
    assert backoff.next_wait() == 2
    clock.now += 2
    assert backoff.next_wait() is None  # 3 s elapsed + 4 s wait > 5 s
    backoff.reset()
    assert backoff.next_wait() == 1


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(initial_backoff=-1)
