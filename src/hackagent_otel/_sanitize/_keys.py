"""Which mapping keys name a secret, and the marker their values become.

The key policy of the sanitizer: a key is cut into words and read by the rules below;
:class:`KeyPolicy` applies them with the extra words one configuration adds, and
remembers its answers. Also here, because the walk and the fast paths both ask them:
which lists are (name, value) pairs whose name is secret (:func:`secret_pairs`), and
which keys hold a live client object (:data:`CLIENT_KEYS`).

Touches nothing but its own caches: no secret memory, no budget, no I/O. Imports
nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence, Set
from itertools import islice
from typing import Any, Final

#: What a secret value becomes, in values and in free text alike.
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
PLAIN_KEY_MAX_LENGTH: Final = 64
_LEARNED_KEYS_MAX: Final = 4096
#: Answers cached per policy, for keys up to this long.
_CACHE_MAX: Final = 4096
_CACHED_KEY_MAX_LENGTH: Final = 256
#: Names of (name, value) pairs longer than this are never read as secret.
_PAIR_NAME_MAX_LENGTH: Final = 256

_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
#: Between a lower-case letter or digit and a capital (``apiKey``), and before the last
#: capital of an acronym followed by a lower-case letter (``AIAPIKey`` -> ``AIAPI_Key``).
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_DIGITS = "0123456789"


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


class KeyPolicy:
    """Decides, with a cache, whether a mapping key names a secret.

    One per configuration: the built-in :data:`SECRET_WORDS` and ``extra_words``
    (``configure(redact_keys=...)``, the bridge's ``--redact-key``).
    """

    __slots__ = ("_cache", "_endings", "plain_keys", "secret_keys", "words")

    def __init__(self, extra_words: Iterable[str] = ()) -> None:
        extra = {w.strip().lower() for w in extra_words if w.strip()}
        self.words = frozenset(SECRET_WORDS | extra)
        self._endings = tuple(sorted(self.words - _WHOLE_WORD_ONLY))
        self._cache: dict[str, bool] = {}
        #: Keys seen to be plain (see the fast path) or secret, for set tests in C.
        self.plain_keys: set[str] = set()
        self.secret_keys: set[str] = set()

    def secret_keys_among(self, keys: Set[Any]) -> Set[str] | None:
        """Which of ``keys`` (not yet known plain) are secret; ``None`` if one is not a
        plain key at all (not str, too long, a client key). Remembers what it learns."""
        if keys <= self.secret_keys:
            return keys
        secrets: set[str] = set()
        for key in keys:
            if type(key) is not str or len(key) > PLAIN_KEY_MAX_LENGTH or key in CLIENT_KEYS:
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
        if len(self._cache) < _CACHE_MAX and len(key) <= _CACHED_KEY_MAX_LENGTH:
            self._cache[key] = secret
        return secret


def secret_pairs(value: Sequence[Any], policy: KeyPolicy, limit: int) -> set[int]:
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
        if len(name) <= _PAIR_NAME_MAX_LENGTH and policy.is_secret(name):
            found.add(index)
    return found


def is_plain(value: Any) -> bool:
    """A scalar under a client key is shown as it is; anything else by its type name."""
    return value is None or isinstance(value, (str, int, float, bool))
