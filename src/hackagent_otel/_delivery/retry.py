"""Which failures are retried, how long to wait between tries, and Retry-After parsing.

Like the OpenTelemetry Collector's exporters, only 408, 429, 502, 503 and 504, timeouts
and connection errors are retried. 500 is final: a server that fails on a request
usually fails on it again, and a retried POST can create a duplicate record (the API has
no idempotency key). Waits grow exponentially with jitter so that many processes hitting
a recovering API do not retry in lockstep.
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Literal

__all__ = [
    "RETRYABLE_STATUSES",
    "Backoff",
    "RetryPolicy",
    "StatusClass",
    "classify_status",
    "parse_retry_after",
]

#: HTTP statuses worth another try.
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})

StatusClass = Literal["delivered", "transient", "rejected"]


def classify_status(status: int) -> StatusClass:
    """Sort an HTTP status: 2xx delivered, :data:`RETRYABLE_STATUSES` transient, else final.

    1xx and 3xx count as rejected: the client does not follow redirects, and a redirect
    of an API call means a misconfigured base URL, which retrying does not fix.
    """
    if 200 <= status < 300:
        return "delivered"
    if status in RETRYABLE_STATUSES:
        return "transient"
    return "rejected"


def parse_retry_after(
    value: str | None,
    *,
    now: Callable[[], float] = time.time,
    cap: float = 300.0,
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` if absent or garbage.

    Accepts delta-seconds (``"120"``) and an HTTP-date (``"Wed, 21 Oct 2015 07:28:00
    GMT"``, compared with ``now()``, wall-clock seconds). Dates in the past give 0.
    Results are capped to ``cap`` so a hostile or broken server cannot park delivery.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds):
        return min(seconds, cap) if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when.timestamp() - now()
    return min(max(delta, 0.0), cap)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between tries, and for how long to keep trying.

    Wait ``n`` (from 0) is drawn from the exponential ceiling
    ``min(max_backoff, initial_backoff * multiplier**n)``: with ``jitter="full"`` uniformly
    in ``[0, ceiling]``; with ``"none"`` exactly the ceiling. A server's ``Retry-After``
    replaces the drawn wait when longer (capped to ``max_retry_after``). ``max_elapsed``
    bounds the total time spent retrying one record before the caller gives up on direct
    delivery (``None``: no bound). ``random`` and ``clock`` are injectable for tests.
    """

    initial_backoff: float = 0.5
    multiplier: float = 1.5
    max_backoff: float = 30.0
    max_elapsed: float | None = 5.0
    jitter: Literal["full", "none"] = "full"
    max_retry_after: float = 300.0
    random: Callable[[], float] = field(default=_random.random, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff times must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if self.max_elapsed is not None and self.max_elapsed < 0:
            raise ValueError("max_elapsed must be >= 0 or None")

    def backoff(self) -> Backoff:
        """A fresh sequence of waits for one record (or one outage)."""
        return Backoff(self)


class Backoff:
    """The waits of one retry sequence; call :meth:`next_wait` after each failure."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempts = 0
        self.started = policy.clock()

    def next_wait(self, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next try, or ``None`` when the budget is spent.

        The budget is spent when waiting would end after ``started + max_elapsed``.
        """
        policy = self.policy
        ceiling = min(policy.max_backoff, policy.initial_backoff * policy.multiplier**self.attempts)
        wait = ceiling * policy.random() if policy.jitter == "full" else ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, policy.max_retry_after))
        self.attempts += 1
        if policy.max_elapsed is not None:
            elapsed = policy.clock() - self.started
            if elapsed + wait > policy.max_elapsed:
                return None
        return wait

    def reset(self) -> None:
        """Start over after a success."""
        self.attempts = 0
        self.started = self.policy.clock()
