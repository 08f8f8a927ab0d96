"""Turn anything a pipeline hands the tracker into bounded, secret-free JSON.

Configs, input samples, metadata and progress metrics come from user code and can hold
anything: NaN, bytes, sets, cycles, model objects, megabyte strings, API keys. Before any
of it reaches a span or a record it goes through :func:`sanitize`, which

* redacts values whose *key* names a secret, at any depth (the rule is written out
  below, above :data:`SECRET_WORDS`), the value of a (name, value) pair whose name does
  (header lists), and ``SecretStr``-like objects under any key; values are never
  scrubbed by pattern: red-team payloads are full of words like "password" and are data;
* replaces what JSON cannot hold with a safe, readable stand-in (``"NaN"``,
  ``"<cycle>"``, ``"<Widget>"``, integers beyond 64 bits as decimal strings) instead of
  failing;
* caps size by structure: long strings (mapping keys too), long containers and deep
  nesting are cut at element boundaries with a marker saying how much was left out, so
  the JSON text is always whole;
* never raises.

Known secrets are taken out of free text (exception messages and tracebacks, error
messages, notes, step names, log records): the configured API keys and clients'
credentials, pinned for good, and the values redacted so far, learned within a bound
(:class:`_SecretMemory`). The key policy and that memory are module state, set by
``configure()`` and the bridge's start-up; making them one object handed down is left
to a later change.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from decimal import Decimal
from enum import Enum
from itertools import islice
from pathlib import PurePath
from typing import Any, Final

from hackagent_otel._json import compact_encoder

REDACTED: Final = "***REDACTED***"

# -- which keys name a secret ----------------------------------------------------------
#
# A key is cut into words: camelCase and acronyms are split (``OpenAIAPIKey`` -> open,
# aiapi, key), then it is lowercased and cut at anything that is not a letter or a
# digit (``_``, ``-``, ``.``, spaces...); digits at the end of a word are dropped
# (``password2``, ``oauth2``) and words of digits only are left out. A word glued from a
# known qualifier and a base (``accesstoken``, ``secretkey``, ``sessionid``) counts as
# those two words. Then the key is secret when:
#
# 1. one of its words is a secret word, or ends with one (``dbpassword``, ``basicauth``);
# 2. two neighbouring words form a credential compound: a key qualifier before ``key``
#    or ``keys`` (``api_key``, ``private_key_pem``), a token qualifier before ``token``
#    or ``tokens`` (``access_token_value``), ``session`` before ``id``;
# 3. its last word, the thing the key names, is ``key`` (not after a kind of database or
#    sort key: ``primary_key``), ``keys`` after another word, ``token`` (not after a
#    model's special token: ``eos_token``) or ``pass`` (``db_pass``).
#
# Everything else is plain. In particular ``token``, ``key`` and ``pass`` before another
# word name something else (``token_count``, ``tokens_used``, ``key_id``, ``pass_rate``),
# and plural ``tokens`` names a credential only after a token qualifier, so the model
# parameters ``max_tokens`` and ``total_tokens`` stay readable. Whole words are
# compared, never substrings, except for the glued compounds and rule 1's glued
# endings: ``keyboard``, ``monkey``, ``passage``, ``tokenizer``, ``author`` and
# ``secretary`` are plain.

#: Words that make a key secret wherever they stand in it (rule 1).
SECRET_WORDS: Final = frozenset(
    {
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "jwt",
        "oauth",
        "passphrase",
        "passphrases",
        "passwd",
        "password",
        "passwords",
        "pwd",
        "secret",
        "secrets",
    }
)
#: Secret words that also end ordinary words, so they count only standing alone.
_WHOLE_WORD_ONLY: Final = frozenset({"bearer", "pwd"})
#: Words before ``key``/``keys`` that make a credential (rule 2; glued: ``apikey``).
KEY_QUALIFIERS: Final = frozenset(
    {
        "access",
        "api",
        "app",
        "auth",
        "client",
        "encryption",
        "hmac",
        "license",
        "master",
        "pass",
        "private",
        "secret",
        "session",
        "signing",
        "ssh",
    }
)
#: Words before ``token``/``tokens`` that make a credential (rule 2).
TOKEN_QUALIFIERS: Final = frozenset(
    {
        "access",
        "api",
        "app",
        "auth",
        "bearer",
        "bot",
        "csrf",
        "id",
        "oauth",
        "refresh",
        "session",
        "xsrf",
    }
)
#: Words before ``id`` that make a session id (rule 2; glued: ``JSESSIONID``).
SESSION_QUALIFIERS: Final = frozenset({"session", "sess"})
#: Kinds of key that are no credential: ``primary_key`` is plain (rule 3).
PLAIN_KEY_KINDS: Final = frozenset({"foreign", "partition", "primary", "sort"})
#: A model's special tokens: ``eos_token`` is plain (rule 3).
MODEL_TOKEN_KINDS: Final = frozenset({"bos", "cls", "eos", "mask", "pad", "sep", "stop", "unk"})

#: Glued words split in two: (base, qualifiers the part before it must end with; None:
#: anything, since no ordinary word ends with "token").
_GLUED_BASES: Final[tuple[tuple[str, frozenset[str] | None], ...]] = (
    ("tokens", None),
    ("token", None),
    ("keys", KEY_QUALIFIERS),
    ("key", KEY_QUALIFIERS),
    ("id", SESSION_QUALIFIERS),
)

#: Keys that hold a live client object; shown as ``"<TypeName>"`` like the original.
CLIENT_KEYS: Final = frozenset({"client", "_client"})
#: Keys at most this long that are str, not secret and no client key: the plain keys
#: the fast path passes by a set comparison.
_PLAIN_KEY_MAX_LENGTH: Final = 64
_LEARNED_KEYS_MAX: Final = 4096

#: Integers wider than this are written as decimal strings: many JSON readers (JavaScript,
#: Go's float64 default) cannot hold them, and Python refuses to print huge ones.
_MAX_INT_BITS: Final = 63

_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
#: Between a lower-case letter or digit and a capital (``apiKey``), and before the last
#: capital of an acronym followed by a lower-case letter (``AIAPIKey`` -> ``AIAPI_Key``).
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_DIGITS = "0123456789"


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied while sanitizing one value."""

    max_depth: int = 12
    max_string: int = 4096
    max_items: int = 200
    #: Rough budget, in characters of JSON, for one whole value.
    max_total: int = 32_768


DEFAULT_LIMITS: Final = Limits()


def key_words(key: str) -> list[str]:
    """The words of a key as the policy reads them (see the rules above)."""
    words: list[str] = []
    for raw in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()):
        word = raw.rstrip(_DIGITS)
        if word:
            words.extend(_unglued(word))
    return words


def _unglued(word: str) -> tuple[str, ...]:
    """``accesstoken`` -> (access, token); ``openaiapikey`` -> (openai, api, key)."""
    for base, qualifiers in _GLUED_BASES:
        if len(word) > len(base) and word.endswith(base):
            before = word[: -len(base)]
            if qualifiers is None:
                return before, base
            for qualifier in qualifiers:
                if before.endswith(qualifier):
                    rest = before[: -len(qualifier)]
                    return (rest, qualifier, base) if rest else (qualifier, base)
    return (word,)


def _names_a_secret(
    words: list[str], secret_words: frozenset[str], endings: tuple[str, ...]
) -> bool:
    """Rules 1 to 3 over a key's words."""
    if not words:
        return False
    before = ""
    for word in words:
        if word in secret_words or word.endswith(endings):
            return True
        if before and (
            (before in KEY_QUALIFIERS and word in ("key", "keys"))
            or (before in TOKEN_QUALIFIERS and word in ("token", "tokens"))
            or (before in SESSION_QUALIFIERS and word == "id")
        ):
            return True
        before = word
    head = words[-1]
    before = words[-2] if len(words) > 1 else ""
    if head == "key":
        return before not in PLAIN_KEY_KINDS
    if head == "keys":  # "keys" alone is usually a list of field names
        return bool(before) and before not in PLAIN_KEY_KINDS
    if head == "token":
        return before not in MODEL_TOKEN_KINDS
    return head == "pass"


class _KeyPolicy:
    """Decides, with a cache, whether a mapping key names a secret."""

    def __init__(self, extra_words: Iterable[str] = ()) -> None:
        extra = {w.strip().lower() for w in extra_words if w.strip()}
        self.words = frozenset(SECRET_WORDS | extra)
        self._endings = tuple(sorted(self.words - _WHOLE_WORD_ONLY))
        self._cache: dict[str, bool] = {}
        #: Keys seen to be plain (see ``_flat_text``) or secret, for set tests in C.
        self.plain_keys: set[str] = set()
        self.secret_keys: set[str] = set()

    def secret_keys_among(self, keys: Set[Any]) -> Set[str] | None:
        """Which of ``keys`` (not yet known plain) are secret; ``None`` if one is not a
        plain key at all (not str, too long, a client key). Remembers what it learns."""
        if keys <= self.secret_keys:
            return keys
        secrets: set[str] = set()
        for key in keys:
            if type(key) is not str or len(key) > _PLAIN_KEY_MAX_LENGTH or key in CLIENT_KEYS:
                return None
            learned = secrets if self.is_secret(key) else self.plain_keys
            learned.add(key)
        if len(self.plain_keys) > _LEARNED_KEYS_MAX:  # a pipeline with ever-new keys
            self.plain_keys.clear()
        if len(self.secret_keys) < _LEARNED_KEYS_MAX:
            self.secret_keys |= secrets
        return secrets

    def is_secret(self, key: str) -> bool:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        secret = _names_a_secret(key_words(key), self.words, self._endings)
        if len(self._cache) < 4096 and len(key) <= 256:
            self._cache[key] = secret
        return secret


# -- known secrets ---------------------------------------------------------------------

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
#: How scrubbing finds literals: up to _FEW_LITERALS, each is tested with ``in``; up to
#: _SOME_LITERALS, so is each for texts of 128 characters or more; otherwise the text's
#: MIN_SCRUB_LENGTH-character windows are looked up in an index (about 0.1 us per
#: character of text, whatever the count).
_FEW_LITERALS: Final = 32
_SOME_LITERALS: Final = 256
_WINDOW_CHUNK: Final = 65_536
#: ``Authorization`` schemes whose credential is remembered on its own too.
_AUTH_SCHEMES: Final = frozenset({"basic", "bearer", "bot", "digest", "token", "apikey"})
_QUOTES: Final = "'\""


class _SecretMemory:
    """Secret strings seen in this process, taken out of free text by exact match.

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
        self._pinned: dict[str, None] = {}
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
            self._pinned[value] = None
            if not configured:
                self._client_pins += 1
            if value in self._learned:
                del self._learned[value]
                self._learned_chars -= len(value)
            else:
                self._add_literal(value)
        credential = _credential_of(value)
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
        credential = _credential_of(value)
        if credential is not None:
            self.remember(credential)

    def remember_within(self, value: object) -> None:
        """Remember ``value`` if it is a secret scalar, else the ones inside it.

        Visits at most :data:`REMEMBER_PER_VALUE` items, :data:`DEFAULT_LIMITS` deep
        (what is left over is counted as ``not_remembered``). Never raises.
        """
        if type(value) is str:
            self.remember(value)
            return
        try:
            self._remember_walk(value)
        except Exception:  # a hostile container; the value itself is redacted anyway
            self._count("not_remembered")

    def _remember_walk(self, value: object) -> None:
        """Depth first, in order; stops with what is left counted once."""
        budget = REMEMBER_PER_VALUE
        stack: list[tuple[object, int]] = [(value, 0)]
        while stack:
            if budget <= 0:
                self._count("not_remembered")
                return
            budget -= 1
            item, depth = stack.pop()
            text = _secret_text(item)
            if text is not None:
                if text:
                    self.remember(text)
            elif depth < DEFAULT_LIMITS.max_depth:
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

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    # -- using -----------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` with every known secret in it replaced by :data:`REDACTED`.

        Occurrences that overlap or touch become one marker, so no part of a secret is
        left beside another's.
        """
        short = self._short
        if short and text.strip().strip(_QUOTES) in short:
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


def _credential_of(value: str) -> str | None:
    """The credential of an ``Authorization`` value (``Bearer sk-...`` -> ``sk-...``)."""
    scheme, space, credential = value.partition(" ")
    if space and scheme.lower() in _AUTH_SCHEMES:
        credential = credential.strip()
        return credential or None
    return None


def _is_secret_like(value: object) -> bool:
    """Shaped like pydantic's ``SecretStr``/``SecretBytes``: a ``get_secret_value``."""
    return callable(getattr(type(value), "get_secret_value", None))


def _revealed(value: Any) -> str | None:
    """The text inside a ``SecretStr``-like object, to remember; ``None`` if unreadable."""
    try:
        secret = value.get_secret_value()
    except Exception:
        return None
    if isinstance(secret, str):
        return secret
    if isinstance(secret, (bytes, bytearray)):
        try:
            return bytes(secret).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _secret_text(item: object) -> str | None:
    """The text a scalar under a secret key could appear as in free text: ``None`` for
    containers, ``""`` for what has none worth remembering (None, bools, floats)."""
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            return ""
    if isinstance(item, bool) or item is None or isinstance(item, float):
        return ""
    if isinstance(item, int):
        return str(item) if item.bit_length() <= 256 else ""
    if _is_secret_like(item):
        return _revealed(item) or ""
    return None


def _children(item: object) -> Iterable[object]:
    """What a container under a secret key holds (values of mappings), else nothing."""
    if isinstance(item, Mapping):
        return item.values()
    if isinstance(item, (list, tuple, set, frozenset)):
        return item
    structure = _as_plain_structure(item)
    return structure.values() if structure is not None else ()


_policy = _KeyPolicy()
_memory = _SecretMemory()
# A fork while another thread held the lock would leave the child's copy locked for good.
os.register_at_fork(after_in_child=lambda: setattr(_memory, "_lock", threading.Lock()))


def set_extra_secret_words(words: Iterable[str]) -> None:
    """Add words that mark a key secret wherever they stand (``configure(redact_keys=...)``)."""
    global _policy
    _policy = _KeyPolicy(words)


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret under the current policy."""
    return _policy.is_secret(key)


def pin_secret(value: object, *, configured: bool = False) -> None:
    """Remember ``value`` for good as a secret to scrub from free text.

    ``configured``: a configured API key (``configure()``, the bridge's settings), kept
    however many there are; otherwise a client's credential, kept up to
    :data:`PINNED_MAX`. ``None``, empty and non-string values are ignored.
    """
    text = _revealed(value) if _is_secret_like(value) else value
    if isinstance(text, str) and text:
        _memory.pin(text, configured=configured)


def pin_client_secrets(client: object) -> None:
    """Pin the credentials a client object carries, duck-typed, never raising.

    hackagent's ``AuthenticatedClient`` (``token``, ``_headers``), an ``httpx.Client``
    (``headers``, ``cookies``, the header of a basic ``auth``) and this package's
    ``HackAgentClient`` (``headers``): every value under a secret-named header, the
    credential of an ``Authorization`` value, a ``token`` or ``api_key`` attribute.
    """
    try:
        for name in ("token", "api_key", "_token"):
            pin_secret(getattr(client, name, None))
        for name in ("headers", "_headers"):
            headers = getattr(client, name, None)
            if isinstance(headers, Mapping):
                for key, value in islice(headers.items(), 64):
                    if isinstance(key, str) and _policy.is_secret(key):
                        pin_secret(value)
        cookies = getattr(client, "cookies", None)
        if isinstance(cookies, Mapping):
            for value in islice(cookies.values(), 64):
                pin_secret(value)
        auth = getattr(client, "auth", None)
        for name in ("_auth_header", "_password"):
            secret = getattr(auth, name, None)
            pin_secret(secret.decode("latin-1") if isinstance(secret, bytes) else secret)
        header = getattr(auth, "_auth_header", None)
        if isinstance(header, str) and header.lower().startswith("basic "):
            # httpx keeps only the header: the password is in its base64 "user:password".
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("latin-1")
            pin_secret(decoded.partition(":")[2])
    except Exception:  # a client with hostile properties keeps what was pinned so far
        _memory._count("not_remembered")


def scrub_known_secrets(text: str) -> str:
    """Replace every known secret (pinned or learned) that occurs in ``text``."""
    return _memory.scrub(text)


def known_secrets_stats() -> dict[str, int]:
    """How many secrets are pinned and learned, and what the bounds turned away."""
    return _memory.stats()


def forget_known_secrets() -> None:
    """Drop every known secret, pinned ones included, and the counts (tests; a
    long-lived process rotating keys, which then pins the new ones by configuring)."""
    _memory.clear()


class _Walker:
    """One sanitizing pass over one value, with its own budget and cycle guard."""

    __slots__ = ("budget", "limits", "policy", "seen")

    def __init__(self, limits: Limits, policy: _KeyPolicy) -> None:
        self.limits = limits
        self.budget = limits.max_total
        self.policy = policy
        self.seen: set[int] = set()

    def walk(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is bool or value is None:
            self.budget -= 5
            return value
        if kind is int:
            if value.bit_length() > _MAX_INT_BITS:
                return self._string(_int_text(value))
            self.budget -= 8
            return value
        if kind is float:
            self.budget -= 12
            return value if math.isfinite(value) else _float_name(value)
        if isinstance(value, Mapping):
            return self._container(value, depth, self._mapping)
        if isinstance(value, (list, tuple)):
            return self._container(value, depth, self._sequence)
        if isinstance(value, (set, frozenset)):
            return self._container(value, depth, self._set)
        return self._other(value, depth)

    def _string(self, value: str) -> str:
        value = self._cap(value, min(self.limits.max_string, max(self.budget, 64)))
        self.budget -= len(value) + 2
        return value

    def _cap(self, value: str, limit: int | None = None) -> str:
        limit = self.limits.max_string if limit is None else limit
        if len(value) > limit:
            value = f"{value[:limit]}...[{len(value) - limit} more chars]"
        return value

    def _container(self, value: Any, depth: int, convert: Any) -> Any:
        if depth >= self.limits.max_depth:
            self.budget -= 16
            return f"<{type(value).__name__} nested too deep>"
        marker = id(value)
        if marker in self.seen:
            self.budget -= 8
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
            self.budget -= len(key) + 4
            if self.policy.is_secret(full_key):
                _memory.remember_within(item)
                out[key] = REDACTED
            elif key in CLIENT_KEYS and not _is_plain(item):
                out[key] = f"<{type(item).__name__}>"
            else:
                out[key] = self.walk(item, depth)
        return out

    def _sequence(self, value: Sequence[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        secret_pairs = _secret_pairs(value, self.policy, self.limits.max_items)
        for index, item in enumerate(value):
            if index >= self.limits.max_items or self.budget <= 0:
                out.append(f"...{len(value) - index} more items")
                break
            if secret_pairs and index in secret_pairs:
                _memory.remember_within(item[1])
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
        if _is_secret_like(value):  # SecretStr, SecretBytes: redacted under any key
            revealed = _revealed(value)
            if revealed:
                _memory.remember(revealed)
            self.budget -= len(REDACTED) + 2
            return REDACTED
        if isinstance(value, Enum):
            return self.walk(value.value, depth)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._string(_bytes_text(bytes(value)))
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return self._string(value.isoformat())
        if isinstance(value, (uuid.UUID, Decimal, PurePath)):
            return self._string(str(value))
        if isinstance(value, (int, float)):  # bool/int/float subclasses (numpy-like scalars)
            return self.walk(int(value) if isinstance(value, int) else float(value), depth)
        array_like = _as_python_scalar_or_list(value)
        if array_like is not None:
            return self.walk(array_like, depth)
        converted = _as_plain_structure(value)
        if converted is not None:
            return self._container(converted, depth, self._mapping)
        self.budget -= 16
        return f"<{type(value).__name__}>"


def _secret_pairs(value: Sequence[Any], policy: _KeyPolicy, limit: int) -> set[int]:
    """Where ``value`` is a list of (name, value) pairs, as HTTP headers are given to
    httpx or ASGI (``[(b"authorization", b"Bearer ...")]``), the positions of the pairs
    whose name is a secret key; empty for anything else.

    Every item shown (the first ``limit``) must be a 2-item list or tuple whose first
    item is str or bytes: a lone pair, or a list of other things, is plain data.
    """
    found: set[int] = set()
    for index, item in enumerate(islice(value, limit)):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return set()
        name = item[0]
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).decode("latin-1")
        elif not isinstance(name, str):
            return set()
        if len(name) <= 256 and policy.is_secret(name):
            found.add(index)
    return found


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _float_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _key_text(raw_key: Any) -> str:
    """The text of a mapping key (JSON object keys are strings)."""
    if isinstance(raw_key, str):
        return raw_key
    if isinstance(raw_key, Enum):
        return _safe_str(raw_key.value)
    return _safe_str(raw_key)


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


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _bytes_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"


def _as_python_scalar_or_list(value: Any) -> Any:
    """NumPy-style scalars and arrays (``.item()`` / ``.tolist()``) as Python values."""
    if not hasattr(value, "dtype"):
        return None
    try:
        converted = value.tolist() if hasattr(value, "tolist") else value.item()
    except Exception:
        return None
    return converted if isinstance(converted, (list, str, int, float, bool)) else None


def _as_plain_structure(value: Any) -> Mapping[str, Any] | None:
    """Pydantic models, dataclasses and ``dict()``-able objects as mappings, else None."""
    try:
        if hasattr(value, "model_dump") and callable(value.model_dump):
            dumped = value.model_dump()
            return dumped if isinstance(dumped, Mapping) else None
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    except Exception:
        return None
    return None


def sanitize(value: Any, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Return a JSON-safe, size-capped, secret-free copy of ``value``. Never raises."""
    try:
        return _Walker(limits, _policy).walk(value, 0)
    except RecursionError:
        return "<too deeply nested>"
    except Exception as exc:  # a hostile __eq__, __iter__ or __str__
        return f"<unserializable {type(value).__name__}: {type(exc).__name__}>"


_encode: Final = compact_encoder(ensure_ascii=False)
_REDACTED_JSON: Final = json.dumps(REDACTED)

_SCALAR_TYPES: Final = frozenset({str, int, float, bool, type(None)})
_FLAT_VALUE_TYPES: Final = _SCALAR_TYPES | {list, tuple}
_NEEDS_A_LOOK: Final = frozenset({int, list, tuple})
#: Ints the walker keeps as numbers lie strictly between minus and plus this.
_INT_BOUND: Final = 2**_MAX_INT_BITS


def _flat_text(value: Any, limits: Limits) -> str | None:
    """The JSON text of ``sanitize(value)`` for the common flat shapes, or ``None``.

    Scalars, and dicts of plain keys to scalars or to lists of scalars (metrics, counts,
    configs, input samples), need at most their secret keys redacted: they are checked
    with set operations and encoded by the C encoder, skipping the walker. The encoded
    text then bounds what the walker would have cut: every string is shorter than it,
    and the walker charges at most 6 characters of budget per character of it. Anything
    else answers ``None`` and takes the walk.
    """
    kind = type(value)
    if kind is not dict:
        return _scalar_text(value, limits)
    if (
        len(value) > limits.max_items
        or limits.max_depth < 3
        or limits.max_string < _PLAIN_KEY_MAX_LENGTH
    ):
        return None
    # Checks and encoding read one copy: another thread may be changing the caller's
    # dict, and a key or value slipped in between them would skip redaction.
    snapshot = dict(value)
    policy = _policy
    if not snapshot.keys() <= policy.plain_keys:
        secrets = policy.secret_keys_among(snapshot.keys() - policy.plain_keys)
        if secrets is None:
            return None
        for key in secrets:
            _memory.remember_within(snapshot[key])
            snapshot[key] = REDACTED
    types = set(map(type, snapshot.values()))
    if not types <= _FLAT_VALUE_TYPES:
        return None
    if not types.isdisjoint(_NEEDS_A_LOOK) and not _narrowed(snapshot, limits):
        return None
    try:
        text = _encode(snapshot)
    except ValueError:  # NaN or infinity: the walker names them
        return None
    if len(text) > limits.max_string or 6 * len(text) + limits.max_string > limits.max_total:
        return None
    return text


def _narrowed(snapshot: dict[str, Any], limits: Limits) -> bool:
    """Whether the ints in ``snapshot`` are narrow enough to stay numbers, and its lists
    and tuples short lists of narrow scalars; those are replaced by tuple copies, so
    what was checked is what gets encoded."""
    for key, item in snapshot.items():
        kind = type(item)
        if kind is int:
            if not -_INT_BOUND < item < _INT_BOUND:
                return False
        elif kind is list or kind is tuple:
            frozen = tuple(item)
            if (
                len(frozen) > limits.max_items
                or not set(map(type, frozen)) <= _SCALAR_TYPES
                or not all(-_INT_BOUND < x < _INT_BOUND for x in frozen if type(x) is int)
            ):
                return False
            snapshot[key] = frozen  # same key: the dict's size does not change
    return True


def _scalar_text(value: Any, limits: Limits) -> str | None:
    """The JSON text of a scalar the walker passes unchanged at the top, else ``None``."""
    kind = type(value)
    if kind is int:  # what the C encoder writes for an int and a float, without its set-up
        return int.__repr__(value) if -_INT_BOUND < value < _INT_BOUND else None
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if kind is str:  # the walker caps strings at the budget too, but never below 64
        return (
            _encode(value)
            if len(value) <= min(limits.max_string, max(limits.max_total, 64))
            else None
        )
    if kind is bool or value is None:
        return _encode(value)
    return None


def dumps(value: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """Sanitize ``value`` and encode it as compact JSON text. Never raises."""
    try:
        text = _flat_text(value, limits)
    except Exception:  # e.g. the caller's dict changed size under us: take the full walk
        text = None
    return text if text is not None else _encode(sanitize(value, limits))


def dumps_keyed(key: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """Like :func:`dumps`, but redacted whole when ``key`` names a secret."""
    if _policy.is_secret(key):
        _memory.remember_within(value)
        return _REDACTED_JSON
    return dumps(value, limits)


def resanitize(value: Any, limits: Limits = DEFAULT_LIMITS) -> Any:
    """``sanitize(value, limits)``, without walking what it would return unchanged.

    Values from elsewhere are mostly what a tracker already sanitized: walking them again
    only makes an equal copy. :func:`_budget_if_unchanged` checks that in a tight loop
    (several times faster than the walk); a secret-named key at the top (a config with
    its ``api_key``) is left to the sanitizer alone, the rest is kept. Whatever the
    check cannot vouch for is walked in full.
    """
    secrets: list[str] = []
    if _budget_if_unchanged(value, 0, limits.max_total, limits, secrets) is None:
        return sanitize(value, limits)
    # A tracker already redacted these: the walk would give the same marker again.
    secrets = [key for key in secrets if not (type(value[key]) is str and value[key] == REDACTED)]
    if not secrets:
        return value
    out = dict(value)
    for key in secrets:  # redacted, and the secret remembered to scrub it from free text
        out[key] = sanitize({key: out[key]}, limits)[key]
    return out


def _budget_if_unchanged(
    value: Any, depth: int, budget: int, limits: Limits, secrets: list[str] | None = None
) -> int | None:
    """The size budget ``sanitize`` would have left after passing ``value`` through
    unchanged, except for the secret-named keys of a top-level dict (added to
    ``secrets``); ``None`` when it would change more (or may: the caller walks it).

    Mirrors :class:`_Walker` for what ``json.loads`` makes (dicts with
    str keys, lists, str, int, float, bool, None): every check it applies on the way,
    with the same budget, must pass. Anything else answers ``None``. Property-tested
    against ``sanitize`` in tests/test_sanitize.py and tests/test_mapping.py.
    """
    kind = type(value)
    if kind is str:
        if len(value) > min(limits.max_string, max(budget, 64)):
            return None
        return budget - len(value) - 2
    if kind is bool or value is None:
        return budget - 5
    if kind is int:
        return budget - 8 if value.bit_length() <= _MAX_INT_BITS else None
    if kind is float:
        return budget - 12 if math.isfinite(value) else None
    if kind is dict:
        if depth >= limits.max_depth or len(value) > limits.max_items:
            return None
        for key, item in value.items():
            if budget <= 0 or type(key) is not str or len(key) > limits.max_string:
                return None
            budget -= len(key) + 4
            if _policy.is_secret(key):
                if secrets is None:
                    return None
                secrets.append(key)  # its value costs no budget: it becomes REDACTED
                continue
            if key in CLIENT_KEYS and not _is_plain(item):
                return None
            left = _budget_if_unchanged(item, depth + 1, budget, limits)
            if left is None:
                return None
            budget = left
        return budget
    if kind is list:
        if depth >= limits.max_depth or len(value) > limits.max_items:
            return None
        if _secret_pairs(value, _policy, limits.max_items):
            return None
        for item in value:
            if budget <= 0:
                return None
            left = _budget_if_unchanged(item, depth + 1, budget, limits)
            if left is None:
                return None
            budget = left
        return budget
    return None


def sanitize_text(text: Any, limit: int = DEFAULT_LIMITS.max_string) -> str:
    """A bounded string for free text (error messages) with known secrets taken out.

    Known secrets are removed before the text is cut, so a secret at the cut is never
    left half-visible.
    """
    value = text if isinstance(text, str) else _safe_str(text)
    if len(value) <= limit:  # the common case, kept cheap: progress messages, names
        value = _memory.scrub(value)
        if len(value) <= limit:
            return value
    return _scrubbed_and_cut(value, limit, _memory.scrub)


def _scrubbed_and_cut(value: str, limit: int, scrub: Callable[[str], str]) -> str:
    """``scrub(value)`` cut to ``limit`` characters, with a marker of how many more.

    Only what can be kept is scrubbed: the first ``limit`` characters and one longest
    secret past them (so none straddles the cut), unless secrets shrank that below the
    limit; a 10 MB message costs what a short one does.
    """
    head = value[: limit + MAX_SECRET_LENGTH]
    clean = scrub(head)
    if len(clean) < limit < len(value) and len(head) < len(value):
        head, clean = value, scrub(value)
    left_out = len(clean) - limit + len(value) - len(head)
    return clean if left_out <= 0 else f"{clean[:limit]}...[{left_out} more chars]"


def sanitize_structured_text(text: str, limit: int = DEFAULT_LIMITS.max_string) -> str:
    """:func:`scrub_structured_text`, cut as :func:`sanitize` cuts a string."""
    return _scrubbed_and_cut(text, limit, scrub_structured_text)


# -- structured data written as text ---------------------------------------------------

_QUOTED_VALUE = r"'(?:[^'\\\n]|\\.)*'" + r'|"(?:[^"\\\n]|\\.)*"'
#: ``key: value`` or ``key = value`` where structured text puts a key: at the start of a
#: line (YAML, headers, .env, INI), or after ``{ , ( [`` (a Python repr, a call's
#: keyword arguments, YAML flow style) or ``? & ;`` (a query string). Keys may be quoted;
#: values are a quoted string or run to the end of the line or the next ``, ; & ) } ]``.
_ASSIGNMENT = re.compile(
    r"""(?:^[ \t]*(?:-[ \t]+)?|(?<=[{,(\[?&;])[ \t]*)"""
    r"""(?P<quote>['"]?)(?P<key>[A-Za-z_][A-Za-z0-9_.\-]{0,127})(?P=quote)"""
    r"""(?P<sep>[ \t]*[:=][ \t]*)"""
    rf"""(?P<value>{_QUOTED_VALUE}|[^\n,;&)}}\]]*)""",
    re.MULTILINE,
)


def scrub_structured_text(text: str) -> str:
    """Text that holds structured data in a form other than JSON (a Python repr, YAML,
    headers, a query string), with secrets taken out by key, as JSON's are.

    The value of every ``key: value`` / ``key=value`` / ``'key': 'value'`` whose key
    names a secret (the same key policy) is redacted and remembered; then known secrets
    are removed. Keys are matched only where that kind of text puts them (see
    ``_ASSIGNMENT``), so prose that mentions ``api_key=...`` mid-sentence is left alone,
    and so is a quoted value of a plain key, such as a prompt. An unquoted value of a
    plain key is read on, since it may hold more pairs (a URL's query string). Only for
    values that are meant to be data (the bridge's JSON-valued attributes that are not
    JSON), never for free text: red-team payloads are not scanned for pairs.
    """
    policy = _policy
    pieces: list[str] = []
    done = position = 0
    while (match := _ASSIGNMENT.search(text, position)) is not None:
        value, start = match["value"], match.start("value")
        quoted = len(value) > 1 and value[0] in _QUOTES and value[-1] == value[0]
        if not value.strip() or not policy.is_secret(match["key"]):
            position = match.end() if quoted else start
            continue
        inner = value[1:-1] if quoted else value.rstrip()
        begin = start + 1 if quoted else start
        pieces += (text[done:begin], REDACTED)
        done = position = begin + len(inner)
        _memory.remember(inner)
    if pieces:
        pieces.append(text[done:])
        text = "".join(pieces)
    return _memory.scrub(text)


# -- log records -----------------------------------------------------------------------

_log_formatter = logging.Formatter()


class SecretScrubbingFilter(logging.Filter):
    """Takes known secrets out of a log record's message, traceback and stack.

    Added to this package's loggers (:func:`scrub_logs`). A record is changed only when
    it holds a known secret: its message is then stored already formatted, and its
    traceback as scrubbed text (``exc_info`` cleared, so no formatter or handler can
    format the raw exception again).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _memory.has_any():
            # A message whose arguments cannot be formatted is left as it is.
            with contextlib.suppress(Exception):
                _scrub_record(record)
        return True


def _scrub_record(record: logging.LogRecord) -> None:
    message = record.getMessage()
    clean = _memory.scrub(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        text = _log_formatter.formatException(record.exc_info)
        clean = _memory.scrub(text)
        if clean != text:
            record.exc_text, record.exc_info = clean, None
    elif record.exc_text:
        record.exc_text = _memory.scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = _memory.scrub(record.stack_info)


_log_filter: Final = SecretScrubbingFilter()


def scrub_logs(*names: str) -> None:
    """Scrub known secrets from what the named loggers log (idempotent).

    A logger's filters apply to records logged on that logger itself, not to those of
    its children, so every logger the package logs on is named.
    """
    for name in names:
        logger = logging.getLogger(name)
        if _log_filter not in logger.filters:
            logger.addFilter(_log_filter)
