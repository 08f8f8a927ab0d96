"""The credentials a client object carries, read duck-typed.

hackagent's ``AuthenticatedClient`` (``token``, ``_headers``), an ``httpx.Client``
(``headers``, ``cookies``, the header of a basic ``auth``) and this package's
``HackAgentClient`` (``headers``) hold what must never reach a span or a record; the
sanitizer pins what :func:`client_secrets` finds. Reads the client's attributes (a
property may raise: the caller stops there) and touches nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Final

from hackagent_otel._sanitize._keys import KeyPolicy

#: Headers and cookies read per client.
_ITEMS_READ: Final = 64


def client_secrets(client: object, policy: KeyPolicy) -> Iterator[object]:
    """Every value under a secret-named header (``policy``), every cookie, the
    credential of a basic ``auth``, a ``token`` or ``api_key`` attribute; values may
    be ``None`` or not strings, which the caller ignores. May raise mid-way."""
    for name in ("token", "api_key", "_token"):
        yield getattr(client, name, None)
    for name in ("headers", "_headers"):
        headers = getattr(client, name, None)
        if isinstance(headers, Mapping):
            for key, value in islice(headers.items(), _ITEMS_READ):
                if isinstance(key, str) and policy.is_secret(key):
                    yield value
    cookies = getattr(client, "cookies", None)
    if isinstance(cookies, Mapping):
        yield from islice(cookies.values(), _ITEMS_READ)
    auth = getattr(client, "auth", None)
    for name in ("_auth_header", "_password"):
        secret = getattr(auth, name, None)
        yield secret.decode("latin-1") if isinstance(secret, bytes) else secret
    header = getattr(auth, "_auth_header", None)
    if isinstance(header, str) and header.lower().startswith("basic "):
        # httpx keeps only the header: the password is in its base64 "user:password".
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("latin-1")
        yield decoded.partition(":")[2]
