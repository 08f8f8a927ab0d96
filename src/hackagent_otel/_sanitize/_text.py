"""Free text: known secrets taken out, then cut; structured text scrubbed by key.

Free text (exception messages and tracebacks, error messages, notes, step names) is
never scanned for patterns, only for the secrets one sanitizer knows
(:func:`scrubbed_and_cut`). Structured data written as text that is not JSON (a Python
repr, YAML, headers, a query string) also has the values of its secret-named keys
redacted, by the same key policy (:func:`scrub_structured_text`); only for values that
are meant to be data, never for free text: red-team payloads are not scanned for pairs.

Touches the secret memory it is handed (structured text's secret values are learned);
reads the text, which it never changes in place.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from hackagent_otel._sanitize._keys import REDACTED, KeyPolicy
from hackagent_otel._sanitize._memory import MAX_SECRET_LENGTH, QUOTES, SecretMemory


def scrubbed_and_cut(value: str, limit: int, scrub: Callable[[str], str]) -> str:
    """``scrub(value)`` cut to ``limit`` characters, with a marker of how many more.

    Known secrets are removed before the text is cut, so a secret at the cut is never
    left half-visible. Only what can be kept is scrubbed: the first ``limit`` characters
    and one longest secret past them (so none straddles the cut), unless secrets shrank
    that below the limit; a 10 MB message costs what a short one does.
    """
    head = value[: limit + MAX_SECRET_LENGTH]
    clean = scrub(head)
    if len(clean) < limit < len(value) and len(head) < len(value):
        head, clean = value, scrub(value)
    left_out = len(clean) - limit + len(value) - len(head)
    return clean if left_out <= 0 else f"{clean[:limit]}...[{left_out} more chars]"


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


def scrub_structured_text(text: str, policy: KeyPolicy, memory: SecretMemory) -> str:
    """Text that holds structured data in a form other than JSON (a Python repr, YAML,
    headers, a query string), with secrets taken out by key, as JSON's are.

    The value of every ``key: value`` / ``key=value`` / ``'key': 'value'`` whose key
    names a secret (``policy``) is redacted and remembered in ``memory``; then known
    secrets are removed. Keys are matched only where that kind of text puts them (see
    ``_ASSIGNMENT``), so prose that mentions ``api_key=...`` mid-sentence is left alone,
    and so is a quoted value of a plain key, such as a prompt. An unquoted value of a
    plain key is read on, since it may hold more pairs (a URL's query string).
    """
    pieces: list[str] = []
    done = position = 0
    while (match := _ASSIGNMENT.search(text, position)) is not None:
        value, start = match["value"], match.start("value")
        quoted = len(value) > 1 and value[0] in QUOTES and value[-1] == value[0]
        if not value.strip() or not policy.is_secret(match["key"]):
            position = match.end() if quoted else start
            continue
        inner = value[1:-1] if quoted else value.rstrip()
        begin = start + 1 if quoted else start
        pieces += (text[done:begin], REDACTED)
        done = position = begin + len(inner)
        memory.remember(inner)
    if pieces:
        pieces.append(text[done:])
        text = "".join(pieces)
    return memory.scrub(text)
