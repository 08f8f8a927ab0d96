"""Locks a forked child gets fresh.

A process forked while another of its threads held a lock hands the child that lock
held forever, by a thread that does not exist there: the child's first tracked step
would hang. Objects register the names of their lock attributes here, and the child
replaces them all right after the fork.
"""

from __future__ import annotations

import os
import threading
import weakref

_registered: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()


def renew_after_fork(owner: object, *lock_names: str) -> None:
    """In a forked child, ``owner``'s attributes ``lock_names`` become new locks."""
    _registered[owner] = lock_names


def _renew_all() -> None:
    for owner, names in list(_registered.items()):
        for name in names:
            setattr(owner, name, threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_all)
