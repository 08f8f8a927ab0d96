"""``Sanitizer``: one configuration's key policy and known secrets, and what uses them.

Built from options (extra secret words, limits) by whoever sets up a configuration:
``configure()`` builds the one this process's tracker uses and hands it to the tracer
source; the bridge builds its own from its settings. Everything stateful in sanitizing
goes through it: its :class:`~._keys.KeyPolicy` decides which keys are secret, its
:class:`~._memory.SecretMemory` remembers the secrets it saw and takes them out of free
text. Two sanitizers share nothing, so two configurations in one process (a tracker
and a bridge, or two tests) never see each other's words or secrets.

Touches only its own policy and memory. The work is done by the parts it composes:
the walk, the fast paths, the text functions and the client reading.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from hackagent_otel._sanitize._budget import DEFAULT_LIMITS, Limits
from hackagent_otel._sanitize._clients import client_secrets
from hackagent_otel._sanitize._fast import budget_if_unchanged, encode, flat_text
from hackagent_otel._sanitize._flat_json import unchanged
from hackagent_otel._sanitize._keys import REDACTED, KeyPolicy
from hackagent_otel._sanitize._memory import SecretMemory
from hackagent_otel._sanitize._shapes import is_secret_like, revealed, safe_str
from hackagent_otel._sanitize._text import scrub_structured_text, scrubbed_and_cut
from hackagent_otel._sanitize._walk import Walker

_REDACTED_JSON: Final = json.dumps(REDACTED)


class Sanitizer:
    """Bounded, secret-free JSON and scrubbed text, under one configuration's policy.

    Args:
        extra_secret_words: words that mark a key secret wherever they stand in it, on
            top of the built-in ones (``configure(redact_keys=...)``).
        limits: the bounds a value is sanitized to when a call names none.
    """

    __slots__ = ("keys", "limits", "memory")

    def __init__(
        self, *, extra_secret_words: Iterable[str] = (), limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.keys = KeyPolicy(extra_secret_words)
        self.memory = SecretMemory()
        self.limits = limits

    # -- values ----------------------------------------------------------------------
    def sanitize(self, value: Any, limits: Limits | None = None) -> Any:
        """Return a JSON-safe, size-capped, secret-free copy of ``value``. Never raises."""
        walker = Walker(self.limits if limits is None else limits, self.keys, self.memory)
        try:
            return walker.walk(value, 0)
        except RecursionError:
            return "<too deeply nested>"
        except Exception as exc:  # a hostile __eq__, __iter__ or __str__
            return f"<unserializable {type(value).__name__}: {type(exc).__name__}>"

    def dumps(self, value: Any, limits: Limits | None = None) -> str:
        """Sanitize ``value`` and encode it as compact JSON text. Never raises."""
        if limits is None:
            limits = self.limits
        try:
            text = flat_text(value, limits, self.keys, self.memory)
        except Exception:  # e.g. the caller's dict changed size under us: take the full walk
            text = None
        return text if text is not None else encode(self.sanitize(value, limits))

    def dumps_keyed(self, key: str, value: Any, limits: Limits | None = None) -> str:
        """Like :meth:`dumps`, but redacted whole when ``key`` names a secret."""
        if self.keys.is_secret(key):
            self.memory.remember_within(value)
            return _REDACTED_JSON
        return self.dumps(value, limits)

    def resanitize_parsed(self, value: Any, text_length: int) -> Any:
        """:meth:`resanitize` of a value ``json.loads`` made of ``text_length``
        characters: a small flat one it would keep is kept without even the check,
        told from its shape and its text's length (:mod:`._flat_json`)."""
        if self.limits == DEFAULT_LIMITS and unchanged(value, text_length, self.keys):
            return value
        return self.resanitize(value)

    def resanitize(self, value: Any, limits: Limits | None = None) -> Any:
        """``sanitize(value, limits)``, without walking what it would return unchanged.

        Values from elsewhere are mostly what a tracker already sanitized: walking them
        again only makes an equal copy. :func:`~._fast.budget_if_unchanged` checks that
        in a tight loop (several times faster than the walk); a secret-named key at the
        top (a config with its ``api_key``) is left to the sanitizer alone, the rest is
        kept. Whatever the check cannot vouch for is walked in full.
        """
        if limits is None:
            limits = self.limits
        secrets: list[str] = []
        if budget_if_unchanged(value, 0, limits.max_total, limits, self.keys, secrets) is None:
            return self.sanitize(value, limits)
        # A tracker already redacted these: the walk would give the same marker again.
        secrets = [k for k in secrets if not (type(value[k]) is str and value[k] == REDACTED)]
        if not secrets:
            return value
        out = dict(value)
        for key in secrets:  # redacted, and the secret remembered to scrub it from free text
            out[key] = self.sanitize({key: out[key]}, limits)[key]
        return out

    # -- text ------------------------------------------------------------------------
    def sanitize_text(self, text: Any, limit: int | None = None) -> str:
        """A bounded string for free text (error messages) with known secrets taken out.

        Known secrets are removed before the text is cut, so a secret at the cut is
        never left half-visible. ``limit``: the limits' ``max_string`` when not given.
        """
        if limit is None:
            limit = self.limits.max_string
        value = text if isinstance(text, str) else safe_str(text)
        if len(value) <= limit:  # the common case, kept cheap: progress messages, names
            value = self.memory.scrub(value)
            if len(value) <= limit:
                return value
        return scrubbed_and_cut(value, limit, self.memory.scrub)

    def scrub_structured_text(self, text: str) -> str:
        """Structured data written as text that is not JSON, with the values of its
        secret-named keys redacted, then known secrets taken out
        (:func:`~._text.scrub_structured_text`)."""
        return scrub_structured_text(text, self.keys, self.memory)

    def sanitize_structured_text(self, text: str, limit: int | None = None) -> str:
        """:meth:`scrub_structured_text`, cut as :meth:`sanitize` cuts a string."""
        if limit is None:
            limit = self.limits.max_string
        return scrubbed_and_cut(text, limit, self.scrub_structured_text)

    def scrub_known_secrets(self, text: str) -> str:
        """Replace every known secret (pinned or learned) that occurs in ``text``."""
        return self.memory.scrub(text)

    # -- the policy and the known secrets ----------------------------------------------
    def is_secret_key(self, key: str) -> bool:
        """Whether a mapping key names a secret under this sanitizer's policy."""
        return self.keys.is_secret(key)

    def pin_secret(self, value: object, *, configured: bool = False) -> None:
        """Remember ``value`` for good as a secret to scrub from free text.

        ``configured``: a configured API key (``configure()``, the bridge's settings),
        kept however many there are; otherwise a client's credential, kept up to
        :data:`~._memory.PINNED_MAX`. ``None``, empty and non-string values are ignored.
        """
        text = revealed(value) if is_secret_like(value) else value
        if isinstance(text, str) and text:
            self.memory.pin(text, configured=configured)

    def pin_client_secrets(self, client: object) -> None:
        """Pin the credentials a client object carries (:mod:`._clients`), never
        raising: a client with hostile properties keeps what was pinned so far."""
        try:
            for value in client_secrets(client, self.keys):
                self.pin_secret(value)
        except Exception:
            self.memory.count("not_remembered")

    def known_secrets_stats(self) -> dict[str, int]:
        """How many secrets are pinned and learned, and what the bounds turned away."""
        return self.memory.stats()

    def forget_known_secrets(self) -> None:
        """Drop every known secret, pinned ones included, and the counts (tests; a
        long-lived process rotating keys, which then pins the new ones by configuring)."""
        self.memory.clear()

    def take_over_known_secrets(self, other: Sanitizer) -> None:
        """Know every secret ``other`` knows (pinned stay pinned, learned stay learned):
        when one configuration replaces another, a secret seen stays a secret."""
        self.memory.take_over(other.memory)
