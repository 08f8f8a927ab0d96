"""Fast paths that skip the walk where they can show it would change nothing.

Both mirror :class:`._walk.Walker`, check by check, at the costs of :mod:`._budget`:

* :func:`flat_text` (``dumps`` on the pipeline's thread): the JSON text of the common
  flat shapes (scalars; dicts of plain keys to scalars or short lists of scalars),
  checked with set operations and encoded by the C encoder;
* :func:`budget_if_unchanged` (``resanitize``, for values from elsewhere): whether a
  value ``json.loads`` made would come out of the walk unchanged, in a tight loop.

Whatever either cannot vouch for is left to the walk. Property-tested against the walk
in tests/test_sanitize.py and tests/test_mapping.py. Touches what the walk touches:
the key policy's learned key sets, and the secret memory (a flat dict's secret values
are remembered before they are redacted); never the caller's value.
"""

from __future__ import annotations

import math
from typing import Any, Final

from hackagent_otel._json import compact_encoder
from hackagent_otel._sanitize._budget import (
    BOOL_OR_NONE_COST,
    FLOAT_COST,
    INT_BOUND,
    INT_COST,
    KEY_COST,
    MAX_COST_PER_CHARACTER,
    MAX_INT_BITS,
    MIN_STRING_CUT,
    STRING_COST,
    Limits,
)
from hackagent_otel._sanitize._keys import (
    CLIENT_KEYS,
    PLAIN_KEY_MAX_LENGTH,
    REDACTED,
    KeyPolicy,
    is_plain,
    secret_pairs,
)
from hackagent_otel._sanitize._memory import SecretMemory

#: The compact, strict JSON encoder everything sanitized is written with.
encode: Final = compact_encoder(ensure_ascii=False)

_SCALAR_TYPES: Final = frozenset({str, int, float, bool, type(None)})
_FLAT_VALUE_TYPES: Final = _SCALAR_TYPES | {list, tuple}
_NEEDS_A_LOOK: Final = frozenset({int, list, tuple})
#: Dicts under limits less deep than this take the walk (the dict, its lists, their
#: scalars: three levels).
_FLAT_DEPTH: Final = 3


def flat_text(value: Any, limits: Limits, policy: KeyPolicy, memory: SecretMemory) -> str | None:
    """The JSON text of the walk's result for the common flat shapes, or ``None``.

    Scalars, and dicts of plain keys to scalars or to lists of scalars (metrics, counts,
    configs, input samples), need at most their secret keys redacted: they are checked
    with set operations and encoded by the C encoder, skipping the walker. The encoded
    text then bounds what the walker would have cut: every string is shorter than it,
    and the walker charges at most :data:`MAX_COST_PER_CHARACTER` of budget per
    character of it. Anything else answers ``None`` and takes the walk.
    """
    kind = type(value)
    if kind is not dict:
        return scalar_text(value, limits)
    if (
        len(value) > limits.max_items
        or limits.max_depth < _FLAT_DEPTH
        or limits.max_string < PLAIN_KEY_MAX_LENGTH
    ):
        return None
    # Checks and encoding read one copy: another thread may be changing the caller's
    # dict, and a key or value slipped in between them would skip redaction.
    snapshot = dict(value)
    if not snapshot.keys() <= policy.plain_keys:
        secrets = policy.secret_keys_among(snapshot.keys() - policy.plain_keys)
        if secrets is None:
            return None
        for key in secrets:
            memory.remember_within(snapshot[key])
            snapshot[key] = REDACTED
    types = set(map(type, snapshot.values()))
    if not types <= _FLAT_VALUE_TYPES:
        return None
    if not types.isdisjoint(_NEEDS_A_LOOK) and not _narrowed(snapshot, limits):
        return None
    try:
        text = encode(snapshot)
    except ValueError:  # NaN or infinity: the walker names them
        return None
    if (
        len(text) > limits.max_string
        or MAX_COST_PER_CHARACTER * len(text) + limits.max_string > limits.max_total
    ):
        return None
    return text


def _narrowed(snapshot: dict[str, Any], limits: Limits) -> bool:
    """Whether the ints in ``snapshot`` are narrow enough to stay numbers, and its lists
    and tuples short lists of narrow scalars; those are replaced by tuple copies, so
    what was checked is what gets encoded."""
    for key, item in snapshot.items():
        kind = type(item)
        if kind is int:
            if not -INT_BOUND < item < INT_BOUND:
                return False
        elif kind is list or kind is tuple:
            frozen = tuple(item)
            if (
                len(frozen) > limits.max_items
                or not set(map(type, frozen)) <= _SCALAR_TYPES
                or not all(-INT_BOUND < x < INT_BOUND for x in frozen if type(x) is int)
            ):
                return False
            snapshot[key] = frozen  # same key: the dict's size does not change
    return True


def scalar_text(value: Any, limits: Limits) -> str | None:
    """The JSON text of a scalar the walker passes unchanged at the top, else ``None``."""
    kind = type(value)
    if kind is int:  # what the C encoder writes for an int and a float, without its set-up
        return int.__repr__(value) if -INT_BOUND < value < INT_BOUND else None
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if kind is str:  # the walker cuts a string at the budget left, the whole one here
        return (
            encode(value)
            if len(value) <= min(limits.max_string, max(limits.max_total, MIN_STRING_CUT))
            else None
        )
    if kind is bool or value is None:
        return encode(value)
    return None


def budget_if_unchanged(
    value: Any,
    depth: int,
    budget: int,
    limits: Limits,
    policy: KeyPolicy,
    secrets: list[str] | None = None,
) -> int | None:
    """The size budget the walk would have left after passing ``value`` through
    unchanged, except for the secret-named keys of a top-level dict (added to
    ``secrets``); ``None`` when it would change more (or may: the caller walks it).

    Mirrors :class:`._walk.Walker` for what ``json.loads`` makes (dicts with str keys,
    lists, str, int, float, bool, None): every check it applies on the way, with the
    same budget, must pass. Anything else answers ``None``.
    """
    kind = type(value)
    if kind is str:
        if len(value) > min(limits.max_string, max(budget, MIN_STRING_CUT)):
            return None
        return budget - len(value) - STRING_COST
    if kind is bool or value is None:
        return budget - BOOL_OR_NONE_COST
    if kind is int:
        return budget - INT_COST if value.bit_length() <= MAX_INT_BITS else None
    if kind is float:
        return budget - FLOAT_COST if math.isfinite(value) else None
    if kind is not dict and kind is not list:
        return None
    if depth >= limits.max_depth or len(value) > limits.max_items:
        return None
    if kind is list:
        if secret_pairs(value, policy, limits.max_items):
            return None
        for item in value:  # while any budget is left, as the walk takes items
            left = (
                budget_if_unchanged(item, depth + 1, budget, limits, policy) if budget > 0 else None
            )
            if left is None:
                return None
            budget = left
        return budget
    for key, item in value.items():
        if budget <= 0 or type(key) is not str or len(key) > limits.max_string:
            return None
        budget -= len(key) + KEY_COST
        if policy.is_secret(key):
            if secrets is None:
                return None
            secrets.append(key)  # its value costs no budget: it becomes REDACTED
            continue
        if key in CLIENT_KEYS and not is_plain(item):
            return None
        left = budget_if_unchanged(item, depth + 1, budget, limits, policy)
        if left is None:
            return None
        budget = left
    return budget
