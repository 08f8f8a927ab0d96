"""Turn anything a pipeline hands the tracker into bounded, secret-free JSON.

Configs, input samples, metadata and progress metrics come from user code and can hold
anything: NaN, bytes, sets, cycles, model objects, megabyte strings, API keys. Before any
of it reaches a span or a record it goes through a :class:`Sanitizer`'s ``sanitize``
(or ``dumps``), which

* redacts values whose *key* names a secret, at any depth (the rule is written out in
  :mod:`._keys`), the value of a (name, value) pair whose name does (header lists), and
  ``SecretStr``-like objects under any key; values are never scrubbed by pattern:
  red-team payloads are full of words like "password" and are data;
* replaces what JSON cannot hold with a safe, readable stand-in (``"NaN"``,
  ``"<cycle>"``, ``"<Widget>"``, integers beyond 64 bits as decimal strings) instead of
  failing;
* caps size by structure: long strings (mapping keys too), long containers and deep
  nesting are cut at element boundaries with a marker saying how much was left out, so
  the JSON text is always whole;
* never raises.

Known secrets are taken out of free text (exception messages and tracebacks, error
messages, notes, step names, log records): the configured API keys and clients'
credentials, pinned for good, and the values redacted so far, learned within a bound.

A sanitizer is built from options and owned by whoever sets up a configuration: the
set-up builds the one this process's tracker uses and hands it to the tracer source,
the bridge builds its own. Nothing here is module state: two sanitizers share no
words and no secrets. The parts, each with one job:

* :mod:`._keys`: which keys name a secret (``KeyPolicy``), the redaction marker;
* :mod:`._memory`: the known secrets, pinned and learned (``SecretMemory``);
* :mod:`._budget`: the limits of one value and what each part of it costs;
* :mod:`._walk`: the object-to-JSON walk;
* :mod:`._fast`: the fast paths that mirror the walk, at the same costs;
* :mod:`._text`: free text cut after scrubbing, structured text scrubbed by key;
* :mod:`._shapes`, :mod:`._clients`: how unknown objects and clients are read;
* :mod:`._logs`: the logging filter;
* :mod:`._sanitizer`: :class:`Sanitizer`, which composes them.

This package does no I/O and knows no OpenTelemetry; it imports only
:mod:`hackagent_otel._json` and :mod:`hackagent_otel._forksafe` of ours. This module
re-exports what callers use and touches nothing; callers import nothing else of it.
"""

from hackagent_otel._sanitize._budget import DEFAULT_LIMITS, Limits
from hackagent_otel._sanitize._keys import REDACTED, key_words
from hackagent_otel._sanitize._logs import SecretScrubbingFilter
from hackagent_otel._sanitize._memory import (
    LEARNED_CHARS_MAX,
    LEARNED_MAX,
    MIN_SCRUB_LENGTH,
    PINNED_MAX,
    REMEMBER_PER_VALUE,
)
from hackagent_otel._sanitize._sanitizer import Sanitizer

__all__ = [
    "DEFAULT_LIMITS",
    "LEARNED_CHARS_MAX",
    "LEARNED_MAX",
    "MIN_SCRUB_LENGTH",
    "PINNED_MAX",
    "REDACTED",
    "REMEMBER_PER_VALUE",
    "Limits",
    "Sanitizer",
    "SecretScrubbingFilter",
    "key_words",
]
