"""The records hackagent-otel delivers: one HackAgent API call each.

A :class:`Record` is what the mapping produces and what delivery sends, spools to the
outbox and retries. It carries everything needed to make the call later, in another
process if need be, so it is plain data that round-trips through JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hackagent_otel._json import compact_encoder

Method = Literal["POST", "PATCH"]

#: Record kinds, one per HackAgent call the tracker makes.
TRACE: Literal["trace"] = "trace"
RUN_UPDATE: Literal["run_update"] = "run_update"
RESULT_UPDATE: Literal["result_update"] = "result_update"
RecordKind = Literal["trace", "run_update", "result_update"]

#: Bodies come from the mapping or from the outbox's JSON, always fresh trees.
_encode = compact_encoder(ensure_ascii=True)


@dataclass(frozen=True, slots=True)
class Record:
    """One HackAgent API call, ready to send.

    ``ordering_key`` groups records that must reach the API in the order they were
    produced (the result id for traces and result updates, the run id for run updates);
    records with different keys may be delivered in any order relative to each other.
    """

    kind: RecordKind
    method: Method
    path: str
    body: dict[str, Any]
    ordering_key: str
    #: Seconds since the epoch when the record was produced (for latency figures).
    created_at: float = field(default=0.0, compare=False)

    def body_json(self) -> str:
        """The request body as sent: compact JSON, ASCII only.

        Raises ``TypeError`` or ``ValueError`` if the body is not JSON-safe.
        """
        return _encode(self.body)

    def to_json(self) -> str:
        """Serialize for the outbox; the body is already JSON-safe."""
        return _encode(
            {
                "kind": self.kind,
                "method": self.method,
                "path": self.path,
                "body": self.body,
                "ordering_key": self.ordering_key,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Record:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a record is a JSON object")
        kind, method = data.get("kind"), data.get("method")
        if kind not in (TRACE, RUN_UPDATE, RESULT_UPDATE):
            raise ValueError(f"unknown record kind {kind!r}")
        if method not in ("POST", "PATCH"):
            raise ValueError(f"unknown method {method!r}")
        path, body, key = data.get("path"), data.get("body"), data.get("ordering_key")
        if not isinstance(path, str) or not isinstance(body, dict) or not isinstance(key, str):
            raise ValueError("a record needs a str path, an object body and a str ordering_key")
        created_at = data.get("created_at", 0.0)
        return cls(
            kind=kind,
            method=method,
            path=path,
            body=body,
            ordering_key=key,
            created_at=float(created_at) if isinstance(created_at, (int, float)) else 0.0,
        )
