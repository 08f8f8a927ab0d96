"""What one attempt to deliver a record came to: delivered, worth retrying, or final.

Kept apart from the client so that the retry policy, the service and test doubles of a
sender can speak about outcomes without an HTTP client in sight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hackagent_otel._records import Record

__all__ = ["Delivered", "Outcome", "Rejected", "Sender", "Transient"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """The API accepted the record (any 2xx). ``body`` is the parsed JSON or ``None``."""

    status: int
    body: Any = None


@dataclass(frozen=True, slots=True)
class Transient:
    """Not delivered, worth retrying: 408/429/502/503/504, timeouts, connection errors.

    ``retry_after`` is the server's ``Retry-After`` in seconds (already capped), if any.
    """

    reason: str
    retry_after: float | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused for good (other 4xx, 500, unsendable record); ``status`` 0 if not HTTP."""

    status: int
    reason: str


Outcome = Delivered | Transient | Rejected


class Sender(Protocol):
    """Anything that can make one record's API call; :class:`HackAgentClient` is one.

    ``send`` must never raise for network trouble and must be safe to call from several
    threads at once.
    """

    def send(self, record: Record) -> Outcome:
        """Make the call once and say how it went."""
        ...

    def close(self) -> None:
        """Release connections; the sender is not used afterwards."""
        ...
