"""DrainLock: at most one process drains an outbox at a time.

An ``fcntl.flock`` on a ``.lock`` file beside the database, taken without blocking: the
holder sends pending rows, every other process only appends. The kernel drops the lock
when its holder dies, even under SIGKILL, so a crashed drainer never blocks the next one.

Fork-safe: a flock belongs to the open file description, which a forked child shares.
The child therefore forgets the inherited descriptor (closing it does not release the
parent's lock, and it must never unlock it) and opens its own when it wants the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

__all__ = ["DrainLock"]


class DrainLock:
    """A non-blocking, process-exclusive lock on ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._pid = os.getpid()
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this process holds the lock through this object."""
        self._forget_if_forked()
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if free (or already ours); never blocks. OSError on disk trouble."""
        self._forget_if_forked()
        with self._mutex:
            if self._fd is not None:
                return True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def release(self) -> None:
        """Give the lock up; a no-op when not held."""
        self._forget_if_forked()
        with self._mutex:
            fd, self._fd = self._fd, None
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _forget_if_forked(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # the parent's lock survives: it still has the description
