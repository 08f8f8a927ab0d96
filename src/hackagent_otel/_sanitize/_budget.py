"""How big a sanitized value may get, and what each part of it costs.

:class:`Limits` bounds one value: depth, string length, items per container, and a
total budget in characters of JSON. The walk (:mod:`._walk`) charges every part it
keeps against that budget at the costs named here, and cuts where the budget runs
out; the fast paths (:mod:`._fast`) skip the walk only where they can show, with the
same costs, that the walk would have cut nothing. The costs are defined here once, so
the two cannot drift apart (``tests/test_sanitize.py`` checks that they agree at every
budget boundary).

Constants and one frozen dataclass: touches nothing, imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
from typing import Final


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied while sanitizing one value."""

    max_depth: int = 12
    max_string: int = 4096
    max_items: int = 200
    #: Rough budget, in characters of JSON, for one whole value.
    max_total: int = 32_768


DEFAULT_LIMITS: Final = Limits()

# -- what the walk charges -------------------------------------------------------------
# Roughly the characters each part adds to the JSON text, separators included.

#: A string costs its length and this (its quotes).
STRING_COST: Final = 2
#: A mapping key costs its length and this (its quotes, the colon and a comma). Its
#: value costs what it costs on its own; a redacted value costs nothing more.
KEY_COST: Final = 4
#: ``true``, ``false`` or ``null``.
BOOL_OR_NONE_COST: Final = 5
#: An int narrow enough to stay a number (wider ones become strings).
INT_COST: Final = 8
#: A float (``NaN`` and the infinities are written as strings, but cost this too).
FLOAT_COST: Final = 12
#: A stand-in for a container nested too deep, or an object shown by its type name.
STAND_IN_COST: Final = 16
#: The ``"<cycle>"`` marker.
CYCLE_COST: Final = 8

#: A string is cut at the budget left, but never shorter than this (nor longer than
#: ``max_string``): a value near the end of its budget still shows a readable start.
MIN_STRING_CUT: Final = 64

#: Ints wider than this are written as decimal strings: many JSON readers (JavaScript,
#: Go's float64 default) cannot hold them, and Python refuses to print huge ones.
MAX_INT_BITS: Final = 63
#: Ints the walk keeps as numbers lie strictly between minus and plus this.
INT_BOUND: Final = 2**MAX_INT_BITS

#: What the walk charges, at most, per character of a flat value's JSON text: an int
#: costs INT_COST and takes at least 2 characters with its separator (``1,``), the
#: most of any part; rounded up for margin. A flat value whose text is N characters
#: long costs the walk at most this times N, which is what the flat fast path checks.
MAX_COST_PER_CHARACTER: Final = 6
