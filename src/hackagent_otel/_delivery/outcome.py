"""What one attempt to deliver a record came to: delivered, worth retrying, or final.

Kept apart from the client so that the retry policy, the service and test doubles of a
sender can speak about outcomes without an HTTP client in sight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from hackagent_otel._records import Request

__all__ = ["Delivered", "Outcome", "Rejected", "Sender", "Transient"]


class Delivered:
    """The API accepted the record (any 2xx). ``body`` is the parsed JSON or ``None``.

    A client may hand over the answer's JSON text as ``json_text`` instead of ``body``:
    it is parsed when ``body`` is first read (text that is not JSON reads as ``None``).
    Delivery itself never reads it, so its sender threads do not parse every answer.
    Equal by status and body; not hashable, as a body may be a dict.
    """

    __slots__ = ("_body", "_json_text", "status")

    def __init__(self, status: int, body: Any = None, *, json_text: bytes | None = None) -> None:
        if body is not None and json_text is not None:
            raise ValueError("give body or json_text, not both")
        self.status = status
        self._body = body
        self._json_text = json_text

    @property
    def body(self) -> Any:
        text = self._json_text
        if text is not None:  # two threads at once may both parse it: same result
            try:
                self._body = json.loads(text)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
                self._body = None
            self._json_text = None
        return self._body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delivered):
            return NotImplemented
        return (self.status, self.body) == (other.status, other.body)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Delivered(status={self.status!r}, body={self.body!r})"


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
    """Anything that can make one API call; :class:`HackAgentClient` is one.

    ``send`` must never raise for network trouble and must be safe to call from several
    threads at once.
    """

    def send(self, request: Request) -> Outcome:
        """Make the call once and say how it went."""
        ...

    def close(self) -> None:
        """Release connections; the sender is not used afterwards."""
        ...
