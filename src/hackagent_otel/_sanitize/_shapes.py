"""How the sanitizer reads objects of unknown type, never raising.

``SecretStr``-like objects (their hidden text, to remember), models and dataclasses
(as mappings), and ``str()`` that may fail. Used by the walk, the secret memory and
the client reading; reads the objects it is given and touches nothing else. Imports
nothing of ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def is_secret_like(value: object) -> bool:
    """Shaped like pydantic's ``SecretStr``/``SecretBytes``: a ``get_secret_value``."""
    return callable(getattr(type(value), "get_secret_value", None))


def revealed(value: Any) -> str | None:
    """The text inside a ``SecretStr``-like object, to remember; ``None`` if unreadable."""
    try:
        secret = value.get_secret_value()
    except Exception:
        return None
    if isinstance(secret, str):
        return secret
    if isinstance(secret, (bytes, bytearray)):
        return utf8_text(secret)
    return None


def utf8_text(data: bytes | bytearray | memoryview) -> str | None:
    """``data`` decoded as UTF-8; ``None`` when it is not UTF-8."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


def as_plain_structure(value: Any) -> Mapping[str, Any] | None:
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


def safe_str(value: Any) -> str:
    """``str(value)``, or ``"<TypeName>"`` when that raises."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"
