"""The calls one attack made to a FakeHackAgentAPI, grouped so two runs can be compared:
per result (by goal index, ids the API gave mapped to ``<result N>``) and per run, and
every difference between two such groups, leaf by leaf, with the explicit allowances
for what ours is meant to send differently."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hackagent_otel.testing import FakeHackAgentAPI, ReceivedCall

REDACTED = "***REDACTED***"

#: One call: method, path and status, body (ids mapped; ``content.otel`` left out).
Call = tuple[str, str, "int | None", Any]


@dataclass
class AttackCalls:
    """What one attack sent, grouped.

    ``run``: the run's own status updates (``PATCH /run/{id}``), in arrival order;
    ``creations``: each goal's ``POST /run/{id}/result``, by goal index, and the order
    they arrived in; ``results``: per goal index, every call on its Result
    (``/result/{id}...``), in arrival order; ``other``: anything else (calls to a result
    no goal created, say): there should be none.
    """

    run: list[Call] = field(default_factory=list)
    creations: dict[int, list[Call]] = field(default_factory=dict)
    creation_order: list[int] = field(default_factory=list)
    results: dict[int, list[Call]] = field(default_factory=dict)
    other: list[Call] = field(default_factory=list)
    result_ids: dict[int, str] = field(default_factory=dict)

    def total(self) -> int:
        return (
            len(self.run)
            + sum(map(len, self.creations.values()))
            + sum(map(len, self.results.values()))
            + len(self.other)
        )


def attack_calls(api: FakeHackAgentAPI, run_id: str) -> AttackCalls:
    """Group ``api``'s calls for ``run_id``; each Result's goal index is read off the
    API's own copy of it (what its creation asked for)."""
    received = api.calls
    result_ids: dict[int, str] = {}
    for call in received:
        if call.path.startswith("/result/"):
            result_id = call.path.split("/")[2]
            payload = (api.result(result_id) or {}).get("request_payload")
            if isinstance(payload, dict) and isinstance(payload.get("goal_index"), int):
                result_ids[payload["goal_index"]] = result_id
    names = {result_id: f"<result {index}>" for index, result_id in result_ids.items()}
    grouped = AttackCalls(result_ids=result_ids)
    by_id = {result_id: index for index, result_id in result_ids.items()}
    for call in received:
        mapped = _mapped(call, names)
        if call.method == "PATCH" and call.path == f"/run/{run_id}":
            grouped.run.append(mapped)
        elif call.method == "POST" and call.path == f"/run/{run_id}/result":
            index = _goal_index(call.body)
            grouped.creations.setdefault(index, []).append(mapped)
            grouped.creation_order.append(index)
        elif call.path.startswith("/result/") and call.path.split("/")[2] in by_id:
            grouped.results.setdefault(by_id[call.path.split("/")[2]], []).append(mapped)
        else:
            grouped.other.append(mapped)
    return grouped


def _goal_index(body: Any) -> int:
    payload = body.get("request_payload") if isinstance(body, dict) else None
    index = payload.get("goal_index") if isinstance(payload, dict) else None
    return index if isinstance(index, int) else -1


def _mapped(call: ReceivedCall, names: dict[str, str]) -> Call:
    body = call.body
    if isinstance(body, dict) and isinstance(body.get("content"), dict):
        body = {**body, "content": {k: v for k, v in body["content"].items() if k != "otel"}}
    return (call.method, _renamed(call.path, names), call.status, _renamed(body, names))


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every API-assigned id in it replaced by its goal's name."""
    if isinstance(value, str):
        for result_id, name in names.items():
            if result_id in value:
                value = value.replace(result_id, name)
        return value
    if isinstance(value, dict):
        return {k: _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    return value


# -- differences -------------------------------------------------------------------------
_MISSING = "<not sent>"


@dataclass(frozen=True)
class Difference:
    """One leaf that differs: where (section, goal, call, then the JSON path in the
    call), what the original sent there and what ours sent."""

    where: tuple[Any, ...]
    original: Any
    ours: Any

    def __str__(self) -> str:
        path = "".join(f"[{part!r}]" for part in self.where)
        return f"{path}: original {_show(self.original)} / ours {_show(self.ours)}"


def _show(value: Any) -> str:
    text = value if value == _MISSING else json.dumps(value)
    return text if len(text) <= 300 else text[:300] + "..."


@dataclass(frozen=True)
class Allowance:
    """A difference ours is meant to make, stated exactly: the JSON path inside a call
    (from its body), what the original sent there and what ours sends instead."""

    reason: str
    path: tuple[str | int, ...]
    original: Any
    ours: Any

    def allows(self, difference: Difference) -> bool:
        return (
            tuple(difference.where[-len(self.path) :]) == self.path
            and difference.where[-len(self.path) - 1] == "body"
            and difference.original == self.original
            and difference.ours == self.ours
        )


def differences(original: AttackCalls, ours: AttackCalls) -> list[Difference]:
    """Every leaf where the two attacks' calls differ, per run and per result (the
    order of calls within each compared as well as their content)."""
    found: list[Difference] = []
    found += _diff_calls(("run",), original.run, ours.run)
    for index in sorted(set(original.creations) | set(ours.creations)):
        found += _diff_calls(
            ("creation", index), original.creations.get(index, []), ours.creations.get(index, [])
        )
    for index in sorted(set(original.results) | set(ours.results)):
        found += _diff_calls(
            ("result", index), original.results.get(index, []), ours.results.get(index, [])
        )
    found += _diff_calls(("other",), original.other, ours.other)
    return found


def _diff_calls(
    where: tuple[Any, ...], original: Sequence[Call], ours: Sequence[Call]
) -> list[Difference]:
    found: list[Difference] = []
    for n in range(max(len(original), len(ours))):
        if n >= len(ours):
            found.append(Difference((*where, n), _describe(original[n]), _MISSING))
        elif n >= len(original):
            found.append(Difference((*where, n), _MISSING, _describe(ours[n])))
        else:
            a, b = original[n], ours[n]
            for part, name in ((0, "method"), (1, "path"), (2, "status")):
                if a[part] != b[part]:
                    found.append(Difference((*where, n, name), a[part], b[part]))
            found += _diff_values((*where, n, "body"), a[3], b[3])
    return found


def _describe(call: Call) -> str:
    return f"{call[0]} {call[1]} -> {call[2]} {json.dumps(call[3])}"


def _diff_values(where: tuple[Any, ...], a: Any, b: Any) -> list[Difference]:
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[Difference] = []
        for key in [*a, *(k for k in b if k not in a)]:
            found += _diff_values((*where, key), a.get(key, _MISSING), b.get(key, _MISSING))
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for n, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff_values((*where, n), x, y)
        ]
    if a == b and type(a) is type(b):
        return []
    return [Difference(where, a, b)]


def unallowed(
    found: Iterable[Difference], allowances: Sequence[Allowance]
) -> tuple[list[Difference], set[Allowance]]:
    """The differences no allowance covers, and the allowances that covered one."""
    left: list[Difference] = []
    used: set[Allowance] = set()
    for difference in found:
        allowance = next((a for a in allowances if a.allows(difference)), None)
        if allowance is None:
            left.append(difference)
        else:
            used.add(allowance)
    return left, used


def report(left: Sequence[Difference]) -> str:
    """The differences, one a line, for an assertion message."""
    return f"{len(left)} difference(s) between the original's calls and ours:\n" + "\n".join(
        f"  {d}" for d in left
    )
