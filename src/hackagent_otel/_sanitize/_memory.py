"""Known secrets: the strings one sanitizer takes out of free text by exact match.

:class:`SecretMemory` keeps two tiers, *pinned* (configured API keys and clients'
credentials) and *learned* (values seen under secret keys, within a bound), and
replaces every one of them found in a text with the redaction marker. One belongs to
each :class:`~hackagent_otel._sanitize.Sanitizer`, so what one configuration knows
never scrubs, nor fills the bounds of, another's text.

Touches only its own state, under its own lock (renewed in a forked child through
:mod:`hackagent_otel._forksafe`); reads the values it is given to remember.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Final

from hackagent_otel._forksafe import renew_after_fork
from hackagent_otel._sanitize._budget import DEFAULT_LIMITS
from hackagent_otel._sanitize._keys import REDACTED
from hackagent_otel._sanitize._shapes import (
    as_plain_structure,
    is_secret_like,
    revealed,
    utf8_text,
)

#: Shorter known secrets are not replaced inside longer text: a 3-character password
#: "abc" would eat "abc" out of every word and number (line 1234 of a traceback for a
#: PIN "1234"). They are still redacted as whole values under a secret key, and a free
#: text that is nothing but such a value (``str(KeyError(pin))``) is redacted whole.
MIN_SCRUB_LENGTH: Final = 6
#: Values longer than this are remembered by their first this many characters.
MAX_SECRET_LENGTH: Final = 4096
#: Values learned under secret keys: at most this many, and this many characters in all;
#: past either bound the least recently seen go (counted as ``evicted``).
LEARNED_MAX: Final = 4096
LEARNED_CHARS_MAX: Final = 1 << 20
#: Client credentials pinned; past this, more are learned (evictable) instead, counted
#: as ``pins_over_bound``. Configured API keys are pinned whatever the count.
PINNED_MAX: Final = 1024
#: Strings remembered from one value under a secret key; the rest is counted.
REMEMBER_PER_VALUE: Final = 1024
#: How deep :meth:`SecretMemory.remember_within` looks into a value.
_REMEMBER_DEPTH: Final = DEFAULT_LIMITS.max_depth
#: How scrubbing finds literals: up to _FEW_LITERALS, each is tested with ``in``; up to
#: _SOME_LITERALS, so is each for texts of 128 characters or more; otherwise the text's
#: MIN_SCRUB_LENGTH-character windows are looked up in an index (about 0.1 us per
#: character of text, whatever the count).
_FEW_LITERALS: Final = 32
_SOME_LITERALS: Final = 256
_WINDOW_CHUNK: Final = 65_536
#: ``Authorization`` schemes whose credential is remembered on its own too.
_AUTH_SCHEMES: Final = frozenset({"basic", "bearer", "bot", "digest", "token", "apikey"})
#: Quotes around a short secret that make a text nothing but that secret (``'abc'``).
QUOTES: Final = "'\""


class SecretMemory:
    """Secret strings seen by one sanitizer, taken out of free text by exact match.

    Two tiers. *Pinned*: configured API keys (never evicted, however many) and the
    credentials of clients handed to a ``TrackingContext`` (up to :data:`PINNED_MAX`).
    *Learned*: values seen under secret keys, in ``SecretStr``-like objects and in
    secret header pairs, bounded by :data:`LEARNED_MAX` values and
    :data:`LEARNED_CHARS_MAX` characters; past the bound the least recently seen are
    evicted (second-chance order: a value seen again since the last sweep stays).

    Scrubbing reads without the lock: every structure it reads is replaced or changed by
    single operations under the lock, each atomic for readers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # A fork while another thread held the lock would leave the child's copy locked.
        renew_after_fork(self, "_lock")
        #: value -> whether it is a configured key (else a client's credential).
        self._pinned: dict[str, bool] = {}
        self._client_pins = 0
        #: value -> seen again since the eviction sweep last passed it.
        self._learned: OrderedDict[str, bool] = OrderedDict()
        self._learned_chars = 0
        #: First MIN_SCRUB_LENGTH characters -> the literals starting with them.
        self._index: dict[str, tuple[str, ...]] = {}
        #: Known values too short to scrub inside text: redacted as a whole text only.
        self._short: dict[str, None] = {}
        self._literal_count = 0
        #: Every literal while there are at most _SOME_LITERALS of them, else None.
        self._literals: tuple[str, ...] | None = ()
        self.counts: dict[str, int] = {"evicted": 0, "pins_over_bound": 0, "not_remembered": 0}

    # -- adding ----------------------------------------------------------------------
    def pin(self, value: str, *, configured: bool = False) -> None:
        """Keep ``value`` for good (a configured key when ``configured``, else a client's)."""
        value = value[:MAX_SECRET_LENGTH]
        if not value or value in self._pinned:
            return
        with self._lock:
            if value in self._pinned:
                return
            if not configured and self._client_pins >= PINNED_MAX:
                self.counts["pins_over_bound"] += 1
                self._learn_locked(value)
                return
            self._pinned[value] = configured
            if not configured:
                self._client_pins += 1
            if value in self._learned:
                del self._learned[value]
                self._learned_chars -= len(value)
            else:
                self._add_literal(value)
        credential = credential_of(value)
        if credential is not None:
            self.pin(credential, configured=configured)

    def remember(self, value: str) -> None:
        """Learn ``value`` (seen under a secret key); cheap when it is known already."""
        if len(value) > MAX_SECRET_LENGTH:
            value = value[:MAX_SECRET_LENGTH]
        seen = self._learned.get(value)
        if seen is True or (seen is None and value in self._pinned):
            return
        if seen is False:  # seen again since the sweep passed it: give it another round
            with self._lock:
                if value in self._learned:
                    self._learned[value] = True
            return
        if not value:
            return
        with self._lock:
            self._learn_locked(value)
        credential = credential_of(value)
        if credential is not None:
            self.remember(credential)

    def remember_within(self, value: object) -> None:
        """Remember ``value`` if it is a secret scalar, else the ones inside it.

        Visits at most :data:`REMEMBER_PER_VALUE` items, as deep as the default limits
        nest (what is left over is counted as ``not_remembered``). Never raises.
        """
        if type(value) is str:
            self.remember(value)
            return
        try:
            self._remember_walk(value)
        except Exception:  # a hostile container; the value itself is redacted anyway
            self.count("not_remembered")

    def take_over(self, other: SecretMemory) -> None:
        """Know what ``other`` knows too: its pinned secrets pinned as they were, its
        learned ones learned, oldest first. The counts stay this memory's own."""
        if other is self:
            return
        with other._lock:
            pinned = list(other._pinned.items())
            learned = list(other._learned)
        for value, configured in pinned:
            self.pin(value, configured=configured)
        for value in learned:
            self.remember(value)

    def _remember_walk(self, value: object) -> None:
        """Depth first, in order; stops with what is left counted once."""
        budget = REMEMBER_PER_VALUE
        stack: list[tuple[object, int]] = [(value, 0)]
        while stack:
            if budget <= 0:
                self.count("not_remembered")
                return
            budget -= 1
            item, depth = stack.pop()
            text = _secret_text(item)
            if text is not None:
                if text:
                    self.remember(text)
            elif depth < _REMEMBER_DEPTH:
                # One more than the budget takes: what is left shows the value was cut.
                children = list(islice(_children(item), budget + 1))
                stack.extend((child, depth + 1) for child in reversed(children))

    def _learn_locked(self, value: str) -> None:
        if value in self._learned or value in self._pinned:
            return
        self._learned[value] = False
        self._learned_chars += len(value)
        self._add_literal(value)
        learned = self._learned
        while len(learned) > LEARNED_MAX or self._learned_chars > LEARNED_CHARS_MAX:
            oldest, seen_again = next(iter(learned.items()))
            if seen_again and oldest != value:
                learned[oldest] = False
                learned.move_to_end(oldest)
                continue
            del learned[oldest]
            self._learned_chars -= len(oldest)
            self._remove_literal(oldest)
            self.counts["evicted"] += 1

    def _add_literal(self, value: str) -> None:
        if len(value) < MIN_SCRUB_LENGTH:
            self._short[value] = None
            return
        anchor = value[:MIN_SCRUB_LENGTH]
        self._index[anchor] = (*self._index.get(anchor, ()), value)
        self._literal_count += 1
        self._refresh_literals()

    def _remove_literal(self, value: str) -> None:
        if len(value) < MIN_SCRUB_LENGTH:
            self._short.pop(value, None)
            return
        anchor = value[:MIN_SCRUB_LENGTH]
        rest = tuple(v for v in self._index.get(anchor, ()) if v != value)
        if rest:
            self._index[anchor] = rest
        else:
            self._index.pop(anchor, None)
        self._literal_count -= 1
        self._refresh_literals()

    def _refresh_literals(self) -> None:
        if self._literal_count <= _SOME_LITERALS:
            self._literals = tuple(v for group in self._index.values() for v in group)
        else:
            self._literals = None

    def count(self, name: str) -> None:
        """Add one to the count ``name`` (what a bound or a hostile value turned away)."""
        with self._lock:
            self.counts[name] += 1

    # -- using -----------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` with every known secret in it replaced by :data:`REDACTED`.

        Occurrences that overlap or touch become one marker, so no part of a secret is
        left beside another's.
        """
        short = self._short
        if short and text.strip().strip(QUOTES) in short:
            return REDACTED
        literals = self._literals
        if literals is None or (len(literals) > _FEW_LITERALS and len(text) < 128):
            found = self._by_windows(text)
            return _replaced(text, found) if found else text
        for literal in literals:  # the common case: a few, none of them in the text
            if literal in text:
                return _replaced(text, [v for v in literals if v in text])
        return text

    def _by_windows(self, text: str) -> list[str]:
        """The literals whose first characters occur in ``text``, by sets of its windows
        (made a chunk at a time, so a huge text costs time but not memory)."""
        width = MIN_SCRUB_LENGTH
        get = self._index.get
        found: dict[str, None] = {}
        for start in range(0, max(len(text) - width + 1, 0), _WINDOW_CHUNK):
            end = min(start + _WINDOW_CHUNK, len(text) - width + 1)
            for window in {text[i : i + width] for i in range(start, end)}:
                found.update(dict.fromkeys(get(window, ())))
        return [literal for literal in found if literal in text]

    def has_any(self) -> bool:
        return bool(self._pinned or self._learned)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "pinned": len(self._pinned),
                "learned": len(self._learned),
                "learned_chars": self._learned_chars,
                **self.counts,
            }

    def clear(self) -> None:
        with self._lock:
            self._pinned.clear()
            self._client_pins = 0
            self._learned.clear()
            self._learned_chars = 0
            self._index = {}
            self._short = {}
            self._literal_count = 0
            self._literals = ()
            self.counts = dict.fromkeys(self.counts, 0)


def _replaced(text: str, literals: Iterable[str]) -> str:
    """``text`` with every occurrence of ``literals`` (merged where they meet) redacted."""
    spans: list[tuple[int, int]] = []
    for literal in literals:
        start = text.find(literal)
        while start != -1:
            spans.append((start, start + len(literal)))
            start = text.find(literal, start + 1)
    if not spans:
        return text
    spans.sort()
    pieces: list[str] = []
    done = 0
    cut_start, cut_end = spans[0]
    for start, end in spans[1:]:
        if start <= cut_end:
            cut_end = max(cut_end, end)
            continue
        pieces += (text[done:cut_start], REDACTED)
        done, (cut_start, cut_end) = cut_end, (start, end)
    pieces += (text[done:cut_start], REDACTED, text[cut_end:])
    return "".join(pieces)


def credential_of(value: str) -> str | None:
    """The credential of an ``Authorization`` value (``Bearer sk-...`` -> ``sk-...``)."""
    scheme, space, credential = value.partition(" ")
    if space and scheme.lower() in _AUTH_SCHEMES:
        credential = credential.strip()
        return credential or None
    return None


def _secret_text(item: object) -> str | None:
    """The text a scalar under a secret key could appear as in free text: ``None`` for
    containers, ``""`` for what has none worth remembering (None, bools, floats)."""
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray)):
        return utf8_text(item) or ""
    if isinstance(item, bool) or item is None or isinstance(item, float):
        return ""
    if isinstance(item, int):
        return str(item) if item.bit_length() <= 256 else ""
    if is_secret_like(item):
        return revealed(item) or ""
    return None


def _children(item: object) -> Iterable[object]:
    """What a container under a secret key holds (values of mappings), else nothing."""
    if isinstance(item, Mapping):
        return item.values()
    if isinstance(item, (list, tuple, set, frozenset)):
        return item
    structure = as_plain_structure(item)
    return structure.values() if structure is not None else ()
