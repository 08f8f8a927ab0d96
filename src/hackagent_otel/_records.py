"""The records hackagent-otel delivers: one HackAgent API call each.

A :class:`Record` is what the mapping produces and what delivery sends, spools to the
outbox and retries. It carries everything needed to make the call later, in another
process if need be, so it is plain data that round-trips through JSON.

A record may depend on an earlier record's answer: the API assigns a Result's id in the
201 answer to its creation, and every later call of that goal names it. The creation
``provides`` a name (bound to its answer's ``id``); a dependent ``needs`` that name and
carries :data:`REF` in its path, filled in just before it is sent. A dependent shares
its provider's ordering key, so it always leaves after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hackagent_otel._json import ascii_bytes_encoder, compact_encoder

Method = Literal["POST", "PATCH"]

#: Record kinds, one per HackAgent call the tracker makes.
TRACE: Literal["trace"] = "trace"
RUN_UPDATE: Literal["run_update"] = "run_update"
RESULT_UPDATE: Literal["result_update"] = "result_update"
RESULT_CREATE: Literal["result_create"] = "result_create"
RecordKind = Literal["trace", "run_update", "result_update", "result_create"]

#: Bodies come from the mapping or from the outbox's JSON, always fresh trees.
_encode = compact_encoder(ensure_ascii=True)
#: The same bytes, by orjson where it is installed (see :mod:`._json`).
_encode_bytes = ascii_bytes_encoder()

#: The placeholder in a dependent record's path that its provider's answer fills in.
REF = "{ref}"


@dataclass(frozen=True, slots=True)
class Request:
    """One API call as it goes on the wire: method, path and the exact body bytes.

    This is what a sender sends and what the outbox stores, so a row is sent as it was
    written, without being parsed and encoded again.
    """

    method: str
    path: str
    body: bytes


#: Characters an API-assigned id may have to be put into a path (UUIDs, ints, slugs).
_SAFE_REF = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def safe_ref(value: object) -> str | None:
    """``value`` as a path segment, or ``None`` when it cannot be one safely."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    if not text or len(text) > 200 or not _SAFE_REF.issuperset(text) or text in (".", ".."):
        return None
    return text


@dataclass(slots=True)
class Call:
    """A record as delivery holds it: the body already encoded, exactly as it is sent.

    Made once from a :class:`Record` (:meth:`from_record`) and from then on moved
    between memory, the outbox and the API without being parsed or encoded again.
    Read-only by convention (see :class:`Record`).
    """

    kind: str
    method: str
    path: str
    body: bytes
    ordering_key: str
    created_at: float = field(default=0.0, compare=False)
    provides: str | None = None
    needs: str | None = None

    @classmethod
    def from_record(cls, record: Record) -> Call:
        """Encode ``record``; raises ``TypeError``/``ValueError`` if its body is not JSON."""
        return cls(
            record.kind,
            record.method,
            record.path,
            _encode_bytes(record.body),
            record.ordering_key,
            record.created_at,
            record.provides,
            record.needs,
        )

    def request(self, ref: str | None = None) -> Request:
        """The call as sent; a dependent's ``ref`` (its provider's id) fills :data:`REF`."""
        if self.needs is None:
            return Request(self.method, self.path, self.body)
        if ref is None:
            raise ValueError(f"the call waits for {self.needs!r}; its path is not known yet")
        return Request(self.method, self.path.replace(REF, ref), self.body)

    def parsed_body(self) -> Any:
        """The body as JSON values (for inspection: delivery sends the bytes as they are)."""
        return json.loads(self.body)

    def resolved(self, ref: str) -> Call:
        """This call with its provider's id filled in (no longer dependent)."""
        if self.needs is None:
            return self
        return Call(
            self.kind,
            self.method,
            self.path.replace(REF, ref),
            self.body,
            self.ordering_key,
            self.created_at,
            self.provides,
            None,
        )


@dataclass(slots=True)
class Record:
    """One HackAgent API call, ready to send.

    ``ordering_key`` groups records that must reach the API in the order they were
    produced (the result id for traces and result updates, the run id for run updates);
    records with different keys may be delivered in any order relative to each other.

    Read-only by convention, not ``frozen`` (as :class:`~._spanview.SpanView`): a frozen
    dataclass sets each field through ``object.__setattr__``, a wrapped call with an
    argument tuple each, about 10,000 instructions more per object than plain
    assignments; the bridge builds a record and a call per record, 1,360 objects per
    510-span export.
    """

    kind: RecordKind
    method: Method
    path: str
    body: dict[str, Any]
    ordering_key: str
    #: Seconds since the epoch when the record was produced (for latency figures).
    created_at: float = field(default=0.0, compare=False)
    #: A name bound to this call's answer ``id`` once delivered (a Result's creation).
    provides: str | None = None
    #: The name whose bound value replaces :data:`REF` in ``path`` before sending.
    needs: str | None = None

    def __post_init__(self) -> None:
        if (self.needs is None) == (REF in self.path):
            raise ValueError(f"a record needs a value exactly when its path holds {REF}")

    def body_json(self) -> str:
        """The request body as sent: compact JSON, ASCII only.

        Raises ``TypeError`` or ``ValueError`` if the body is not JSON-safe.
        """
        return _encode(self.body)

    def request(self) -> Request:
        """The call as sent, for a record that needs no earlier answer.

        Raises ``TypeError`` or ``ValueError`` if the body is not JSON-safe, and
        ``ValueError`` for a dependent record (its path is not known yet).
        """
        if self.needs is not None:
            raise ValueError(f"the record waits for {self.needs!r}; its path is not known yet")
        return Request(self.method, self.path, _encode_bytes(self.body))

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
                "provides": self.provides,
                "needs": self.needs,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Record:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a record is a JSON object")
        kind, method = data.get("kind"), data.get("method")
        if kind not in (TRACE, RUN_UPDATE, RESULT_UPDATE, RESULT_CREATE):
            raise ValueError(f"unknown record kind {kind!r}")
        if method not in ("POST", "PATCH"):
            raise ValueError(f"unknown method {method!r}")
        path, body, key = data.get("path"), data.get("body"), data.get("ordering_key")
        if not isinstance(path, str) or not isinstance(body, dict) or not isinstance(key, str):
            raise ValueError("a record needs a str path, an object body and a str ordering_key")
        created_at = data.get("created_at", 0.0)
        provides, needs = data.get("provides"), data.get("needs")
        if not isinstance(provides, (str, type(None))) or not isinstance(needs, (str, type(None))):
            raise ValueError("provides and needs are str or null")
        return cls(
            kind=kind,
            method=method,
            path=path,
            body=body,
            ordering_key=key,
            created_at=float(created_at) if isinstance(created_at, (int, float)) else 0.0,
            provides=provides,
            needs=needs,
        )
