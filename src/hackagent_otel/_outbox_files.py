"""Outbox files: which file holds the records for which API, and finding them all.

Records wait in one file per target, so a record spooled for one API is never pushed to
another:

* records for a HackAgent API (configured by env vars or settings, or a run's own client)
  wait in ``<stem>-<digest><suffix>`` beside the default outbox, named after the API's
  base URL, and the file records that base URL as its target (:attr:`Outbox.target`);
* the default outbox itself holds only records made with no API (no target), which only
  an explicitly named API can take (``hackagent-otel push --base-url URL``).

The name keeps targets apart; where records go is read from the file's recorded target,
never from its name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["api_target", "find_outboxes", "outbox_path_for_target"]

#: Hex digits of the base URL's digest in an API's outbox name.
_DIGEST_LENGTH = 12


def api_target(base_url: str) -> str:
    """The form an API's base URL is recorded and compared in.

    No trailing slash (``http://host/`` and ``http://host`` are one API) and no user
    info: ``https://user:secret@host`` is recorded as ``https://host``, so a credential
    written into a base URL never lands in an outbox file or a command's output.
    """
    parts = urlsplit(base_url.strip())
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host, path=parts.path.rstrip("/")))


def outbox_path_for_target(default: Path, target: str) -> Path:
    """The outbox for the API at ``target``: ``<stem>-<digest><suffix>`` beside ``default``.

    The digest is taken of the base URL with one trailing slash, the name per-client
    outboxes had before targets were recorded, so their records are found again.
    """
    digest = hashlib.sha256((api_target(target) + "/").encode()).hexdigest()[:_DIGEST_LENGTH]
    return default.with_name(f"{default.stem}-{digest}{default.suffix}")


def find_outboxes(default: Path, explicit: Path | None = None) -> list[Path]:
    """The outbox files a command works on: ``explicit`` alone when given, else the
    default file and every API's outbox beside it (see :func:`outbox_path_for_target`).

    Only existing files, the default first. SQLite's ``-wal`` and ``-shm`` files and the
    drain ``.lock`` files are never taken for outboxes, also when the default has no
    suffix (``HACKAGENT_OUTBOX_PATH=x``: ``x`` and ``x-<digest>``, not ``x-wal``).
    """
    if explicit is not None:
        return [explicit] if explicit.is_file() else []
    sibling = re.compile(
        rf"{re.escape(default.stem)}-[0-9a-f]{{{_DIGEST_LENGTH}}}{re.escape(default.suffix)}"
    )
    folder = default.parent
    siblings = (
        sorted(p for p in folder.iterdir() if sibling.fullmatch(p.name) and p.is_file())
        if folder.is_dir()
        else []
    )
    return ([default] if default.is_file() else []) + siblings
