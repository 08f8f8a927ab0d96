"""Small JSON values from another process that sanitizing again would leave as they are.

The mapping re-sanitizes the JSON-valued attributes of spans from elsewhere (the
bridge's): ``resanitize`` checks every value against every rule of the sanitizer before
it may keep it, one recursive call per item. Most of these values are the small, flat
ones a tracker writes (a config, an input sample, a metric, one metadata value), and
for those the answer follows from their shape and from the length of the text they
were parsed from, as :func:`._fast.flat_text` tells it for this process's own values:

* a text of at most :data:`MAX_TEXT` characters holds no string longer than the
  sanitizer's cut, no more items than its budget pays for, and no more than it allows
  in one container once the count is checked (see :func:`_text_bounds_hold`);
* a shallow shape (objects and arrays nested at most three deep, no array in an
  array) is within the sanitizer's depth, holds no (name, value) header pairs, and
  keeps an ``_client`` key's value only when that is a scalar;
* what is left is per value: ints within 63 bits, finite floats, and no key that names
  a secret, but at the top one whose value already is the redaction marker (what
  ``resanitize`` keeps there).

:func:`unchanged` answers True only then, and then ``resanitize(value)`` is ``value``
(property-tested against it in tests/test_flat_json.py); anything else answers False
and is re-sanitized in full. Pure: it reads the key policy it is given, it learns
nothing; :meth:`~._sanitizer.Sanitizer.resanitize_parsed` is its one caller.
"""

from __future__ import annotations

import math
from typing import Any, Final

from hackagent_otel._sanitize._budget import DEFAULT_LIMITS, Limits
from hackagent_otel._sanitize._keys import CLIENT_KEYS, REDACTED, KeyPolicy

__all__ = ["MAX_TEXT", "unchanged"]

#: Ints the sanitizer keeps as numbers lie strictly between minus and plus this.
_INT_BOUND: Final = 2**63
#: Budget the sanitizer charges one item beyond the characters of its text, with room
#: to spare: at most 9 (a float: 12, for at least 3 characters; an int: 8 for 1; a key:
#: its length and 4, for its text and colon; a string: its text).
_MOST_OVER_TEXT: Final = 11
_PLAIN_SCALARS: Final = frozenset({str, bool, type(None)})
#: Containers nested at most this deep are looked at (a config's ``{"model": {...}}``,
#: a context's ``{"step_metadata": {...}}``); deeper ones are re-sanitized.
_MAX_DEPTH: Final = 3


def _text_bounds_hold(limits: Limits, text: int) -> bool:
    """Whether every value parsed from ``text`` characters stays within ``limits``:
    no string past ``max_string`` (none is longer than the text), and a budget that
    never runs down to the string cut (at most one item per two characters, each
    charged at most :data:`_MOST_OVER_TEXT` beyond its own text)."""
    charged = text + _MOST_OVER_TEXT * (text // 2 + 1)
    return (
        text <= limits.max_string
        and charged <= limits.max_total - limits.max_string
        and limits.max_depth > _MAX_DEPTH
    )


#: The longest source text vouched for under the default limits.
MAX_TEXT: Final = next(
    (n for n in range(DEFAULT_LIMITS.max_string, 0, -1) if _text_bounds_hold(DEFAULT_LIMITS, n)),
    0,
)
_MAX_ITEMS: Final = DEFAULT_LIMITS.max_items


def unchanged(value: Any, text_length: int, keys: KeyPolicy) -> bool:
    """Whether ``resanitize(value)`` is ``value`` for a small ``value`` that
    ``json.loads`` made of ``text_length`` characters, under the default limits and
    ``keys`` (False: not known, re-sanitize)."""
    if text_length > MAX_TEXT:
        return False
    kind = type(value)
    if kind is dict:
        return _object(value, 0, keys)
    if kind is list:
        return _array(value, 0, keys)
    return kind in _PLAIN_SCALARS or _number(value)


def _object(value: dict[str, Any], depth: int, keys: KeyPolicy) -> bool:
    """An object of scalars, arrays and (shallow) objects: no key names a secret, but
    at the top one whose value already is the marker (``resanitize`` keeps those); an
    ``_client`` key holds a scalar."""
    if len(value) > _MAX_ITEMS:
        return False
    for key, item in value.items():
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            if keys.is_secret(key) and (depth or item != REDACTED):
                return False
        elif keys.is_secret(key):
            return False
        elif kind is dict or kind is list:
            if key in CLIENT_KEYS or depth + 1 >= _MAX_DEPTH:
                return False
            inner = _object if kind is dict else _array
            if not inner(item, depth + 1, keys):
                return False
        elif not _number(item):
            return False
    return True


def _array(items: list[Any], depth: int, keys: KeyPolicy) -> bool:
    """An array of scalars and (shallow) objects: no arrays in it, so no (name, value)
    header pairs either."""
    if len(items) > _MAX_ITEMS:
        return False
    kinds = set(map(type, items))
    if kinds <= _PLAIN_SCALARS:
        return True
    if list in kinds or (depth + 1 >= _MAX_DEPTH and dict in kinds):
        return False
    return all(
        type(item) in _PLAIN_SCALARS
        or (_object(item, depth + 1, keys) if type(item) is dict else _number(item))
        for item in items
    )


def _number(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(-_INT_BOUND < value < _INT_BOUND)
    return kind is float and math.isfinite(value)
