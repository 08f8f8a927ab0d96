"""What a forked child does first: new locks, fresh state.

A process forked while another of its threads held a lock hands the child that lock
held forever, by a thread that does not exist there: the child's first tracked step
would hang. Objects register the names of their lock attributes here
(:func:`renew_after_fork`), or a method that rebuilds their state (:func:`register`),
and the child runs them all right after the fork.

Registrations never keep their owner alive: an object dropped without being closed is
collected as usual, and its hook goes with it (the SDK's ``BatchProcessor`` holds its
fork hook through a ``WeakMethod`` for the same reason). Imports nothing of ours.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

_registered: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()
_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []
_hooks_lock = threading.Lock()


def register(reinit: Callable[[], None]) -> None:
    """In a forked child, call ``reinit`` (a bound method, held weakly) first thing."""
    with _hooks_lock:
        _hooks[:] = [hook for hook in _hooks if hook() is not None]
        _hooks.append(weakref.WeakMethod(reinit))


def renew_after_fork(owner: object, *lock_names: str) -> None:
    """In a forked child, ``owner``'s attributes ``lock_names`` become new locks."""
    _registered[owner] = lock_names


def _renew_all() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()
    for owner, names in list(_registered.items()):
        for name in names:
            setattr(owner, name, threading.Lock())
    for hook in list(_hooks):
        method = hook()
        if method is not None:
            method()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_all)
