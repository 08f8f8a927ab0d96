"""A child forked while tracking locks are held gets them fresh, and does not hang."""

from __future__ import annotations

import gc
import os
import signal
import threading
import uuid
from collections.abc import Callable

from hackagent_otel import TrackingContext
from hackagent_otel._forksafe import register, renew_after_fork


def _in_forked_child(check: Callable[[], object]) -> int:
    """Run ``check()`` in a forked child (killed by an alarm if it hangs); its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            signal.alarm(10)  # a hang kills the child instead of the test run
            code = 0 if check() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_registered_locks_are_new_in_a_forked_child() -> None:
    class Owner:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            renew_after_fork(self, "lock")

    owner = Owner()
    with owner.lock:  # as if another thread held it at the fork
        code = _in_forked_child(lambda: owner.lock.acquire(timeout=1))
    assert code == 0


def test_a_child_forked_while_a_sequence_counter_is_locked_can_still_count() -> None:
    context = TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
    first = context.increment_sequence()
    with context._counter._lock:  # another thread mid-increment at the fork
        code = _in_forked_child(lambda: context.increment_sequence() == first + 1)
    assert code == 0


def test_a_registered_reinit_runs_in_a_forked_child() -> None:
    class Owner:
        def __init__(self) -> None:
            self.pid = os.getpid()
            register(self.reinit)

        def reinit(self) -> None:
            self.pid = os.getpid()

    owner = Owner()
    assert _in_forked_child(lambda: owner.pid == os.getpid()) == 0
    assert owner.pid == os.getpid()  # the parent's state is left alone


def test_a_registered_owner_dropped_without_closing_is_collected() -> None:
    import weakref

    class Owner:
        def __init__(self) -> None:
            register(self.reinit)

        def reinit(self) -> None:
            pass

    ref = weakref.ref(Owner())
    gc.collect()
    assert ref() is None


MODULE_STATE = {"pid": os.getpid()}


def _renew_module_state() -> None:
    MODULE_STATE["pid"] = os.getpid()


def test_a_plain_function_is_held_as_it_is_and_runs_in_a_forked_child() -> None:
    register(_renew_module_state)
    gc.collect()
    assert _in_forked_child(lambda: MODULE_STATE["pid"] == os.getpid()) == 0


def test_a_hook_that_raises_does_not_keep_the_others_from_running() -> None:
    class Owner:
        def __init__(self) -> None:
            self.pid = os.getpid()
            register(self.fail)
            register(self.reinit)

        def fail(self) -> None:
            raise RuntimeError("a broken hook")

        def reinit(self) -> None:
            self.pid = os.getpid()

    owner = Owner()
    assert _in_forked_child(lambda: owner.pid == os.getpid()) == 0
