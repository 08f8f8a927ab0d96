"""The walk: any object -> a bounded, secret-free tree JSON can hold.

:class:`Walker` makes one pass over one value: it redacts what the key policy names
secret (remembering it in the secret memory it is given), writes what JSON cannot hold
as a readable stand-in, and cuts strings, containers and nesting where the value's
budget (:mod:`._budget`) runs out, with a marker saying how much was left out. The
fast paths (:mod:`._fast`) mirror it for the shapes they serve.

Touches only the budget of its own pass and the secret memory it is handed (values
under secret keys are remembered); reads the value, never changes it.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any, Final

from hackagent_otel._sanitize._budget import (
    BOOL_OR_NONE_COST,
    CYCLE_COST,
    FLOAT_COST,
    INT_COST,
    KEY_COST,
    MAX_INT_BITS,
    MIN_STRING_CUT,
    STAND_IN_COST,
    STRING_COST,
    Limits,
)
from hackagent_otel._sanitize._keys import (
    CLIENT_KEYS,
    REDACTED,
    KeyPolicy,
    is_plain,
    secret_pairs,
)
from hackagent_otel._sanitize._memory import SecretMemory
from hackagent_otel._sanitize._shapes import (
    as_plain_structure,
    is_secret_like,
    revealed,
    safe_str,
    utf8_text,
)

#: What a ``SecretStr``-like object costs: it is written as the redaction marker.
_REDACTED_COST: Final = len(REDACTED) + STRING_COST


class Walker:
    """One sanitizing pass over one value, with its own budget and cycle guard."""

    __slots__ = ("budget", "limits", "memory", "policy", "seen")

    def __init__(self, limits: Limits, policy: KeyPolicy, memory: SecretMemory) -> None:
        self.limits = limits
        self.budget = limits.max_total
        self.policy = policy
        self.memory = memory
        self.seen: set[int] = set()

    def walk(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is bool or value is None:
            self.budget -= BOOL_OR_NONE_COST
            return value
        if kind is int:
            if value.bit_length() > MAX_INT_BITS:
                return self._string(_int_text(value))
            self.budget -= INT_COST
            return value
        if kind is float:
            self.budget -= FLOAT_COST
            return value if math.isfinite(value) else _float_name(value)
        if isinstance(value, Mapping):
            return self._container(value, depth, self._mapping)
        if isinstance(value, (list, tuple)):
            return self._container(value, depth, self._sequence)
        if isinstance(value, (set, frozenset)):
            return self._container(value, depth, self._set)
        return self._other(value, depth)

    def _string(self, value: str) -> str:
        value = self._cap(value, min(self.limits.max_string, max(self.budget, MIN_STRING_CUT)))
        self.budget -= len(value) + STRING_COST
        return value

    def _cap(self, value: str, limit: int | None = None) -> str:
        limit = self.limits.max_string if limit is None else limit
        if len(value) > limit:
            value = f"{value[:limit]}...[{len(value) - limit} more chars]"
        return value

    def _container(self, value: Any, depth: int, convert: Callable[[Any, int], Any]) -> Any:
        if depth >= self.limits.max_depth:
            self.budget -= STAND_IN_COST
            return f"<{type(value).__name__} nested too deep>"
        marker = id(value)
        if marker in self.seen:
            self.budget -= CYCLE_COST
            return "<cycle>"
        self.seen.add(marker)
        try:
            return convert(value, depth + 1)
        finally:
            self.seen.discard(marker)

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        items = iter(value.items())
        for index, (raw_key, item) in enumerate(items):
            if index >= self.limits.max_items or self.budget <= 0:
                out[_unique_key("...", out)] = f"{len(value) - index} more keys"
                break
            full_key = _key_text(raw_key)
            key = _unique_key(self._cap(full_key), out)
            self.budget -= len(key) + KEY_COST
            if self.policy.is_secret(full_key):
                self.memory.remember_within(item)
                out[key] = REDACTED
            elif key in CLIENT_KEYS and not is_plain(item):
                out[key] = f"<{type(item).__name__}>"
            else:
                out[key] = self.walk(item, depth)
        return out

    def _sequence(self, value: Sequence[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        pairs = secret_pairs(value, self.policy, self.limits.max_items)
        for index, item in enumerate(value):
            if index >= self.limits.max_items or self.budget <= 0:
                out.append(f"...{len(value) - index} more items")
                break
            if pairs and index in pairs:
                self.memory.remember_within(item[1])
                # The name stays readable, the value goes.
                out.append(self.walk([item[0], REDACTED], depth))
            else:
                out.append(self.walk(item, depth))
        return out

    def _set(self, value: set[Any] | frozenset[Any], depth: int) -> list[Any]:
        try:
            ordered: list[Any] = sorted(value)
        except TypeError:
            ordered = sorted(value, key=repr)
        return self._sequence(ordered, depth)

    def _other(self, value: Any, depth: int) -> Any:
        if is_secret_like(value):  # SecretStr, SecretBytes: redacted under any key
            text = revealed(value)
            if text:
                self.memory.remember(text)
            self.budget -= _REDACTED_COST
            return REDACTED
        if isinstance(value, Enum):
            return self.walk(value.value, depth)
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            text = utf8_text(data)
            return self._string(f"<{len(data)} bytes>" if text is None else text)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return self._string(value.isoformat())
        if isinstance(value, (uuid.UUID, Decimal, PurePath)):
            return self._string(str(value))
        if isinstance(value, (int, float)):  # bool/int/float subclasses (numpy-like scalars)
            return self.walk(int(value) if isinstance(value, int) else float(value), depth)
        array_like = _as_python_scalar_or_list(value, self.limits.max_items)
        if isinstance(array_like, _Rows):
            return self._container(array_like, depth, self._sequence)
        if array_like is not None:
            return self.walk(array_like, depth)
        converted = as_plain_structure(value)
        if converted is not None:
            return self._container(converted, depth, self._mapping)
        self.budget -= STAND_IN_COST
        return f"<{type(value).__name__}>"


def _float_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _key_text(raw_key: Any) -> str:
    """The text of a mapping key (JSON object keys are strings)."""
    if isinstance(raw_key, str):
        return raw_key
    if isinstance(raw_key, Enum):
        return safe_str(raw_key.value)
    return safe_str(raw_key)


def _unique_key(key: str, taken: Mapping[str, Any]) -> str:
    """``key``, primed until it is not in ``taken``: two distinct keys never merge."""
    while key in taken:
        key = f"{key}'"
    return key


def _int_text(value: int) -> str:
    """Decimal text of an int too big for JSON consumers (beyond 64 bits)."""
    try:
        return str(value)
    except ValueError:  # beyond the interpreter's int-to-str digit limit
        return f"<int of {value.bit_length()} bits>"


def _as_python_scalar_or_list(value: Any, max_items: int) -> Any:
    """NumPy-style scalars and arrays (``.item()`` / ``.tolist()``) as Python values.

    Read by structure: an array of more than ``max_items`` elements is never converted
    whole (a 240 MB one took 1.7 s and 1.1 GB of memory on the caller's thread), but
    walked as the sequence of its rows (:class:`_Rows`), each read only when the walk's
    caps reach it.
    """
    if not hasattr(value, "dtype"):
        return None
    try:
        shape = getattr(value, "shape", ())
        size = getattr(value, "size", 1)
        if shape and isinstance(size, int) and size > max_items:
            return _Rows(value)
        converted = value.tolist() if hasattr(value, "tolist") else value.item()
    except Exception:
        return None
    return converted if isinstance(converted, (list, str, int, float, bool)) else None


class _Rows(Sequence[Any]):
    """An array's first axis as a sequence: a row (a smaller array or a scalar) is
    taken only when the walk reaches it, as a view, never copied whole."""

    __slots__ = ("_array",)

    def __init__(self, array: Any) -> None:
        self._array = array

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __getitem__(self, index: Any) -> Any:
        return self._array[index]
