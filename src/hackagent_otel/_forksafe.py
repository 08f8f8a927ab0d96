"""What a forked child does first: new locks, fresh state. The one place for it.

A process forked while another of its threads held a lock hands the child that lock
held forever, by a thread that does not exist there: the child's first tracked step
would hang. So whatever holds state a child must not inherit registers it here, and
this module's one ``os.register_at_fork`` runs what was registered:

* ``register(self._reinit)``: an object's own state, rebuilt by a bound method. The
  method is held through a ``WeakMethod`` (as the SDK's ``BatchProcessor`` holds its
  fork hook), so registering never keeps an object alive: one dropped without being
  closed is collected as usual, and its hook goes with it.
* ``register(_renew_module_lock)``: a module's own state (a module-level lock, a
  registry), rebuilt by a plain function. It is held as it is: a module lives as long
  as the process.
* ``renew_after_fork(owner, *lock_names)``: the usual case of the first form, without a
  method: ``owner``'s attributes ``lock_names`` become new locks (``owner`` held weakly).

``register`` also takes ``before`` and ``after_in_parent``, as ``os.register_at_fork``
does (the outbox holds its locks across a fork so that no SQLite transaction is open in
it). In the child, every registered lock is renewed first, so no hook meets one held;
then the hooks run in the order they were registered (``before`` hooks in reverse). A
hook that raises is logged and the others still run.

Objects that hold what only their own process may use (a thread, a connection pool, a
descriptor, a SQLite connection) also compare ``os.getpid()`` where they use it, as the
SDK's ``BatchProcessor`` does: a fork that bypasses Python's hooks (a C extension
calling ``fork()``) runs none of the above. Imports nothing of ours.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["register", "renew_after_fork"]

Hook = Callable[[], None]

_log = logging.getLogger("hackagent_otel")

#: A hook as registered: a callable that gives the hook, or ``None`` once its object is
#: gone (a ``WeakMethod``, or :class:`_Held` for a plain function).
_Ref = Callable[[], Hook | None]


class _Held:
    """A plain function, held as it is (the counterpart of a ``WeakMethod``)."""

    __slots__ = ("hook",)

    def __init__(self, hook: Hook) -> None:
        self.hook = hook

    def __call__(self) -> Hook:
        return self.hook


# Registrations are keyed by a number taken in order; a dict keeps that order. A weak
# reference's callback drops its entry when the object is collected. Neither needs a
# lock (``next`` on a count and one dict operation are atomic), so nothing here can be
# found held in a child, and a collection in the middle of ``register`` cannot deadlock.
_numbers = itertools.count()
_locks: dict[int, tuple[weakref.ref[Any], tuple[str, ...]]] = {}
_hooks: dict[int, tuple[_Ref, _Ref | None, _Ref | None]] = {}


def register(
    after_in_child: Hook,
    *,
    before: Hook | None = None,
    after_in_parent: Hook | None = None,
) -> None:
    """Run ``after_in_child`` first thing in a forked child (and ``before`` before a
    fork, ``after_in_parent`` after it in the parent).

    A bound method is held weakly (its object stays collectable); a plain function is
    held as it is (module state).
    """
    number = next(_numbers)
    forget = functools.partial(_forget, _hooks, number)
    _hooks[number] = (
        _hold(after_in_child, forget),
        None if before is None else _hold(before, forget),
        None if after_in_parent is None else _hold(after_in_parent, forget),
    )


def renew_after_fork(owner: object, *lock_names: str) -> None:
    """In a forked child, ``owner``'s attributes ``lock_names`` become new locks."""
    number = next(_numbers)
    _locks[number] = (weakref.ref(owner, functools.partial(_forget, _locks, number)), lock_names)


def _hold(hook: Hook, forget: Callable[[Any], None]) -> _Ref:
    if isinstance(hook, types.MethodType):
        return weakref.WeakMethod(hook, forget)
    return _Held(hook)


def _forget(entries: dict[int, Any], number: int, _ref: object) -> None:
    entries.pop(number, None)


def _run(hook: _Ref | None) -> None:
    function = None if hook is None else hook()
    if function is None:
        return
    try:
        function()
    except Exception:  # the other hooks still run, as os.register_at_fork's do
        _log.exception("hackagent_otel: a fork hook failed: %r", function)


def _before() -> None:
    for _, before, _ in reversed(list(_hooks.values())):
        _run(before)


def _after_in_parent() -> None:
    for _, _, after_in_parent in list(_hooks.values()):
        _run(after_in_parent)


def _after_in_child() -> None:
    for ref, names in list(_locks.values()):
        owner = ref()
        if owner is not None:
            for name in names:
                setattr(owner, name, threading.Lock())
    for after_in_child, _, _ in list(_hooks.values()):
        _run(after_in_child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )
